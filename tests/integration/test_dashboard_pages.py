"""The dashboard's list and the API's job list with 10 000 jobs (on PostgreSQL and on SQLite):
pages of 100 in a stable worst-first order, counts exact for every job, filters kept across
pages; on PostgreSQL the list's queries use the indexes of migration 0015.

The jobs are one job declared through the store (parse_job, new_job, the ORM) copied 10 000
times by a single INSERT ... SELECT over a counter, each with its own name, ping key and a
status that follows from its number (`status_of`), so the expected pages are computed here
without asking the database."""

from __future__ import annotations

import html
import re
from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import (
    String,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)

from service.db.engine import is_postgresql
from service.db.models import Job
from service.http.web.paging import JOBS_PER_PAGE
from service.http.web.queries import STATUS_ORDER, all_tags, status_digest, status_summary
from service.store.jobs import status_counts

from tests.support import add_job

JOBS = 10_000
FIRST = 100_001  # names job-100001 ... job-110000: one width, so text order is number order


def status_of(number: int) -> str:
    return {0: "critical", 1: "warning", 2: "paused"}.get(number % 10, "ok")


def tags_of(name: str) -> list[str]:
    """Every job whose number has 5 as its tens digit (1 000 of them, of every status)."""
    return ["db"] if name[-2] == "5" else ["fleet"]


NAMES = [f"job-{number}" for number in range(FIRST, FIRST + JOBS)]
STATUS = {name: status_of(int(name[4:])) for name in NAMES}


def worst_first(names: list[str]) -> list[str]:
    return sorted(names, key=lambda name: (STATUS_ORDER[STATUS[name]], name))


@pytest.fixture
async def fleet(sessionmaker) -> None:
    """10 000 jobs: one declared through the store, copied by one INSERT ... SELECT."""
    template = await add_job(
        sessionmaker, datetime.now(UTC), name="template", tags=["fleet"],
        source={"type": "local", "path": "/srv/backups/template"},
    )  # fmt: skip
    async with sessionmaker() as session:
        counter = select(literal(FIRST).label("n")).cte("counter", recursive=True)
        counter = counter.union_all(
            select((counter.c.n + 1).label("n")).where(counter.c.n < FIRST + JOBS - 1)
        )
        number = counter.c.n
        overrides = {
            "name": literal("job-") + cast(number, String),
            "ping_key": Job.ping_key + literal("-") + cast(number, String),
            "status": case(
                (number % 10 == 0, "critical"),
                (number % 10 == 1, "warning"),
                (number % 10 == 2, "paused"),
                else_="ok",
            ),
        }
        columns = [column for column in Job.__table__.columns if column.key != "id"]
        copies = (
            select(*(overrides.get(column.key, column) for column in columns))
            .select_from(counter)
            .join(Job, Job.id == template)
        )
        await session.execute(
            insert(Job.__table__).from_select([column.key for column in columns], copies)
        )
        await session.execute(delete(Job).where(Job.id == template))
        await session.execute(update(Job).where(Job.name.like("%5_")).values(tags=["db"]))
        await session.commit()
        await session.execute(text("ANALYZE"))
        await session.commit()


def shown(page: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)"', page)


def counts_of(page: str) -> dict[str, int]:
    found = re.findall(r'data-status="(\w+)"><strong>(\d+)</strong>', page)
    return {status: int(count) for status, count in found}


def links(page: str, rel: str) -> list[str]:
    return [html.unescape(href) for href in re.findall(rf'<a href="([^"]+)" rel="{rel}">', page)]


async def test_ten_thousand_jobs_page_by_page_worst_first(client, fleet):
    expected = worst_first(NAMES)
    first = await (await client.get("/")).text()
    assert shown(first) == expected[:JOBS_PER_PAGE]
    assert {STATUS[name] for name in shown(first)} == {"critical"}
    # The counts are of every job, not of the page.
    every = {**Counter(STATUS.values()), "unknown": 0, "pending": 0, "all": JOBS}
    assert counts_of(first) == every
    assert "Jobs 1–100 of 10000, worst first · page 1 of 100" in first
    assert links(first, "next") == ["/?page=2"] * 2  # above and below the table
    assert links(first, "prev") == []

    last = await (await client.get("/?page=100")).text()
    assert shown(last) == expected[-JOBS_PER_PAGE:]
    assert {STATUS[name] for name in shown(last)} == {"paused"}
    assert links(last, "next") == [] and links(last, "prev") == ["/?page=99"] * 2
    assert counts_of(last) == counts_of(first)

    # Where two statuses meet (1 000 critical, then warning): nothing lost, nothing twice.
    tenth, eleventh = [
        shown(await (await client.get(f"/?page={number}")).text()) for number in (10, 11)
    ]
    assert tenth + eleventh == expected[900:1100]
    assert STATUS[tenth[-1]] == "critical" and STATUS[eleventh[0]] == "warning"

    # Past the end: the last page; not a page number: the first.
    assert shown(await (await client.get("/?page=999")).text()) == shown(last)
    for wrong in ("0", "-3", "x", "9" * 40):
        assert shown(await (await client.get(f"/?page={wrong}")).text()) == shown(first)


async def test_filters_are_kept_across_pages(client, fleet):
    tagged = worst_first([name for name in NAMES if tags_of(name) == ["db"]])
    assert len(tagged) == 1000
    second = await (await client.get("/?tag=db&page=2")).text()
    assert shown(second) == tagged[100:200]
    assert "Jobs 101–200 of 1000 matching, worst first · page 2 of 10" in second
    assert links(second, "prev") == ["/?tag=db"] * 2
    assert links(second, "next") == ["/?tag=db&page=3"] * 2
    assert 'href="/?tag=db&amp;page=10" aria-label="page 10"' in second
    assert counts_of(second)["ok"] == 7000  # still every job's

    both = worst_first([name for name in tagged if STATUS[name] == "ok"])
    last = await (await client.get("/?status=ok&tag=db&q=job-1&page=7")).text()
    assert shown(last) == both[600:]
    assert links(last, "prev") == ["/?status=ok&tag=db&q=job-1&page=6"] * 2

    found = await (await client.get("/?q=10005")).text()
    assert shown(found) == worst_first([name for name in NAMES if "10005" in name])
    assert 'id="pages-top"' not in found  # one page: no page links


async def test_the_api_pages_and_counts_at_ten_thousand_jobs(client, fleet):
    critical = sorted(name for name in NAMES if STATUS[name] == "critical")
    page = await (await client.get("/api/v1/jobs?status=critical&limit=100&offset=900")).json()
    assert page["total"] == 1000
    assert [item["name"] for item in page["items"]] == critical[900:]
    past = await (await client.get("/api/v1/jobs?status=critical&offset=5000")).json()
    assert past == {"items": [], "total": 1000}
    found = await (await client.get("/api/v1/jobs?q=JOB-10005&limit=3")).json()
    assert found["total"] == 10  # job-100050 ... job-100059, case aside
    assert [item["name"] for item in found["items"]] == ["job-100050", "job-100051", "job-100052"]


async def explain(session, statement: str) -> str:
    rows = await session.execute(text(f"EXPLAIN {statement}"))
    return "\n".join(row[0] for row in rows)


async def test_the_list_uses_the_indexes_on_postgresql(sessionmaker, fleet):
    async with sessionmaker() as session:
        if not is_postgresql(session):
            pytest.skip("PostgreSQL's plans (SQLite has the status index only)")
        status = await explain(session, "SELECT count(*) FROM jobs WHERE status = 'critical'")
        assert "ix_jobs_status_name" in status and "Seq Scan" not in status, status
        await session.execute(
            update(Job).where(Job.name.like("%77")).values(description="the billing database")
        )
        # What autovacuum does after a bulk insert: the GIN indexes' pending entries merged.
        for index in ("ix_jobs_name_trgm", "ix_jobs_description_trgm"):
            await session.execute(select(func.gin_clean_pending_list(index)))
        await session.commit()
        await session.execute(text("ANALYZE jobs"))
        search = await explain(
            session,
            "SELECT count(*) FROM jobs"
            " WHERE name ILIKE '%billing%' OR description ILIKE '%billing%'",
        )
        assert "ix_jobs_name_trgm" in search and "ix_jobs_description_trgm" in search, search
        assert "Seq Scan" not in search, search


async def test_the_summary_counts_and_digests_as_its_two_queries(sessionmaker, fleet):
    """The front page reads the counts and the digest in one pass: the same counts as
    status_counts, the same digest as status_digest (which /ui/digest answers: a page that
    embedded another would reload forever), and the tags of every job."""
    async with sessionmaker() as session:
        summary = await status_summary(session)
        assert summary == (await status_counts(session), await status_digest(session))
        assert await all_tags(session) == ["db", "fleet"]
        await session.execute(
            update(Job).where(Job.name == NAMES[3]).values(status_changed_at=datetime.now(UTC))
        )
        await session.execute(delete(Job).where(Job.name == NAMES[4]))
        await session.commit()
        changed = await status_summary(session)
        assert changed[1] == await status_digest(session) != summary[1]
        assert sum(changed[0].values()) == JOBS - 1
