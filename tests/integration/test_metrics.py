"""/metrics through a real server: values come from the database at scrape time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import (
    text_string_to_metric_families as text_format_string_to_metric_families,
)

from service.core.rules import STATUSES
from service.db.models import Job
from service.http.metrics import (
    _registry,
    job_families,
    read_jobs,
    read_service_families,
    read_verification_families,
)
from service.notify.config import parse_channels
from service.notify.dispatcher import Dispatcher
from service.runtime.app import create_app
from service.scanner.scanner import BackupScanner
from service.settings import load_settings

from tests.support import add_job, make_file
from tests.unit.test_deploy_files import (
    EXPORTED,
    all_panels,
    load_dashboard,
    load_rules,
    metric_names,
)

DAY = timedelta(days=1)
WEBHOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}


def without_runtime(body: bytes) -> bytes:
    """The exposition without this process's own families (process_*, python_*)."""
    runtime = (b"process_", b"python_", b"# HELP process_", b"# TYPE process_", b"# HELP python_",
               b"# TYPE python_")  # fmt: skip
    return b"".join(line for line in body.splitlines(keepends=True) if not line.startswith(runtime))


def samples(text: str, parse=text_string_to_metric_families):
    parsed = {}
    for family in parse(text):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


async def test_metrics_reflect_the_database(
    aiohttp_client, make_app, sessionmaker, clock, tmp_path
):
    make_file(tmp_path / "ok" / "a.tar", 2048, clock.now - timedelta(hours=1))
    make_file(tmp_path / "late" / "b.tar", 10, clock.now - 3 * DAY)
    for name, tags in (("fresh", ["db", "prod"]), ("late", [])):
        folder = "ok" if name == "fresh" else "late"
        await add_job(
            sessionmaker, clock.now - 5 * DAY, name=name, tags=tags,
            source={"type": "local", "path": str(tmp_path / folder)},
        )  # fmt: skip
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    # The late job's alert, routed to a channel but not sent: one pending delivery.
    channels = parse_channels({"defaults": ["ops"], "channels": {"ops": WEBHOOK}}, "test")
    assert await Dispatcher(sessionmaker, channels).route() == 1

    client = await aiohttp_client(make_app())
    classic = await client.get("/metrics")
    assert classic.status == 200
    assert classic.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'backup_job_status{backup_job="late",status="critical"} 1.0' in await classic.text()
    openmetrics = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    response = await client.get("/metrics", headers={"Accept": openmetrics})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.text()
    assert text.rstrip().endswith("# EOF")
    values = samples(text)

    def job(name, **extra):
        return tuple(sorted({"backup_job": name, **extra}.items()))

    assert values[("backup_job_status", job("fresh", status="ok"))] == 1
    assert values[("backup_job_status", job("fresh", status="critical"))] == 0
    assert values[("backup_job_status", job("late", status="critical"))] == 1
    assert values[("backup_job_tag", job("fresh", tag="db"))] == 1
    assert values[("backup_job_tag", job("fresh", tag="prod"))] == 1
    assert not [
        key for key in values if key[0] == "backup_job_tag" and dict(key[1])["backup_job"] == "late"
    ]
    assert not [key for key in values if "tags" in dict(key[1]) or "job" in dict(key[1])]
    assert values[("backup_job_artifacts", job("fresh"))] == 1
    assert values[("backup_job_last_artifact_size_bytes", job("fresh"))] == 2048
    newest = values[("backup_job_last_artifact_timestamp_seconds", job("late"))]
    assert newest == pytest.approx((clock.now - 3 * DAY).timestamp(), abs=1)
    deadline = values[("backup_job_deadline_timestamp_seconds", job("late"))]
    assert deadline == pytest.approx(
        (clock.now - 3 * DAY + DAY + timedelta(hours=1)).timestamp(), abs=1
    )
    assert values[("backup_scans_total", ())] == 1
    assert values[("backup_scan_duration_seconds_count", ())] == 1
    assert values[("backup_scan_duration_seconds_bucket", (("le", "+Inf"),))] == 1
    assert values[("backup_artifacts_seen_total", ())] == 2
    assert values[("backup_last_scan_timestamp_seconds", ())] == pytest.approx(
        clock.now.timestamp(), abs=1
    )
    deliveries = {state: values[("backup_notification_deliveries_stored", (("state", state),))]
                  for state in ("pending", "delivered", "failed")}  # fmt: skip
    assert deliveries == {"pending": 1, "delivered": 0, "failed": 0}


async def test_metrics_token(aiohttp_client, sqlite_url):
    settings = load_settings(database_url=sqlite_url, metrics_token="s3cret-token")
    client = await aiohttp_client(create_app(settings, scheduler=False))
    denied = await client.get("/metrics")
    assert denied.status == 401
    assert (await denied.json())["error"]["code"] == "unauthorized"
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 401
    allowed = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert allowed.status == 200
    assert "backup_scans_total 0.0" in await allowed.text()


# Job names and tags the declarations refuse, but a database may hold (older versions, hand
# edits): each must come back from a scrape exactly, in both formats.
TRICKY_JOBS = {
    "back\\slash\\": ["a\\b", "plain"],
    'quote"d': ['say "hi"', '"'],
    "new\nline\n": ["two\nlines", ""],
    'all\\"\n': ["\\n", '\\"'],
    "café-Zürich-日本語-🎉": ["naïve", "Ωmega"],
    "braces} {=, #hash": ["x=y", "}", "# HELP"],
    "plain": [],
}
PROMETHEUS_ACCEPT = {
    "openmetrics": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "text": "text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
}


async def test_tricky_names_and_tags_survive_a_scrape(
    aiohttp_client, make_app, sessionmaker, clock
):
    for index, (name, tags) in enumerate(TRICKY_JOBS.items()):
        job_id = await add_job(sessionmaker, clock.now, name=f"job-{index}")
        async with sessionmaker() as session:
            job = await session.get(Job, job_id)
            job.name, job.tags, job.status = name, tags, STATUSES[index % len(STATUSES)]
            job.artifact_count = index
            job.latest_artifact = {
                "path": "x.tar",
                "size": 100 + index,
                "mtime": clock.now.isoformat(),
            }
            job.next_check_at = clock.now + index * DAY
            await session.commit()

    client = await aiohttp_client(make_app())
    for fmt, parse in (
        ("openmetrics", text_string_to_metric_families),
        ("text", text_format_string_to_metric_families),
    ):
        response = await client.get("/metrics", headers={"Accept": PROMETHEUS_ACCEPT[fmt]})
        assert response.status == 200
        body = await response.read()
        # Byte for byte what prometheus-client's own encoder writes for the same data.
        encode, content_type = choose_encoder(PROMETHEUS_ACCEPT[fmt])
        assert response.headers["Content-Type"] == content_type
        async with sessionmaker() as session:
            families = job_families(await read_jobs(session))
            families += await read_service_families(session)
            # No verifier without the scheduler: no process counters.
            families += await read_verification_families(session, None)
        # The process_* and python_* families of this process differ from one call to the next.
        assert without_runtime(body) == without_runtime(encode(_registry(families, process=True)))
        assert b"\nprocess_resident_memory_bytes " in body

        values = samples(body.decode(), parse)
        for index, (name, tags) in enumerate(TRICKY_JOBS.items()):
            labels = {"backup_job": name}
            for tag in tags:
                assert (
                    values[("backup_job_tag", tuple(sorted({**labels, "tag": tag}.items())))] == 1
                )
            for status in STATUSES:
                key = tuple(sorted({**labels, "status": status}.items()))
                expected = 1 if status == STATUSES[index % len(STATUSES)] else 0
                assert values[("backup_job_status", key)] == expected, (fmt, name, status)
            key = tuple(sorted(labels.items()))
            assert values[("backup_job_artifacts", key)] == index
            assert values[("backup_job_last_artifact_size_bytes", key)] == 100 + index
            assert values[("backup_job_last_artifact_timestamp_seconds", key)] == pytest.approx(
                clock.now.timestamp()
            )
            assert values[("backup_job_deadline_timestamp_seconds", key)] == pytest.approx(
                (clock.now + index * DAY).timestamp()
            )
        assert len([key for key in values if key[0] == "backup_job_status"]) == 6 * len(TRICKY_JOBS)


async def test_every_metric_the_alerts_and_dashboard_use_is_in_a_real_scrape(
    aiohttp_client, make_app, sessionmaker, clock, tmp_path
):
    """Names in deploy/ checked against what a running app serves, not against a list."""
    make_file(tmp_path / "db" / "a.tar", 2048, clock.now - timedelta(hours=1))
    await add_job(
        sessionmaker, clock.now - 5 * DAY, name="db", tags=["prod"],
        source={"type": "local", "path": str(tmp_path / "db")},
    )  # fmt: skip
    async with sessionmaker() as session:
        await BackupScanner(session, clock=clock).scan_all_jobs()
    client = await aiohttp_client(make_app())
    served: set[str] = set()
    for accept in PROMETHEUS_ACCEPT.values():
        response = await client.get("/metrics", headers={"Accept": accept})
        parse = (
            text_string_to_metric_families
            if response.headers["Content-Type"].startswith("application/openmetrics-text")
            else text_format_string_to_metric_families
        )
        families = list(parse(await response.text()))
        # Family names (histograms: the base name) and sample names (counters' _total).
        served |= {family.name for family in families}
        served |= {sample.name for family in families for sample in family.samples}
    used: set[str] = set()
    for rule in load_rules():
        used |= metric_names(rule["expr"])
    for panel in all_panels(load_dashboard()):
        for target in panel["targets"]:
            used |= metric_names(target["expr"])
    assert used, "no metric found in deploy/"
    assert used - served == set(), f"used in deploy/ but not served: {sorted(used - served)}"
    # And the list the unit tests check deploy/ against is what is served.
    assert EXPORTED - served == set(), sorted(EXPORTED - served)
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
            "process_start_time_seconds", "python_info"} <= served  # fmt: skip
