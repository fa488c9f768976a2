"""The lean encoder of the per-job families writes, byte for byte, what prometheus-client's own
encoders write for the same families, in both formats and for every Accept header."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from importlib.metadata import version
from typing import NamedTuple

import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.exposition import generate_latest as text_generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest

from service.http.metrics import (
    JOB_FAMILIES,
    _registry,
    build_info,
    job_families,
    lean_format,
    render_job_families,
    render_metrics,
    service_families,
)


class JobRow(NamedTuple):
    """Like the rows of `read_jobs`: attributes by column name."""

    name: str
    tags: list[str]
    status: str
    last_mtime: str | None
    last_size: str | int | None  # text from PostgreSQL, a number from SQLite
    artifact_count: int
    next_check_at: datetime | None


NOW = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
TRICKY = [
    "back\\slash",
    'double"quote',
    "new\nline",
    'all\\three"at\nonce\\n',
    "trailing\\",
    '"',
    "\\",
    "\n",
    "carriage\rreturn and\ttab",
    "non-ASCII: café, Zürich, 日本語, emoji 🎉",
    "braces} {and=equals,comma #hash",
    "",
    " ",
]


def tricky_jobs() -> list[JobRow]:
    jobs = []
    for index, text in enumerate(TRICKY):
        jobs.append(
            JobRow(
                name=text or "x",
                tags=[text, "plain", f"t{index}"] if index % 2 else [text],
                status=("ok", "warning", "critical", "unknown", "pending", "paused")[index % 6],
                last_mtime=(NOW - timedelta(seconds=index * 1234.5678)).isoformat(),
                last_size=(0, "1", 10_000, "1000000000000000", 123_456_789_012, "7")[index % 6],
                artifact_count=(0, 30, 10**9, 1)[index % 4],
                next_check_at=NOW + timedelta(hours=index, microseconds=index * 7),
            )
        )
    # No artifact, no deadline, no tags, a status the exposition does not know, another offset.
    jobs.append(JobRow("bare", [], "pending", None, None, 0, None))
    jobs.append(JobRow("odd-status", ["a", "b"], "bogus", None, None, 0, None))
    jobs.append(
        JobRow(
            "offset",
            ["x"],
            "ok",
            "2024-12-31T23:59:59.5+05:30",
            "5",
            3,
            datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=-7))),
        )
    )
    return jobs


def random_jobs(count: int, seed: int) -> list[JobRow]:
    rng = random.Random(seed)
    alphabet = 'ab\\"\n\r\t ,={}#é日🎉\x00\x7f\u2028'

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))

    jobs = []
    for _ in range(count):
        has_artifact = rng.random() < 0.8
        mtime = NOW - timedelta(seconds=rng.uniform(0, 1e8))
        size = rng.choice([rng.randint(0, 10**16), str(rng.randint(0, 10**16))])
        jobs.append(
            JobRow(
                text(),
                [text() for _ in range(rng.randint(0, 3))],
                rng.choice(["ok", "warning", "critical", "unknown", "pending", "paused", "?"]),
                mtime.isoformat() if has_artifact else None,
                size if has_artifact else None,
                rng.randint(0, 10**6),
                rng.choice([None, NOW + timedelta(seconds=rng.uniform(-1e8, 1e8))]),
            )
        )
    return jobs


def bench_like_jobs(count: int) -> list[JobRow]:
    statuses = ("ok", "warning", "critical", "unknown", "pending", "paused")
    return [
        JobRow(
            f"job-{index:05d}",
            ["db", f"team{index % 7}"],
            statuses[index % len(statuses)],
            NOW.isoformat(),
            "10000",
            30,
            NOW + timedelta(hours=index % 24),
        )
        for index in range(count)
    ]


def reference(jobs: list[JobRow], *, openmetrics: bool) -> str:
    """What prometheus-client writes for `job_families(jobs)`, without OpenMetrics' `# EOF`."""
    registry = _registry(job_families(jobs))
    if openmetrics:
        text = om_generate_latest(registry).decode()
        assert text.endswith("# EOF\n")
        return text.removesuffix("# EOF\n")
    return text_generate_latest(registry).decode()


JOB_SETS = {
    "tricky": tricky_jobs(),
    "random": random_jobs(300, seed=5),
    "bench-like": bench_like_jobs(50),
    "none": [],
}


@pytest.mark.parametrize("openmetrics", [True, False], ids=["openmetrics", "text"])
@pytest.mark.parametrize("jobs", JOB_SETS.values(), ids=JOB_SETS.keys())
def test_job_families_byte_identical(jobs: list[JobRow], openmetrics: bool) -> None:
    assert render_job_families(jobs, openmetrics=openmetrics) == reference(
        jobs, openmetrics=openmetrics
    )


def test_labels_are_escaped_once_per_job_and_never_lost() -> None:
    jobs = tricky_jobs()
    text = render_job_families(jobs, openmetrics=True)
    assert 'backup_job="all\\\\three\\"at\\nonce\\\\n"' in text
    assert 'backup_job="non-ASCII: café, Zürich, 日本語, emoji 🎉"' in text
    assert 'backup_job_tag{backup_job="double\\"quote",tag="double\\"quote"} 1.0' in text
    assert 'backup_job_tag{backup_job="double\\"quote",tag="t1"} 1.0' in text
    # Tags are series of their own, never a label of the other families.
    assert "tags=" not in text
    # No raw newline inside a sample line: every line is a comment or a sample.
    for line in text.removesuffix("\n").split("\n"):
        assert line.startswith(("# HELP ", "# TYPE ", *(name for name, _ in JOB_FAMILIES)))
    # 6 status lines a job, whatever its status.
    assert text.count("\nbackup_job_status{") == 6 * len(jobs)
    # One tag series per distinct tag of a job.
    tags = sum(len(set(job.tags)) for job in jobs)
    assert text.count("\nbackup_job_tag{") == tags


def test_a_tag_given_twice_is_one_series() -> None:
    jobs = [JobRow("db", ["prod", "prod", "eu"], "ok", None, None, 0, None)]
    text = render_job_families(jobs, openmetrics=False)
    assert text.count('backup_job_tag{backup_job="db",tag="prod"}') == 1
    assert text == reference(jobs, openmetrics=False)


# Accept headers: what Prometheus 2 and 3 send, what curl and browsers send, and the
# variants choose_encoder knows (versions, name escaping schemes).
PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
LEAN_ACCEPTS = {
    "none": "",
    "any": "*/*",
    "prometheus-2": PROMETHEUS_2,
    "prometheus-3": PROMETHEUS_3,
    "openmetrics": "application/openmetrics-text",
    "openmetrics-1.0.0": "application/openmetrics-text; version=1.0.0; charset=utf-8",
    "openmetrics-underscores": "application/openmetrics-text; version=1.0.0; escaping=underscores",
    "openmetrics-utf-8": "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "openmetrics-0.0.1": "application/openmetrics-text; version=0.0.1",
    "text": "text/plain",
    "text-0.0.4": "text/plain; version=0.0.4",
    "text-1.0.0": "text/plain; version=1.0.0",
    "text-utf-8": "text/plain; version=1.0.0; escaping=allow-utf-8",
}
OTHER_ACCEPTS = {
    "openmetrics-dots": "application/openmetrics-text; version=1.0.0; escaping=dots",
    "openmetrics-values": "application/openmetrics-text; version=1.0.0; escaping=values",
    "openmetrics-2.0.0": "application/openmetrics-text; version=2.0.0",
    "text-dots": "text/plain; version=1.0.0; escaping=dots",
    "text-values": "text/plain; version=1.0.0; escaping=values",
}


@pytest.mark.parametrize("accept", LEAN_ACCEPTS.values(), ids=LEAN_ACCEPTS.keys())
def test_lean_encoder_serves_what_scrapers_ask(accept: str) -> None:
    encode, content_type = choose_encoder(accept)
    expected = content_type.startswith("application/openmetrics-text")
    assert lean_format(encode) is expected


@pytest.mark.parametrize("accept", OTHER_ACCEPTS.values(), ids=OTHER_ACCEPTS.keys())
def test_other_variants_are_left_to_prometheus_client(accept: str) -> None:
    encode, _ = choose_encoder(accept)
    assert lean_format(encode) is None


@pytest.mark.parametrize(
    "accept", [*LEAN_ACCEPTS.values(), *OTHER_ACCEPTS.values()], ids=[*LEAN_ACCEPTS, *OTHER_ACCEPTS]
)
@pytest.mark.parametrize("last_scan", [NOW, None], ids=["scanned", "never-scanned"])
def test_whole_exposition_byte_identical(accept: str, last_scan: datetime | None) -> None:
    jobs = tricky_jobs() + random_jobs(50, seed=11)
    service = service_families([0, 1, 2, 3, 4, 5, 6, 7, 8], 9, 1234.5, 3, 10**7, last_scan)
    encode, _ = choose_encoder(accept)
    expected = encode(_registry([*job_families(jobs), *service]))
    assert render_metrics(jobs, service, encode, process=False) == expected


@pytest.mark.parametrize("accept", [PROMETHEUS_3, "text/plain", OTHER_ACCEPTS["openmetrics-2.0.0"]])
def test_the_process_and_python_collectors_follow(accept: str) -> None:
    encode, _ = choose_encoder(accept)
    text = render_metrics(tricky_jobs(), [build_info()], encode).decode()
    for family, kind in (
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("python_info", "gauge"),
        ("backup_monitor_build_info", "gauge"),
    ):
        type_name = family.removesuffix("_total") if "openmetrics" in accept else family
        assert f"# TYPE {type_name} {kind}\n" in text, family
    assert f'backup_monitor_build_info{{version="{version("backup-monitor")}"}} 1.0' in text
