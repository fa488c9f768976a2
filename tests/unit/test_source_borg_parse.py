"""Reading borg's JSON answers and words (service/scanner/sources/borg.py): pure parsing."""

from __future__ import annotations

import json

import pytest

from service.scanner.sources.base import SourceError
from service.scanner.sources.borg import advice, parse_archives, parse_info, time_us


def test_naive_times_are_utc():
    assert time_us("1970-01-01T00:00:01.000000") == 1_000_000
    assert time_us("2026-01-02T03:04:05.250000") == 1767323045_250_000
    assert time_us("1970-01-01T01:00:01+01:00") == 1_000_000
    with pytest.raises(ValueError, match="not a borg time"):
        time_us(None)


def test_archives():
    answer = {"archives": [{"name": "n-1", "id": "ab", "time": "2026-01-02T03:04:05.000000",
                            "start": "2026-01-02T03:04:05.000000"}], "repository": {}}  # fmt: skip
    (archive,) = parse_archives(json.dumps(answer).encode())
    assert (archive.name, archive.time_us, archive.id) == ("n-1", 1767323045_000_000, "ab")
    assert parse_archives(b'{"archives": []}') == []


@pytest.mark.parametrize(
    "answer",
    [b"", b"[]", b'{"archives": {}}', b'{"archives": [{"name": ""}]}',
     b'{"archives": [{"name": "a", "time": "then"}]}', b'{"archives": [{"name": "a"}]}'],
)  # fmt: skip
def test_a_malformed_list_is_a_source_error(answer):
    with pytest.raises(SourceError, match="not a list of archives"):
        parse_archives(answer)


def test_info_gives_the_original_size_and_details():
    stats = {"original_size": 7000, "compressed_size": 70, "deduplicated_size": 50, "nfiles": 2}
    answer = {"archives": [{"name": "a", "id": "ab", "hostname": "h", "stats": stats}]}
    size, details = parse_info(json.dumps(answer).encode(), "a")
    assert size == 7000
    assert details == {"id": "ab", "hostname": "h", "compressed_size": 70,
                       "deduplicated_size": 50, "nfiles": 2}  # fmt: skip
    negative = {"archives": [{"name": "a", "stats": {"original_size": -2}}]}
    no_stats = {"archives": [{"name": "a", "stats": {}}]}
    for bad in (b"{}", b'{"archives": []}', json.dumps(no_stats).encode(),
                json.dumps(negative).encode()):  # fmt: skip
        with pytest.raises(SourceError, match="no size for archive a"):
            parse_info(bad, "a")


def test_advice_from_borgs_words():
    assert "check passphrase" in advice(
        "passphrase supplied in BORG_PASSPHRASE, by BORG_PASSCOMMAND or via BORG_PASSPHRASE_FD "
        "is incorrect."
    )
    assert "give passphrase" in advice("can not acquire a passphrase: BORG_PASSPHRASE is not set.")
    assert "borg break-lock" in advice("Failed to create/acquire the lock /r/lock (timeout).")
    assert "check repository" in advice("Repository /r does not exist.")
    assert "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK" in advice(
        "Warning: Attempting to access a previously unknown unencrypted repository!"
    )
    assert advice("something else") is None
