"""A digest notice (service.notify.notice): it survives the outbox (as_json, from_json), and
reads plainly: the period in the job's zone, the retention slots, one line per backup."""

from __future__ import annotations

from datetime import UTC, datetime

from service.notify.notice import Notice, digest_summary

DIGEST = {
    "from": "2026-11-23T09:00:00+00:00",
    "to": "2026-11-30T09:00:00+00:00",
    "timezone": "Europe/Paris",
    "present": 31,
    "retention": {"daily": 7, "weekly": 4, "monthly": 12, "yearly": 0, "strict": False},
    "slots": {"kept": 21, "missing": 1, "not_expected": 0},
    "missing": ["2026-09"],
    "points": [
        {"path": "db-2026-11-30.sql.gz", "size": 1258291, "mtime": "2026-11-30T01:04:00+00:00",
         "first_seen": "2026-11-30T01:05:00+00:00", "slots": ["2026-11-30", "2026-W49"]},
        {"path": "db\nforged.sql.gz", "size": 7, "mtime": "2026-11-29T01:03:00+00:00",
         "first_seen": "2026-11-29T01:05:00+00:00", "slots": []},
    ],
    "more": 0,
}  # fmt: skip


def digest_notice(digest: dict[str, object]) -> Notice:
    return Notice(
        event_id="e-1", kind="digest", job="db-nightly", status="warning", previous_status=None,
        reasons=[], latest_artifact=None, occurred_at=datetime(2026, 11, 30, 9, tzinfo=UTC),
        digest=digest,
    )  # fmt: skip


def test_a_digest_survives_the_outbox() -> None:
    notice = digest_notice(DIGEST)
    assert notice.as_json()["digest"] == DIGEST
    assert Notice.from_json(notice.as_json()) == notice


def test_a_digest_reads_plainly() -> None:
    notice = digest_notice(DIGEST)
    assert notice.subject() == "[backup-monitor] digest db-nightly: 2 new backups, 1 retention gap"
    lines = notice.text().splitlines()
    assert lines[:8] == [
        "Restore points of db-nightly, from 2026-11-23 10:00 to 2026-11-30 10:00 (Europe/Paris).",
        "Status now: warning. Backups present in all: 31.",
        "",
        "Retention (daily 7, weekly 4, monthly 12): 21 slots kept, 1 missing, 0 not expected yet.",
        "No backup kept for: 2026-09.",
        "",
        "New backups in this period (2):",
        "- 2026-11-30 02:04  db-2026-11-30.sql.gz  1.2 MiB, kept for 2026-11-30, 2026-W49",
    ]
    # A file name cannot add a line of its own to the body.
    assert lines[8] == "- 2026-11-29 02:03  db\\nforged.sql.gz  7 B"
    assert lines[-1] == "Event: e-1"


def test_digest_summary_words() -> None:
    assert digest_summary({"points": [], "more": 0}) == "0 new backups"
    assert digest_summary({"points": [{}], "retention": {"daily": 1}, "missing": []}) == (
        "1 new backup, 0 retention gaps"
    )


def test_a_digest_says_what_verification_found() -> None:
    points = [
        {**DIGEST["points"][0], "verification": "ok"},  # type: ignore[index]
        {**DIGEST["points"][1], "verification": "corrupt"},  # type: ignore[index]
    ]
    lines = digest_notice({**DIGEST, "points": points}).text().splitlines()
    assert lines[7].endswith("kept for 2026-11-30, 2026-W49, verification: ok")
    assert lines[8].endswith("7 B, verification: CORRUPT")
