"""Reading restic's JSON answers and words (service/scanner/sources/restic.py): pure parsing."""

from __future__ import annotations

import json

import pytest

from service.scanner.sources.base import SourceError
from service.scanner.sources.restic import advice, parse_restore_size, parse_snapshots, time_us

ID = "1d80a04984031d3aa907beb2484828c9fcde3406e93500c2b626e2bb66ef3a76"


def test_times_keep_microseconds_and_offsets_and_cut_nanoseconds():
    assert time_us("1970-01-01T00:00:01Z") == 1_000_000
    assert time_us("1970-01-01T00:00:01.123456789Z") == 1_123_456
    assert time_us("1970-01-01T01:00:01.5+01:00") == 1_500_000
    assert time_us("2026-01-02T03:04:05.999999999-02:00") == 1767330245_999_999
    for bad in ("2026-01-02 03:04:05", "yesterday", 12, None):
        with pytest.raises(ValueError, match="not a restic time"):
            time_us(bad)


def test_snapshots_with_their_details():
    answer = [{"time": "2026-01-02T03:04:05.25Z", "id": ID, "short_id": ID[:8], "tree": "t",
               "hostname": "h", "username": "u", "tags": ["a"], "paths": ["/x"]}]  # fmt: skip
    (snapshot,) = parse_snapshots(json.dumps(answer).encode())
    assert snapshot.id == ID
    assert snapshot.time_us == 1767323045_250_000
    assert snapshot.details == {
        "short_id": ID[:8], "hostname": "h", "username": "u", "tags": ["a"], "paths": ["/x"],
    }  # fmt: skip
    untagged = parse_snapshots(json.dumps([{"time": "2026-01-02T03:04:05Z", "id": ID}]).encode())
    assert untagged[0].details["tags"] == [] and untagged[0].details["short_id"] == ID[:8]
    assert parse_snapshots(b"[]") == [] == parse_snapshots(b"null")


@pytest.mark.parametrize(
    "answer",
    [b"", b"{", b'{"a": 1}', b"[1]", b'[{"id": "x", "time": "2026-01-02T03:04:05Z"}]',
     json.dumps([{"id": ID}]).encode(), json.dumps([{"id": ID, "time": "soon"}]).encode()],
)  # fmt: skip
def test_a_malformed_answer_is_a_source_error(answer):
    with pytest.raises(SourceError, match="not a list of snapshots"):
        parse_snapshots(answer)


def test_restore_size():
    assert parse_restore_size(b'{"total_size":7003,"total_file_count":3}') == 7003
    for bad in (b"", b"{}", b'{"total_size": -1}', b'{"total_size": "1"}', b'{"total_size": true}'):
        with pytest.raises(SourceError, match="no total_size"):
            parse_restore_size(bad)


def test_advice_from_restics_words():
    assert "check password" in advice("Fatal: wrong password or no key found")
    assert "restic unlock" in advice("unable to create lock in backend: repository is already "
                                     "locked exclusively by PID 1")  # fmt: skip
    assert "check repository" in advice(
        "Fatal: unable to open config file: stat /r/config: no such file or directory "
        "Is there a repository at the following location? /r"
    )
    assert "upgrade restic" in advice("Fatal: config version 3 is not supported")
    assert advice("Fatal: something else") is None
