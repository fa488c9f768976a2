"""The verification reasons of the pure evaluation (service/core/rules.py), at their boundaries,
and the `verify:` declaration (service/core/jobspec.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from service.core.jobspec import JobSpec, parse_job
from service.core.rules import (
    ArtifactFact,
    RepositoryFact,
    VerificationFacts,
    VerifiedFact,
    evaluate,
    next_check,
)

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
SETTLE = 120  # the local source's default
LOCAL = {"type": "local", "path": "/backups/db", "pattern": "*.sql.gz"}
RESTIC = {"type": "restic", "repository": "/srv/restic", "password": "${RESTIC_PASSWORD}"}
NEWEST = ArtifactFact("db-2.sql.gz", 1000, T0)
OLDER = ArtifactFact("db-1.sql.gz", 1000, T0 - DAY)


def job(verify: dict[str, Any] | None, source: dict[str, Any] | None = LOCAL) -> JobSpec:
    data: dict[str, Any] = {"name": "db", "schedule": {"every": 86400}, "grace": 3600}
    if source is not None:
        data["source"] = source
    if verify is not None:
        data["verify"] = verify
    return parse_job(data)


FILES = {"archive": True, "checksum": "sidecar", "unverified_after": "1h"}


def verified(outcome: str, *, of: ArtifactFact = NEWEST, **fields: Any) -> VerifiedFact:
    values: dict[str, Any] = {
        "path": of.path, "size": of.size, "mtime": of.mtime, "verified_at": T0 + HOUR,
        "outcome": outcome, "detail": "", "sidecar": f"{of.path}.sha256", "first_seen": of.mtime,
    }  # fmt: skip
    values.update(fields)
    return VerifiedFact(**values)


def codes(spec: JobSpec, facts: VerificationFacts | None, now: datetime) -> list[tuple[str, str]]:
    evaluation = evaluate(spec, [OLDER, NEWEST], now=now, created_at=CREATED, verification=facts)
    return [(reason.code, reason.severity) for reason in evaluation.reasons]


def facts(*results: VerifiedFact, repository: RepositoryFact | None = None) -> VerificationFacts:
    return VerificationFacts({fact.path: fact for fact in results}, repository)


NOW = T0 + 2 * HOUR  # fresh (due by T0 + 25 h)


@pytest.mark.parametrize(
    ("spec_verify", "given", "expected"),
    [
        # Verified ok, sidecar compared: nothing to say.
        (FILES, facts(verified("ok")), []),
        (FILES, facts(verified("corrupt", detail="gzip: truncated at byte 4096")),
         [("corrupt", "critical")]),
        (FILES, facts(verified("checksum_mismatch")), [("checksum_mismatch", "critical")]),
        (FILES, facts(verified("unreadable")), [("source_error", "unknown")]),
        (FILES, facts(verified("too_large")), [("verify_limit", "warning")]),
        # A sidecar missing or foreign is reported, never a mismatch.
        (FILES, facts(verified("ok", sidecar=None)), [("checksum_missing", "warning")]),
        (FILES, facts(verified("sidecar_error")), [("checksum_unreadable", "warning")]),
        # No sidecar asked for: none missing.
        ({"archive": True}, facts(verified("ok", sidecar=None)), []),
        # A corrupt OLDER artifact is shown on the page, not judged: the newest is ok.
        (FILES, facts(verified("ok"), verified("corrupt", of=OLDER)), []),
        # A result for another version of the newest file (rewritten since) does not count:
        # the current version is not verified (2 h after it settled, the limit is 1 h).
        (FILES, facts(verified("corrupt", size=999)), [("unverified", "warning")]),
        (FILES, facts(verified("corrupt", mtime=T0 - SECOND)), [("unverified", "warning")]),
        # No facts at all (a first scan): nothing known, nothing said.
        (FILES, None, []),
        (FILES, facts(), []),
        # Verification not declared: results are ignored.
        (None, facts(verified("corrupt")), []),
    ],
)  # fmt: skip
def test_verification_reasons(spec_verify, given, expected):
    assert codes(job(spec_verify), given, NOW) == expected


def test_messages_say_which_check_and_where():
    detail = "gzip stream truncated at byte 4096 (expected more data)"
    spec = job(FILES)
    (reason,) = evaluate(
        spec, [NEWEST], now=NOW, created_at=CREATED,
        verification=facts(verified("corrupt", detail=detail)),
    ).reasons  # fmt: skip
    assert reason.message == (
        f"newest backup db-2.sql.gz is corrupt: {detail} (verified 2026-11-20 04:00 UTC)"
    )
    mismatch = "sha256 expected 00aa… from db-2.sql.gz.sha256, got 11bb…"
    (reason,) = evaluate(
        spec, [NEWEST], now=NOW, created_at=CREATED,
        verification=facts(verified("checksum_mismatch", detail=mismatch)),
    ).reasons  # fmt: skip
    assert mismatch in reason.message
    assert reason.message.startswith("newest backup db-2.sql.gz does not match its checksum")


# Settled at T0 + settle; unverified strictly after T0 + settle + unverified_after (1 h).
UNVERIFIED_AT = T0 + timedelta(seconds=SETTLE) + HOUR


@pytest.mark.parametrize(
    ("now", "first_seen", "expected"),
    [
        (UNVERIFIED_AT, T0, []),
        (UNVERIFIED_AT + timedelta(microseconds=1), T0, [("unverified", "warning")]),
        # Copied in late with an old time: settled when first listed, not at mtime + settle.
        (UNVERIFIED_AT + MINUTE, T0 + 2 * HOUR, []),
        (T0 + 3 * HOUR + timedelta(microseconds=1), T0 + 2 * HOUR, [("unverified", "warning")]),
    ],
)
def test_unverified_boundary(now, first_seen, expected):
    never = VerifiedFact(NEWEST.path, first_seen=first_seen)
    assert codes(job(FILES), facts(never), now) == expected


def test_unverified_when_only_an_older_version_was_verified():
    old = verified("ok", size=10, first_seen=T0)
    assert codes(job(FILES), facts(old), UNVERIFIED_AT + SECOND) == [("unverified", "warning")]


def test_next_check_is_when_the_newest_becomes_unverified():
    spec = job(FILES)
    never = facts(VerifiedFact(NEWEST.path, first_seen=T0))
    now = T0 + MINUTE * 10
    evaluation = evaluate(spec, [NEWEST], now=now, created_at=CREATED, verification=never)
    assert evaluation.reasons == ()
    assert next_check(spec, evaluation, None, now) == UNVERIFIED_AT + timedelta(microseconds=1)
    # Verified: nothing to wait for but the deadline.
    done = evaluate(spec, [NEWEST], now=now, created_at=CREATED, verification=facts(verified("ok")))
    assert next_check(spec, done, None, now) == done.deadline


def test_a_file_still_being_written_is_not_judged_its_predecessor_is():
    spec = job(FILES)
    now = T0 + MINUTE  # NEWEST modified a minute ago: being written (settle 120 s)
    evaluation = evaluate(
        spec, [OLDER, NEWEST], now=now, created_at=CREATED,
        verification=facts(verified("corrupt", of=OLDER)),
    )  # fmt: skip
    assert [r.code for r in evaluation.reasons] == ["corrupt"]
    assert "db-1.sql.gz" in evaluation.reasons[0].message


REPOSITORY = {"repository": {"every": "1d", "read_data_subset": "5%"}}


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        (None, []),
        (RepositoryFact(None, None), []),  # never checked yet
        (RepositoryFact(T0, True, ""), []),
        (RepositoryFact(T0, False, "pack 3f2a… is damaged", damaged=True),
         [("repository_check_failed", "critical")]),
        # Not damage: the check could not run (a lock held by a backup, a wrong password).
        (RepositoryFact(T0, False, "pack 3f2a… is damaged (lock)", damaged=False),
         [("repository_check_error", "unknown")]),
    ],
)  # fmt: skip
def test_repository_check(check, expected):
    spec = job(REPOSITORY, RESTIC)
    snapshot = ArtifactFact("3f2a9c1b", 1000, T0)
    evaluation = evaluate(
        spec, [snapshot], now=NOW, created_at=CREATED, verification=facts(repository=check)
    )
    assert [(r.code, r.severity) for r in evaluation.reasons] == expected
    if expected:
        assert "pack 3f2a… is damaged" in evaluation.reasons[0].message
        assert "restic repository /srv/restic" in evaluation.reasons[0].message


# --- the declaration ------------------------------------------------------------------------


def test_declaration_defaults_and_units():
    spec = job({"archive": True, "every": "7d", "unverified_after": "1d"})
    assert spec.verify is not None
    assert spec.verify.every == 7 * 86400 and spec.verify.unverified_after == 86400
    assert spec.verify.checksum == "none" and spec.verify.files
    assert spec.declaration()["verify"]["every"] == 7 * 86400
    assert job(None).declaration()["verify"] is None
    restic = job(REPOSITORY, RESTIC)
    assert restic.verify is not None and restic.verify.repository is not None
    assert restic.verify.repository.read_data_subset == 5.0


def test_s3_sources_verify_archives_and_checksums():
    spec = job({"archive": True, "checksum": "sidecar"}, {"type": "s3", "bucket": "backups"})
    assert spec.verify is not None and spec.verify.files
    assert spec.verify.archive and spec.verify.checksum == "sidecar"


@pytest.mark.parametrize(
    ("verify", "source", "message"),
    [
        ({"archive": True}, None, "verify needs a source"),
        ({}, LOCAL, "verify declares nothing to check"),
        ({"archive": False, "checksum": "none"}, LOCAL, "verify declares nothing to check"),
        ({"archive": True}, RESTIC, "checked with verify.repository instead"),
        (REPOSITORY, LOCAL, "applies to restic and borg sources only"),
        ({"repository": {"read_data_subset": "5%"}}, {"type": "borg", "repository": "/b"},
         "restic's option"),
        ({"archive": True, "checksum": "md5"}, LOCAL, "Input should be 'sidecar' or 'none'"),
        ({"archive": True, "every": 0}, LOCAL, "greater than 0"),
        ({"archive": True, "budget": "1MB/s"}, LOCAL, "Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_declaration_refusals(verify, source, message):
    with pytest.raises(ValidationError) as caught:
        job(verify, source)
    assert message in str(caught.value)
