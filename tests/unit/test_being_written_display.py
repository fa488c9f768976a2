"""A newest file still being written is said so wherever the newest file is shown."""

from __future__ import annotations

from service.cli.main import render_table
from service.notify.notice import describe_artifact
from service.scanner.scanner import JobResult, ScanReport

WRITING = {"path": "db.sql.gz", "size": 5 * 1024**2, "mtime": "2026-11-29T02:10:00+00:00",
           "being_written": True}  # fmt: skip
SETTLED = {key: value for key, value in WRITING.items() if key != "being_written"}


def test_notice_says_the_newest_file_is_being_written() -> None:
    assert describe_artifact(WRITING) == [
        "Newest file: db.sql.gz",
        "  size 5.0 MiB (5242880 bytes), modified 2026-11-29T02:10:00+00:00, still being written "
        "(sizes are judged on the newest settled file)",
    ]
    assert "being written" not in "".join(describe_artifact(SETTLED))


def test_scan_table_says_the_newest_file_is_being_written() -> None:
    report = ScanReport(scan_id=1, status="finished", jobs=[
        JobResult("db", "ok", [], WRITING, 4), JobResult("web", "ok", [], SETTLED, 4),
    ])  # fmt: skip
    lines = render_table(report).splitlines()
    assert "db.sql.gz (being written)" in lines[1]
    assert "being written" not in lines[2]
