"""Sidecar names and contents (pure), and the budget shared by verification threads."""

from __future__ import annotations

import threading
import time

import pytest

from service.verify.budget import Budget
from service.verify.checksums import (
    Expected,
    NoSidecarEntry,
    SidecarError,
    is_sidecar,
    parse_sidecar,
    sidecar_names,
)  # fmt: skip

A = "a" * 64
B = "b" * 64


def test_sidecar_names_in_order_and_in_the_artifact_directory():
    assert sidecar_names("db/2026/dump.sql.gz") == (
        "db/2026/dump.sql.gz.sha256", "db/2026/dump.sql.gz.sha512", "db/2026/dump.sql.gz.md5",
        "db/2026/SHA256SUMS", "db/2026/SHA512SUMS", "db/2026/MD5SUMS",
    )  # fmt: skip
    assert sidecar_names("x.tar")[3:] == ("SHA256SUMS", "SHA512SUMS", "MD5SUMS")


@pytest.mark.parametrize(
    ("name", "sidecar"),
    [("x.gz.sha256", True), ("d/SHA256SUMS", True), ("MD5SUMS", True), ("x.GZ.MD5", True),
     ("x.gz", False), ("sha256", False), ("notes.sha256sum", False)],
)  # fmt: skip
def test_is_sidecar(name, sidecar):
    assert is_sidecar(name) is sidecar


@pytest.mark.parametrize(
    "content",
    [
        f"{A}  dump.sql.gz\n",  # sha256sum
        f"{A} *dump.sql.gz\n",  # sha256sum --binary
        f"{A.upper()}\n",  # the digest alone
        f"{A}",  # no newline
        f"SHA256 (dump.sql.gz) = {A}\n",  # BSD / shasum --tag
        f"SHA2-256(dump.sql.gz)= {A}\n",  # openssl dgst -sha256 (OpenSSL 3)
        f"{A} dump.sql.gz\n",  # one space (some scripts)
        f"# written by backup.sh\n\n{A}  /backups/db/dump.sql.gz\r\n",  # a path, CRLF, comment
        f"{A}  dump.sql.gz.old\n",  # written before a rename: FILE.sha256 is about FILE
    ],
)
def test_a_file_sidecar_in_every_usual_style(content):
    expected = parse_sidecar("dump.sql.gz.sha256", content.encode(), "dump.sql.gz")
    assert expected == Expected("sha256", A, "dump.sql.gz.sha256")


def test_a_sums_file_finds_the_artifact_by_name():
    content = f"{B}  other.gz\n{A} *./dump.sql.gz\n".encode()
    assert parse_sidecar("SHA256SUMS", content, "dump.sql.gz").hexdigest == A
    in_dir = parse_sidecar("db/SHA256SUMS", content, "db/dump.sql.gz")
    assert in_dir == Expected("sha256", A, "db/SHA256SUMS")
    with pytest.raises(NoSidecarEntry, match=r"^db/SHA256SUMS does not list new\.gz$"):
        parse_sidecar("db/SHA256SUMS", content, "db/new.gz")


def test_a_clear_signed_sums_file():
    signed = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n"
        f"{B}  a.iso\n{A}  dump.sql.gz\n"
        "-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCgAdFiEE\n-----END PGP SIGNATURE-----\n"
    )
    assert parse_sidecar("SHA256SUMS", signed.encode(), "dump.sql.gz").hexdigest == A


def test_an_md5_and_a_sha512_sidecar():
    md5 = "0123456789abcdef" * 2
    assert parse_sidecar("x.md5", f"{md5}  x\n".encode(), "x").algorithm == "md5"
    sha512 = parse_sidecar("SHA512SUMS", f"{'c' * 128}  x\n".encode(), "x")
    assert (sha512.algorithm, sha512.hexdigest) == ("sha512", "c" * 128)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.sha256", b'{"sha256": "abc"}', r"^x\.sha256 is not a sha256 checksum file: line 1 "
         r"reads '\{\"sha256\": \"abc\"\}'; expected '<64 hex digits>  x'$"),
        ("x.sha256", ("d" * 32 + "  x").encode(), r"holds an md5 digest on line 1, not a sha256"),
        ("x.sha256", ("d" * 40).encode(), r"holds a sha1 digest"),
        ("x.sha256", f"MD5 (x) = {'d' * 32}".encode(), r"not a sha256 checksum file"),
        ("x.sha256", b"", r"^x\.sha256 is empty"),
        ("x.sha256", b"\x89PNG\r\n\x1a\n\0\0", r"is a binary file"),
        ("x.sha256", f"{A}  y\n{B}  z\n".encode(), r"lists 2 digests and none for x"),
        ("SHA256SUMS", f"{A}  x\n{B}  ./x\n".encode(), r"lists x 2 times with different"),
        ("SHA256SUMS", b"x" * (4 * 1024 * 1024 + 1), r"too large for a checksum file"),
    ],
)  # fmt: skip
def test_a_foreign_or_broken_sidecar_is_an_error_not_a_mismatch(name, content, message):
    with pytest.raises(SidecarError, match=message):
        parse_sidecar(name, content, "x")


# The budget --------------------------------------------------------------------------------------


def test_an_unlimited_budget_never_waits():
    budget = Budget(None)
    started = time.monotonic()
    assert all(budget.take(1 << 30) for _ in range(1000))
    assert time.monotonic() - started < 0.5
    assert budget.taken == 1000 << 30  # counted though never waited for


def test_the_budget_is_shared_by_threads():
    budget = Budget(20e6)  # 20 MB/s: 4 threads x 2.5 MB = 10 MB is ~0.5 s however they split it
    done = []

    def reader() -> None:
        for _ in range(10):
            budget.take(250_000)
        done.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(done) == 4
    assert max(done) - started >= 0.45  # 39 slots of 12.5 ms before the last take
    assert budget.taken == 10_000_000  # every thread's takes, none lost


def test_a_lone_reader_waits_one_slot_per_take_after_the_first():
    budget = Budget(10_000.0)
    started = time.monotonic()
    for _ in range(3):
        assert budget.take(1000)
    assert 0.2 <= time.monotonic() - started < 1


def test_a_stopped_take_returns_false_at_once():
    budget = Budget(1000.0)
    stop = threading.Event()
    budget.take(5000)  # the next slot is 5 s away
    threading.Timer(0.1, stop.set).start()
    started = time.monotonic()
    assert budget.take(10, stop) is False
    assert time.monotonic() - started < 1
    budget.set_rate(None)
    assert budget.rate is None
    assert budget.take(10**12)
    with pytest.raises(ValueError, match="positive number"):
        budget.set_rate(0)
