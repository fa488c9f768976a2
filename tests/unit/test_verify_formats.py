"""The verification engine on real archives built here (gzip, bzip2, xz, zstd, tar, zip), good
ones and damaged ones: truncated, a bit flipped in the middle, wrong magic, a zip entry with a
bad CRC, a tar with a damaged header, bombs; sidecars; unreadable files; the stop event."""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import io
import lzma
import os
import random
import shutil
import subprocess
import tarfile
import threading
import time
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from service.verify.budget import Budget
from service.verify.checksums import Expected
from service.verify.formats import Limits, Outcome, Verifier, verify_file, verify_stream

UNLIMITED = Budget(None)
LIMITS = Limits()


def payload(size: int = 2 * 1024 * 1024, seed: int = 1) -> bytes:
    """Text (base64 of random bytes): it compresses to ~3/4, in many compressed blocks."""
    return base64.encodebytes(random.Random(seed).randbytes(size * 3 // 4 + 3))[:size]


def tar_bytes(members: dict[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gz": lambda data: gzip.compress(data, compresslevel=6, mtime=0),
    "bz2": lambda data: bz2.compress(data, 9),
    "xz": lambda data: lzma.compress(data, format=lzma.FORMAT_XZ),
    "zst": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
}
FORMAT = {"gz": "gzip", "bz2": "bzip2", "xz": "xz", "zst": "zstd"}


def check(data: bytes, name: str, **kwargs: object) -> Outcome:
    options: dict[str, object] = {"archive": True, "expected": None, "limits": LIMITS,
                                  "budget": UNLIMITED} | kwargs  # fmt: skip
    return verify_stream(io.BytesIO(data), name, **options)  # type: ignore[arg-type]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def flip(data: bytes, at: int) -> bytes:
    damaged = bytearray(data)
    damaged[at] ^= 0x10
    return bytes(damaged)


# Good archives ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_a_good_stream_is_ok_and_read_through(ext):
    data = COMPRESS[ext](payload())
    outcome = check(data, f"dump.sql.{ext}")
    assert outcome.result == "ok", outcome.detail
    assert outcome.checked == (FORMAT[ext],)
    assert outcome.bytes_read == len(data)
    assert outcome.detail.startswith(
        f"{len(data):,} bytes read: {FORMAT[ext]} read through".replace(",", " ")
    )


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_a_good_tar_inside_each_compression_is_read_member_by_member(ext):
    tar = tar_bytes(
        {"etc/a.conf": payload(100_000), "var/b.db": payload(2_000_000, 2), "empty": b""}
    )
    outcome = check(COMPRESS[ext](tar), f"home.tar.{ext}")
    assert outcome.result == "ok", outcome.detail
    assert outcome.checked == (FORMAT[ext], "tar")
    assert "tar (3 members)" in outcome.detail


def test_tar_is_recognised_by_its_header_whatever_the_name():
    tar = tar_bytes({"a": b"x" * 1000})
    assert check(tar, "backup.bin").checked == ("tar",)
    assert check(gzip.compress(tar), "backup.gz").checked == ("gzip", "tar")


def test_gnu_and_pax_long_names_and_an_empty_tar():
    long = "d/" * 80 + "file-with-a-long-name.txt"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT):
        members = {long if fmt != tarfile.USTAR_FORMAT else "short": payload(70_000)}
        outcome = check(tar_bytes(members, fmt), "x.tar")
        assert outcome.result == "ok", (fmt, outcome.detail)
    assert check(tar_bytes({}), "empty.tar").result == "ok"


def test_multi_member_gzip_multi_stream_bzip2_and_xz_with_padding():
    one, two = payload(500_000), payload(400_000, 2)
    assert check(gzip.compress(one) + gzip.compress(two), "a.gz").result == "ok"
    assert check(gzip.compress(one) + b"\0" * 1000, "a.gz").result == "ok"  # tape padding
    assert check(bz2.compress(one) + bz2.compress(two), "a.bz2").result == "ok"
    xz = lzma.compress(one) + b"\0" * 8 + lzma.compress(two)  # stream padding: 4-byte multiples
    assert check(xz, "a.xz").result == "ok"
    tar = tar_bytes({"a": one, "b": two})
    half = len(tar) // 2
    # pigz/pbzip2 style: the tar split over several members, read as one stream
    assert check(gzip.compress(tar[:half]) + gzip.compress(tar[half:]), "t.tar.gz").result == "ok"


def test_multi_frame_zstd_with_a_skippable_frame_and_without_checksums():
    plain = zstandard.ZstdCompressor(write_checksum=False, write_content_size=False)
    skippable = b"\x50\x2a\x4d\x18" + (5).to_bytes(4, "little") + b"hello"
    data = plain.compress(payload(300_000)) + skippable + COMPRESS["zst"](payload(200_000, 3))
    outcome = check(data, "a.zst")
    assert outcome.result == "ok"
    assert "1 of its 2 zstd frames carry no checksum" in outcome.detail
    # streamed (no content size, blocks written as they come): the zstd CLI's output for a pipe
    stream = io.BytesIO()
    with plain.stream_writer(stream, closefd=False) as writer:
        for _ in range(5):
            writer.write(payload(300_000))
    assert check(stream.getvalue(), "a.zst").result == "ok"


def test_a_good_zip_checks_every_entry_crc(tmp_path):
    path = tmp_path / "site.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("index.html", payload(200_000), zipfile.ZIP_DEFLATED)
        archive.writestr("raw.bin", payload(100_000, 2), zipfile.ZIP_STORED)
        archive.writestr("b.txt", payload(100_000, 3), zipfile.ZIP_BZIP2)
    outcome = verify_file(path, archive=True, checksum=False, limits=LIMITS, budget=UNLIMITED)
    assert outcome.result == "ok", outcome.detail
    assert outcome.checked == ("zip",)
    assert "zip (3 entries)" in outcome.detail


def test_a_file_of_no_known_format_is_read_for_its_digest_only():
    outcome = check(b"-- PostgreSQL database dump\n" * 100, "dump.sql")
    assert outcome.result == "ok"
    assert outcome.checked == ()
    assert "no archive format checked" in outcome.detail


def test_archive_false_reads_no_format():
    outcome = check(b"not gzip at all", "x.gz", archive=False)
    assert (outcome.result, outcome.checked) == ("ok", ())


# Damaged archives -----------------------------------------------------------------------------


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_a_truncated_stream_is_corrupt_and_says_where(ext):
    data = COMPRESS[ext](tar_bytes({"db": payload(2_000_000)}))
    cut = len(data) * 2 // 3
    outcome = check(data[:cut], f"db.tar.{ext}")
    assert outcome.result == "corrupt"
    assert f"{FORMAT[ext]} stream of db.tar.{ext} is truncated at byte" in outcome.detail
    assert f"{cut:,}".replace(",", " ") in outcome.detail
    if ext != "bz2":  # bzip2 gives nothing before its first 900 kB block is whole
        assert outcome.detail.endswith("; inside tar member 'db'")


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_one_bit_flipped_in_the_middle_is_corrupt(ext):
    data = COMPRESS[ext](payload())
    outcome = check(flip(data, len(data) // 2), f"dump.sql.{ext}")
    assert outcome.result == "corrupt", outcome.detail
    assert f"{FORMAT[ext]} data of dump.sql.{ext} is damaged" in outcome.detail


def test_a_gzip_error_names_the_member_and_the_bytes_it_is_in():
    first = gzip.compress(payload(2 * 1024 * 1024))
    second = gzip.compress(payload(2 * 1024 * 1024, 2))
    outcome = check(first + flip(second, len(second) // 2), "big.gz")
    assert outcome.result == "corrupt"
    assert f"member 2 (from byte {len(first):,})".replace(",", " ") in outcome.detail
    # a structural error: a deflate block of the reserved type 3, right after the header
    header = bytearray(second)
    header[10] |= 0b110
    structural = check(first + bytes(header), "big.gz")
    start = f"{len(first):,}".replace(",", " ")
    assert f"member 2 (from byte {start}) cannot be read in bytes {start}–2 097 152" in (
        structural.detail
    )
    assert "invalid block type" in structural.detail


@pytest.mark.parametrize("ext", [*COMPRESS, "zip"])
def test_wrong_magic_is_corrupt(ext, tmp_path):
    path = write(tmp_path, f"dump.{ext}", b"-- PostgreSQL database dump\n" * 50)
    outcome = verify_file(path, archive=True, checksum=False, limits=LIMITS, budget=UNLIMITED)
    assert outcome.result == "corrupt", outcome.detail
    assert "it starts with 2d 2d 20 50 6f 73 74 67" in outcome.detail


def test_a_plain_tar_name_on_something_else_is_corrupt():
    outcome = check(b"x" * 2000, "backup.tar")
    assert outcome.result == "corrupt"
    assert "not a tar archive" in outcome.detail
    inside = check(gzip.compress(b"x" * 2000), "backup.tar.gz")
    assert inside.result == "corrupt"
    assert "the gzip data of backup.tar.gz is not a tar archive" in inside.detail


def test_garbage_after_the_gzip_data_is_corrupt():
    outcome = check(gzip.compress(b"a" * 1000) + b"\0\0garbage", "x.gz")
    assert outcome.result == "corrupt"
    assert "not gzip at byte" in outcome.detail
    assert check(gzip.compress(b"a" * 1000) + b"garbage!", "x.gz").result == "corrupt"


def test_a_zip_entry_with_a_bad_crc_is_named(tmp_path):
    body = payload(100_000)
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("first.txt", b"fine", zipfile.ZIP_STORED)
        archive.writestr("album/second.jpg", body, zipfile.ZIP_STORED)
    data = path.read_bytes()
    path.write_bytes(flip(data, data.index(body) + 50_000))  # stored: the bytes are the body
    outcome = verify_file(path, archive=True, checksum=False, limits=LIMITS, budget=UNLIMITED)
    assert outcome.result == "corrupt"
    assert "entry 'album/second.jpg'" in outcome.detail
    assert "Bad CRC-32" in outcome.detail


def test_a_truncated_zip_has_no_central_directory(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", payload(100_000), zipfile.ZIP_DEFLATED)
    path.write_bytes(path.read_bytes()[:-30])  # into the central directory
    outcome = verify_file(path, archive=True, checksum=False, limits=LIMITS, budget=UNLIMITED)
    assert outcome.result == "corrupt"
    assert "no readable central directory" in outcome.detail


def test_a_zip_from_a_stream_that_cannot_seek_says_its_entries_were_not_checked(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.txt", b"abc")

    class Pipe(io.RawIOBase):  # what an HTTP body looks like: read only
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer):  # type: ignore[no-untyped-def, override]
            return self.data.readinto(buffer)

    outcome = verify_stream(Pipe(out.getvalue()), "a.zip", archive=True, expected=None,  # type: ignore[arg-type]
                            limits=LIMITS, budget=UNLIMITED)  # fmt: skip
    assert outcome.result == "ok"
    assert outcome.checked == ()
    assert "zip entries not checked" in outcome.detail


def test_a_tar_with_a_damaged_member_header_names_the_member_before_it():
    first = payload(10_000)
    tar = tar_bytes({"first.sql": first, "second.sql": payload(5000, 2)}, tarfile.USTAR_FORMAT)
    second_header = 512 + -(-len(first) // 512) * 512
    outcome = check(gzip.compress(flip(tar, second_header + 10)), "db.tar.gz")
    assert outcome.result == "corrupt"
    assert "damaged header at byte 10 752 after member 'first.sql'" in outcome.detail
    assert "checksum is wrong" in outcome.detail


def test_a_tar_cut_inside_a_member_body_or_header_or_at_a_member_end():
    first, second = payload(10_000), payload(20_000, 2)
    tar = tar_bytes({"first.sql": first, "second.sql": second}, tarfile.USTAR_FORMAT)
    body = check(tar[: 512 * 3 + 11_264], "a.tar")  # 3 headers' worth... in second's body
    assert body.result == "corrupt"
    assert "tar member 'second.sql' of a.tar is truncated" in body.detail
    header = check(gzip.compress(tar[: 10_752 + 100]), "a.tar.gz")
    assert "ends inside a header at byte 10 852 after member 'first.sql'" in header.detail
    end = tar.index(second) + -(-len(second) // 512) * 512  # after the last member: no end marker
    cut = check(tar[:end], "a.tar")
    assert cut.result == "corrupt"
    assert "has no end marker" in cut.detail


def test_a_lone_empty_block_before_more_members_is_corrupt():
    tar = tar_bytes({"a": b"x" * 600, "b": b"y" * 600}, tarfile.USTAR_FORMAT)
    holed = tar[:1536] + b"\0" * 512 + tar[1536:]
    outcome = check(holed, "a.tar")
    assert outcome.result == "corrupt"
    assert "empty block at byte 1 536 after member 'a'" in outcome.detail


# Bombs ----------------------------------------------------------------------------------------


def zeros_compressed(fmt: str, size: int) -> bytes:
    out = io.BytesIO()
    block = bytes(1024 * 1024)
    if fmt in ("bz2", "xz"):
        return COMPRESS[fmt](bytes(size))
    if fmt == "gz":
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as writer:
            for _ in range(size // len(block)):
                writer.write(block)
    else:
        with zstandard.ZstdCompressor(level=19).stream_writer(out, closefd=False) as writer:
            for _ in range(size // len(block)):
                writer.write(block)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "size"), [("gz", 256), ("zst", 256), ("bz2", 64), ("xz", 64)])
def test_a_bomb_stops_at_the_size_limit_with_bounded_memory(fmt, size):
    bomb = zeros_compressed(fmt, size * 1024 * 1024)
    assert len(bomb) < 512 * 1024
    tracemalloc.start()
    try:
        outcome = check(bomb, f"bomb.{fmt}", limits=Limits(max_expanded_bytes=16 * 1024 * 1024))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.result == "too_large"
    assert "expands to more than 16 777 216 bytes (the limit)" in outcome.detail
    assert peak < 24 * 1024 * 1024, peak


def test_a_bomb_stops_at_the_ratio():
    bomb = zeros_compressed("gz", 64 * 1024 * 1024)
    outcome = check(bomb, "bomb.gz", limits=Limits(max_ratio=100, ratio_after=1024 * 1024))
    assert outcome.result == "too_large"
    assert "expands more than 100 times" in outcome.detail
    # a small file of zeros is no bomb: the ratio is judged past ratio_after only
    assert check(gzip.compress(bytes(100_000)), "small.gz").result == "ok"


# Digests and sidecars ---------------------------------------------------------------------------


def test_the_digest_is_compared_with_what_the_sidecar_expects():
    data = gzip.compress(payload())
    good = Expected("sha256", hashlib.sha256(data).hexdigest(), "dump.sql.gz.sha256")
    outcome = check(data, "dump.sql.gz", expected=good)
    assert (outcome.result, outcome.digest, outcome.sidecar) == ("ok", good.hexdigest, good.source)
    assert outcome.checked == ("gzip", "sha256")
    assert "sha256 matches dump.sql.gz.sha256" in outcome.detail
    wrong = Expected("sha256", "ab" * 32, "SHA256SUMS")
    mismatch = check(data, "dump.sql.gz", expected=wrong)
    assert mismatch.result == "checksum_mismatch"
    assert mismatch.detail.startswith(
        f"sha256 of dump.sql.gz is {good.hexdigest}, but SHA256SUMS expects {'ab' * 32}"
    )


def test_a_damaged_archive_with_a_matching_digest_was_written_damaged_and_one_without_was_not():
    data = gzip.compress(payload())[:-20]
    matching = Expected("md5", hashlib.md5(data).hexdigest(), "x.gz.md5")
    outcome = check(data, "x.gz", expected=matching)
    assert outcome.result == "corrupt"
    assert "its md5 matches x.gz.md5: it was written damaged" in outcome.detail
    other = Expected("md5", "0" * 32, "x.gz.md5")
    both = check(data, "x.gz", expected=other)
    assert both.result == "checksum_mismatch"
    assert "the archive is damaged too: gzip stream of x.gz is truncated" in both.detail
    assert both.bytes_read == len(data)  # read to the end for the digest


def test_sidecar_found_next_to_the_file(tmp_path):
    data = gzip.compress(payload())
    path = write(tmp_path, "db.sql.gz", data)
    digest = hashlib.sha512(data).hexdigest()
    write(tmp_path, "db.sql.gz.sha512", f"{digest}  db.sql.gz\n".encode())
    outcome = verify_file(path, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
    assert (outcome.result, outcome.sidecar, outcome.digest) == ("ok", "db.sql.gz.sha512", digest)
    write(tmp_path, "db.sql.gz.sha512", f"{'0' * 128}  db.sql.gz\n".encode())
    bad = verify_file(path, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
    assert bad.result == "checksum_mismatch"
    assert "db.sql.gz.sha512 expects 000" in bad.detail


def test_a_sha256sums_listing_is_used_and_one_not_listing_the_file_is_no_sidecar(tmp_path):
    data = b"plain dump\n" * 1000
    path = write(tmp_path, "b.sql", data)
    digest = hashlib.sha256(data).hexdigest()
    write(tmp_path, "SHA256SUMS", f"{'1' * 64}  a.sql\n{digest} *b.sql\n".encode())
    outcome = verify_file(path, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
    assert (outcome.result, outcome.sidecar) == ("ok", "SHA256SUMS")
    write(tmp_path, "SHA256SUMS", f"{'1' * 64}  a.sql\n".encode())
    missing = verify_file(path, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
    assert (missing.result, missing.sidecar, missing.digest) == ("ok", None, None)
    assert missing.checked == ()
    assert "SHA256SUMS does not list b.sql" in missing.detail
    # ... and a later SUMS file that lists it is used
    write(tmp_path, "MD5SUMS", f"{hashlib.md5(data).hexdigest()}  b.sql\n".encode())
    assert verify_file(path, archive=True, checksum=True, limits=LIMITS,
                       budget=UNLIMITED).sidecar == "MD5SUMS"  # fmt: skip


def test_a_missing_sidecar_is_reported_not_a_mismatch(tmp_path):
    path = write(tmp_path, "x.gz", gzip.compress(b"abc"))
    outcome = verify_file(path, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
    assert (outcome.result, outcome.sidecar, outcome.checked) == ("ok", None, ("gzip",))
    assert "no checksum sidecar (looked for x.gz.sha256, x.gz.sha512, x.gz.md5, SHA256SUMS" in (
        outcome.detail
    )


def test_a_foreign_sidecar_is_a_sidecar_error_not_a_mismatch(tmp_path):
    path = write(tmp_path, "x.gz", gzip.compress(b"abc"))
    write(tmp_path, "x.gz.sha256", b'{"algorithm": "sha256", "value": "..."}\n')
    outcome = verify_file(path, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
    assert outcome.result == "sidecar_error"
    assert outcome.detail.startswith("x.gz.sha256 is not a sha256 checksum file: line 1 reads")
    # a damaged archive is still said first
    path.write_bytes(b"\x1f\x8b" + b"\0" * 30)
    damaged = verify_file(path, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
    assert damaged.result == "corrupt"
    assert "and x.gz.sha256 is not a sha256 checksum file" in damaged.detail


# Reading: unreadable, changing, budget, stop -----------------------------------------------------


def test_an_unreadable_file(tmp_path):
    # Running as root, chmod 000 does not stop a read: a directory (opened, but not a regular
    # file: reading it fails with EISDIR), a missing file, a FIFO and /proc/self/mem (opens,
    # then fails with EIO at its first read: the address 0 is not mapped) fail for root too.
    directory = tmp_path / "d.gz"
    directory.mkdir()
    outcome = verify_file(directory, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
    assert (outcome.result, outcome.detail) == (
        "unreadable",
        f"{directory} is a directory, not a file",
    )
    gone = verify_file(tmp_path / "gone.gz", archive=True, checksum=False, limits=LIMITS,
                       budget=UNLIMITED)  # fmt: skip
    assert gone.result == "unreadable"
    assert "No such file or directory" in gone.detail
    fifo = tmp_path / "pipe.gz"
    os.mkfifo(fifo)  # no writer: a blocking open would wait forever
    assert verify_file(fifo, archive=True, checksum=False, limits=LIMITS, budget=UNLIMITED) == (
        Outcome("unreadable", f"{fifo} is a FIFO, a device or a socket, not a file", 0, 0.0)
    )
    with open("/proc/self/mem", "rb", buffering=0) as memory:
        failing = verify_stream(memory, "mem", archive=True, expected=None, limits=LIMITS,
                                budget=UNLIMITED)  # fmt: skip
    assert (failing.result, failing.detail) == (
        "unreadable",
        "mem cannot be read at byte 0: Input/output error",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_file_without_read_permission(tmp_path):
    path = write(tmp_path, "x.gz", gzip.compress(b"abc"))
    path.chmod(0)
    outcome = verify_file(path, archive=True, checksum=False, limits=LIMITS, budget=UNLIMITED)
    assert (outcome.result, outcome.detail) == (
        "unreadable",
        f"{path} cannot be opened: Permission denied",
    )


def test_a_file_that_changes_while_it_is_read_is_changed_not_corrupt(tmp_path):
    data = gzip.compress(os.urandom(8 * 1024 * 1024), compresslevel=1)
    path = write(tmp_path, "growing.gz", data[: len(data) // 2])  # 4 chunks

    def append() -> None:
        time.sleep(0.1)
        with open(path, "ab") as file:
            file.write(b"more")

    writer = threading.Thread(target=append)
    writer.start()
    budget = Budget(len(data) / 2 / 1.0)  # ~0.75 s to read it (3 slots of 4)
    outcome = verify_file(path, archive=True, checksum=False, limits=LIMITS, budget=budget)
    writer.join()
    assert outcome.result == "changed"
    assert "changed while it was read" in outcome.detail


def test_the_budget_is_honoured(tmp_path):
    path = write(tmp_path, "big.bin", os.urandom(20_000_000))
    started = time.monotonic()
    outcome = verify_file(path, archive=True, checksum=False, limits=LIMITS, budget=Budget(40e6))
    elapsed = time.monotonic() - started
    assert outcome.result == "ok"
    assert elapsed >= 0.4
    assert outcome.seconds >= 0.4


def test_the_stop_event_stops_a_read_under_the_budget(tmp_path):
    path = write(tmp_path, "big.bin", os.urandom(8 * 1024 * 1024))
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    started = time.monotonic()
    outcome = verify_file(path, archive=True, checksum=False, limits=LIMITS,
                          budget=Budget(1024 * 1024), stop=stop)  # fmt: skip
    timer.join()
    assert outcome.result == "stopped"
    assert time.monotonic() - started < 3.0  # not the 7 s a whole read would take
    assert 0 < outcome.bytes_read < 8 * 1024 * 1024
    assert "stopped after" in outcome.detail
    already = verify_file(path, archive=True, checksum=False, limits=LIMITS, budget=UNLIMITED,
                          stop=stop)  # fmt: skip
    assert already.result == "stopped"


# Pushed in pieces ------------------------------------------------------------------------------


def pieces(data: bytes, seed: int) -> list[bytes]:
    """`data` cut at random places, with runs of tiny pieces (1 byte, around 512)."""
    rng = random.Random(seed)
    out, at = [], 0
    while at < len(data):
        size = rng.choice([1, 2, 3, 511, 512, 513, 4096, 70_000, 1_100_000])
        out.append(data[at : at + size])
        at += size
    return out


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_any_cutting_of_the_bytes_gives_the_same_verdict(ext):
    tar = tar_bytes({"a": payload(300_000), "b" * 150: payload(1000, 2), "c": b""})
    data = COMPRESS[ext](tar)
    digest = hashlib.sha256(data).hexdigest()
    for seed in range(3):
        verifier = Verifier(f"x.tar.{ext}", archive=True, limits=LIMITS,
                            expected=Expected("sha256", digest, "SHA256SUMS"))  # fmt: skip
        for piece in pieces(data, seed):
            verifier.feed(piece)
        outcome = verifier.outcome()
        assert outcome.result == "ok", (seed, outcome.detail)
        assert outcome.checked == (FORMAT[ext], "tar", "sha256")
        assert outcome.bytes_read == len(data)
        cut = Verifier(f"x.tar.{ext}", archive=True, expected=None, limits=LIMITS)
        for piece in pieces(data[: len(data) - 7], seed):
            cut.feed(piece)
        assert cut.outcome().result == "corrupt"


def test_a_plain_tar_in_pieces_and_a_non_seekable_tar_gz_stream():
    tar = tar_bytes({"a": payload(100_000), "b": payload(2000, 2)}, tarfile.GNU_FORMAT)
    verifier = Verifier("x.tar", archive=True, expected=None, limits=LIMITS)
    for piece in pieces(tar, 5):
        verifier.feed(piece)
    assert verifier.outcome().detail.endswith("tar (2 members) read through")

    class Body(io.RawIOBase):  # an HTTP response body: read(n) only, short reads
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> bytes:
            return self.data.read(min(n, 1000) if n > 0 else 1000)

    outcome = verify_stream(Body(gzip.compress(tar)), "x.tar.gz", archive=True, expected=None,  # type: ignore[arg-type]
                            limits=LIMITS, budget=UNLIMITED)  # fmt: skip
    assert (outcome.result, outcome.checked) == ("ok", ("gzip", "tar"))


def test_a_zip_bomb_stops_at_the_limit(tmp_path):
    path = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros", "w", force_zip64=True) as entry,
    ):
        for _ in range(64):
            entry.write(bytes(1024 * 1024))
    assert path.stat().st_size < 200_000
    outcome = verify_file(path, archive=True, checksum=False, budget=UNLIMITED,
                          limits=Limits(max_expanded_bytes=16 * 1024 * 1024))  # fmt: skip
    assert outcome.result == "too_large"
    assert "expands to more than 16 777 216 bytes" in outcome.detail


def test_a_damaged_pax_header_is_corrupt():
    tar = tar_bytes({"é" * 120: payload(2000)}, tarfile.PAX_FORMAT)  # a pax header for the name
    assert tar[156:157] == b"x"
    record = tar.index(b" path=")
    damaged = tar[: record - 3] + b"zz" + tar[record - 1 :]  # its length is no number
    outcome = check(damaged, "a.tar")  # (the pax body is not in the header's checksum)
    assert outcome.result == "corrupt"
    assert "a pax header of a.tar at its start is damaged" in outcome.detail


def test_an_archive_that_needs_too_much_memory_is_too_large_not_corrupt():
    out = io.BytesIO()
    wide = zstandard.ZstdCompressionParameters(window_log=29, enable_ldm=True)
    with zstandard.ZstdCompressor(compression_params=wide).stream_writer(out, closefd=False) as w:
        w.write(payload(100_000))
    outcome = check(out.getvalue(), "long.zst")
    assert outcome.result == "too_large"
    assert "needs a window of more than 268 435 456 bytes" in outcome.detail
    # an xz whose block header declares a 512 MiB dictionary (compressing with one would take
    # 500 MB here): the LZMA2 properties byte set to 34, the header's CRC-32 made right again
    xz = bytearray(lzma.compress(b"abc" * 1000, format=lzma.FORMAT_XZ, preset=0))
    header = (xz[12] + 1) * 4
    assert xz[13:16] == b"\0\x21\x01"  # one filter, no sizes; LZMA2, 1 property byte
    xz[16] = 34
    xz[12 + header - 4 : 12 + header] = zlib.crc32(xz[12 : 12 + header - 4]).to_bytes(4, "little")
    assert lzma.decompress(bytes(xz)) == b"abc" * 1000  # a good file, but a greedy one
    big = check(bytes(xz), "huge-dict.xz")
    assert big.result == "too_large"
    assert "needs more than 268 435 456 bytes of memory" in big.detail


@pytest.mark.parametrize("tool", ["sha256sum", "sha512sum", "md5sum"])
def test_sidecars_written_by_the_coreutils_tools(tool, tmp_path):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    path = write(tmp_path, "db.tar.gz", gzip.compress(tar_bytes({"db": payload(50_000)})))
    algorithm = tool.removesuffix("sum")
    for sidecar, argv in ((f"db.tar.gz.{algorithm}", [tool, "db.tar.gz"]),
                          (f"{algorithm.upper()}SUMS", [tool, "--tag", "db.tar.gz"])):  # fmt: skip
        listing = subprocess.run(argv, cwd=tmp_path, capture_output=True, check=True).stdout
        (tmp_path / sidecar).write_bytes(listing)
        outcome = verify_file(path, archive=True, checksum=True, limits=LIMITS, budget=UNLIMITED)
        assert (outcome.result, outcome.sidecar) == ("ok", sidecar), outcome.detail
        assert outcome.checked == ("gzip", "tar", algorithm)
        (tmp_path / sidecar).unlink()
