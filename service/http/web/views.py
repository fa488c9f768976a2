"""The dashboard pages: `/` (every job, worst first) and `/jobs/{job}` (one job in detail).

Server-rendered HTML, with no asset from elsewhere. Access uses the API's tokens: when a token
is needed, `/login` takes one and keeps it in an HttpOnly, SameSite=Strict cookie; read-only
tokens may look, read-write tokens also get the pause / resume / scan buttons.

Forms (CSRF): a sibling site (another port of the same host, a sibling subdomain) can plant
cookies, so a token that only had to match a cookie (double submit) could be forged. Every form
carries a token bound to the browser's session instead: an HMAC, with a server secret (see
form_secret), of the login cookie and a random id cookie that each login and logout replace
(before login, of that id alone). A sibling site can neither read the login cookie nor compute
the HMAC; a form from before a logout is void after the next login. On top of that, a form post
whose `Origin` is another origin than this site's (its Host, or PUBLIC_URL), or whose
`Sec-Fetch-Site` says it came from another site, is refused (403). A post without `Origin` (old
browsers) is judged by its token alone: before login that is no protection against a planted id
(the server hands out the token of any id it is shown), after login it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast, get_args
from urllib.parse import quote as quote_url

import jinja2
import markupsafe
from aiohttp import web
from pydantic import BaseModel, ValidationError
from yarl import URL

from service.core.jobspec import Schedule
from service.core.rules import next_deadline
from service.core.units import format_duration, format_size
from service.core.visible import quote, visible, visible_lines
from service.db.models import MAX_INT_ID, Job
from service.http.api.badges import badge_paths
from service.http.api.errors import ApiError
from service.http.api.openapi import operation
from service.http.api.schemas import JobsQuery, TokenCreate
from service.http.auth import (
    access_for,
    check_origin,
    grant_for,
    public_origin,
    secure,
    shows_ping_keys,
)
from service.http.web.charts import (
    ChartPoint,
    duration_chart,
    missing_slots,
    size_chart,
    sparkline,
)
from service.http.web.icons import IconStatus, favicon_ico, status_svg, worst_status
from service.http.web.paging import JOBS_PER_PAGE, pager, requested_page
from service.http.web.queries import (
    all_tags,
    chart_artifacts,
    flagged_paths,
    has_size_reason,
    jobs_worst_first,
    recent_sizes,
    status_digest,
    status_summary,
)
from service.http.web.words import (
    artifact_name,
    artifact_words,
    as_of,
    describe_cron,
    describe_deadline,
    describe_declaration,
    describe_details,
    describe_held,
    describe_notify,
    exact_duration,
    relative_time,
    retention_rows,
    verification_mark,
)
from service.http.wellformed import read_form
from service.notify import silences as silence_rules
from service.runtime.keys import channels_key, sessionmaker_key, settings_key
from service.settings import Settings
from service.store import verifications
from service.store.jobs import (
    Action,
    JobFilter,
    act_on_job,
    artifacts_page,
    find_job,
    held_notice,
    history_page,
    notice_rule,
    notifications_page,
    possible_ref,
)
from service.store.pings import Run, recent_runs
from service.store.restore_points import job_slots, job_spec
from service.store.secrets import BADGES, shared_secret
from service.store.silences import load_current, silences_page, view_of
from service.store.tokens import (
    Access,
    TokenError,
    TokenInfo,
    issue_token,
    list_tokens,
    revoke_token_id,
    same_secret,
    token_hashes,
)

routes = web.RouteTableDef()

TOKEN_COOKIE = "bm_token"  # noqa: S105 (a cookie name)
CSRF_COOKIE = "bm_csrf"  # a random id for the browser, the session before any login
SESSION_DAYS = 30
ARTIFACTS_PER_PAGE = 50
RUNS_SHOWN = 20
NOTICES_SHOWN = 10
# A symbol beside every status word: the status is never told by colour alone.
SILENCES_SHOWN = 100
SYMBOLS = {
    "ok": "✔",
    "warning": "▲",
    "critical": "✖",
    "unknown": "?",
    "pending": "…",
    "paused": "‖",
}

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    # Autoescape keeps markup out; this shows control and bidi characters (a file name's
    # right-to-left override) as escapes. Markup, already made safe, is left as it is.
    finalize=lambda value: visible(value) if type(value) is str else value,
)


def _lines(text: str) -> markupsafe.Markup:
    """A text meant to have lines (an operator's `description: |`, a script's output sent with
    a ping): its line breaks and tabs stay (shown by `white-space: pre-wrap`), everything else
    is escaped as `finalize` does; the result is Markup, so `finalize` leaves it as it is."""
    return markupsafe.escape(visible_lines(text.strip("\r\n")))


templates.filters["size"] = format_size
templates.filters["lines"] = _lines
templates.globals["symbols"] = SYMBOLS


def _page(
    summary: str, **extra: Any
) -> Callable[[Callable[[web.Request], Awaitable[web.Response]]], Any]:
    extra.setdefault("media_type", "text/html")
    return operation(summary=summary, tag="dashboard", access="page", **extra)


# --- access -----------------------------------------------------------------------------------


async def viewer(request: web.Request) -> Access | None:
    """The access of whoever looks (None: they must log in first)."""
    try:
        return await access_for(request.app, request.cookies.get(TOKEN_COOKIE) or None, request)
    except ApiError:
        return None


async def require_viewer(request: web.Request) -> Access:
    access = await viewer(request)
    if access is None:
        raise web.HTTPSeeOther(f"/login?next={quote_url(request.path_qs, safe='')}")
    return access


def known_browser_id(request: web.Request) -> str:
    """The browser's random id (CSRF_COOKIE), or "" when it has none (or not one of ours)."""
    known = request.cookies.get(CSRF_COOKIE, "")
    return known if len(known) == 32 and known.isalnum() else ""


def set_browser_id(request: web.Request, response: web.StreamResponse) -> str:
    """Give the browser a new random id: on its first page, and at each login and logout (so
    the forms of one login die with it)."""
    browser = secrets.token_hex(16)
    response.set_cookie(
        CSRF_COOKIE, browser, httponly=True, samesite="Strict", secure=secure(request), path="/"
    )
    return browser


def form_secret(settings: Settings, stored_token_hashes: Sequence[str]) -> bytes:
    """The server secret of the form tokens: what only the servers know and every replica shares
    (a form rendered by one replica may be posted to another): the hashes of the tokens in the
    database and the tokens from the environment. Creating or revoking a token changes it (open
    forms then ask for a reload). Not DATABASE_URL: replicas may spell it differently (a pooler,
    another host name) and it is no secret. With no token at all (open access) nothing is
    secret: anyone may use the API then anyway, and only the Origin check protects the forms."""
    shared = list(stored_token_hashes)
    shared += [token.get_secret_value() for token in (settings.api_token, settings.metrics_token)
               if token is not None]  # fmt: skip
    return hashlib.sha256("\0".join(["backup-monitor forms", *shared]).encode()).digest()


async def request_form_secret(request: web.Request) -> bytes:
    async with request.app[sessionmaker_key]() as session:
        stored = await token_hashes(session)
    return form_secret(request.app[settings_key], stored)


def form_token(secret: bytes, session: str) -> str:
    """The CSRF token of a session (see session_of)."""
    message = b"form\0" + session.encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def session_of(request: web.Request, browser: str) -> str:
    """What the forms of this browser are bound to: its login cookie (which another site cannot
    read) with the random id that login set, else that id alone."""
    login = request.cookies.get(TOKEN_COOKIE)
    return f"token:{login}\0browser:{browser}" if login else f"browser:{browser}"


async def checked_form(request: web.Request) -> dict[str, str]:
    """The posted form, once it came from this site's page: its Origin is this site's and its
    CSRF token is the one of this browser's session (403 otherwise)."""
    refusal = check_origin(request)
    if refusal is not None:
        raise ApiError(403, "forbidden", f"this form {refusal}; forms are taken from this site")
    form = await read_form(request)
    sent = form.get("csrf")
    browser = known_browser_id(request)
    expected = form_token(await request_form_secret(request), session_of(request, browser))
    if not isinstance(sent, str) or not browser or not same_secret(sent, expected):
        raise ApiError(
            403, "forbidden", "this form has expired or came from another site; reload the page"
        )
    return {key: value for key, value in form.items() if isinstance(value, str)}


async def render(
    request: web.Request, template: str, status: int = 200, **context: Any
) -> web.Response:
    """The page, rendered off the event loop (2 000 rows take ~0.1 s of CPU)."""
    response = web.Response(status=status, content_type="text/html")
    browser = known_browser_id(request) or set_browser_id(request, response)
    csrf = form_token(await request_form_secret(request), session_of(request, browser))
    page = templates.get_template(template)
    response.text = await asyncio.to_thread(page.render, csrf=csrf, **context)
    response.headers["Cache-Control"] = "no-store"
    return response


def safe_next(target: str | None) -> str:
    """Only a path of this site: no scheme, no host, no `//` or `/\\`, no control character
    (a tab in `/\t/evil.example` would otherwise vanish on its way into the Location)."""
    if not target or any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return "/"
    url = URL(target)
    if url.scheme or url.host or not target.startswith("/") or target[1:2] in ("/", "\\"):
        return "/"
    return str(url)


# --- pages ------------------------------------------------------------------------------------


def known_ref(request: web.Request) -> str:
    """The `{job}` of the path; 404 at once for what cannot be a job's id or name."""
    ref = request.match_info["job"]
    if not possible_ref(ref):
        raise web.HTTPNotFound(text=f"no job {quote(ref)}")
    return ref


def page_filter(request: web.Request) -> JobFilter:
    """The dashboard's filters, validated like the API's; a bad one is dropped, not an error."""
    wanted = {key: request.query[key] for key in ("status", "tag", "q") if request.query.get(key)}
    valid = {}
    for key, value in wanted.items():
        try:
            JobsQuery.model_validate({key: value})
        except ValidationError:
            continue
        valid[key] = value
    return JobFilter(**valid)


def job_row(job: Any, sizes: list[int], now: datetime) -> dict[str, Any]:
    """A job (ORM object or dashboard row) as a row of the table."""
    latest = job.latest_artifact
    mtime = datetime.fromisoformat(latest["mtime"]) if latest else None
    kind = (getattr(job, "source", None) or {}).get("type")
    return {
        "job": job,
        "latest": latest,
        "latest_name": artifact_name(latest["path"], latest.get("details"), kind) if latest else "",
        "age": relative_time(mtime, now),
        "deadline": describe_deadline(
            job.next_check_at, now, bool(latest and latest.get("being_written"))
        ),
        # The stored reasons are facts at the judgement's time: say which (an age in them is
        # that time's, never now's).
        "as_of": as_of(job.checked_at, now),
        "spark": sparkline(sizes),
    }


def expected_missing(job: Job, points: Sequence[ChartPoint], now: datetime) -> list[datetime]:
    """The chart's missing slots, by the job's own deadline rule (none while it is paused)."""
    if job.paused or not points:
        return []
    schedule = Schedule.model_validate(job.schedule)
    present = [point.mtime for point in points if point.mtime <= now]
    return missing_slots(
        lambda after: next_deadline(schedule, job.grace, after),
        timedelta(seconds=job.grace),
        present,
        now,
    )


def size_thresholds(rules: dict[str, Any] | None) -> list[tuple[str, int]]:
    """The size rules the chart draws as lines: (label, bytes)."""
    rules = rules or {}
    return [(label, rules[key]) for key, label in (("min_size", "min"), ("max_size", "max"))
            if rules.get(key) is not None]  # fmt: skip


def run_points(runs: Sequence[Run]) -> list[ChartPoint]:
    """Finished runs with a duration, oldest first, for the duration chart (failures crossed)."""
    return sorted(
        (
            ChartPoint(run.finished_at, int(run.duration), run.outcome, run.outcome == "fail")
            for run in runs
            if run.finished_at is not None and run.duration is not None
        ),
        key=lambda point: point.mtime,
    )


def last_ping(runs: Sequence[Run]) -> datetime | None:
    """The newest ping among the runs shown (a start, a finish or a log)."""
    moments = [m for run in runs for m in (run.started_at, run.finished_at) if m is not None]
    return max(moments, default=None)


def held_words(job: Job, now: datetime) -> str | None:
    """The job page's line on a notice held back (None: nothing held)."""
    hold = held_notice(job)
    if hold is None:
        return None
    rule = notice_rule(job.notify)
    return describe_held(hold, job.status, job.bad_since, job.status_changed_at, rule, now)


@routes.get("/")
@_page(
    "Dashboard: every job, worst first, 100 a page",
    description="Filters: `status`, `tag`, `q`; `page` (1-based; past the end: the last).",
    errors=(303,),
)  # fmt: skip
async def index(request: web.Request) -> web.Response:
    access = await require_viewer(request)
    where = page_filter(request)
    wanted = requested_page(request.query.get("page"))
    now = datetime.now(UTC)
    async with request.app[sessionmaker_key]() as session:
        jobs, total = await jobs_worst_first(
            session, where, limit=JOBS_PER_PAGE, offset=(wanted - 1) * JOBS_PER_PAGE
        )
        pages = pager(wanted, total, asdict(where))
        if not jobs and pages.page < wanted:  # past the end: the last page
            jobs, total = await jobs_worst_first(
                session, where, limit=JOBS_PER_PAGE, offset=(pages.page - 1) * JOBS_PER_PAGE
            )
        sizes = await recent_sizes(session, [job.id for job in jobs])
        counts, digest = await status_summary(session)
        tags = await all_tags(session)
        silences = await load_current(session, now)
    rows = [job_row(job, sizes.get(job.id, []), now) for job in jobs]
    lookup = silence_rules.SilenceLookup(silences, now)
    for row in rows:
        row["silenced_until"] = lookup.silenced_until(row["job"].name, row["job"].tags)
    return await render(
        request,
        "index.html",
        rows=rows,
        active_silences=sum(
            1 for silence in silences if silence_rules.window_now(silence, now) is not None
        ),
        counts=counts,
        icon=worst_status(counts),
        total=sum(counts.values()),
        pager=pages,
        where=where,
        tags=tags,
        digest=digest,
        access=access,
        logged_in=TOKEN_COOKIE in request.cookies,
    )


def reads_files(verify: dict[str, Any] | None) -> bool:
    """Whether a stored `verify` reads the job's files (archive or checksum)."""
    return bool(verify and (verify.get("archive") or verify.get("checksum") == "sidecar"))


@routes.get("/jobs/{job}")
@_page("Dashboard: one job, its chart, history and files", errors=(303, 404))
async def job_page(request: web.Request) -> web.Response:
    ref = known_ref(request)
    access = await require_viewer(request)
    before_text = request.query.get("before", "")
    before = int(before_text) if before_text.isdigit() and len(before_text) < 19 else None
    now = datetime.now(UTC)
    async with request.app[sessionmaker_key]() as session:
        job = await find_job(session, ref)
        if job is None:
            raise web.HTTPNotFound(text=f"no job {quote(ref)}")
        history, _ = await history_page(session, job.id, limit=50, before=None)
        files, next_before = await artifacts_page(
            session, job.id, limit=ARTIFACTS_PER_PAGE, before=before, include_gone=True
        )
        runs = await recent_runs(session, job.id, RUNS_SHOWN)
        notices, _ = await notifications_page(session, job.id, limit=NOTICES_SHOWN, before=None)
        checks = await verifications.results_of(session, [file.id for file in files])
        flagged = await flagged_paths(session, job.id)
        if job.latest_artifact and has_size_reason(job.reasons):
            flagged.add(job.latest_artifact["path"])
        points = [
            ChartPoint(a.mtime, a.size, a.path, a.path in flagged)
            for a in await chart_artifacts(session, job.id)
        ]
        digest = await status_digest(session)
        spec = job_spec(job)
        slots = await job_slots(session, job, spec, now) if spec is not None else ()
        silenced = silence_rules.covering(job.name, job.tags, await load_current(session, now), now)
    async with request.app[sessionmaker_key]() as session:  # its own: a lost race rolls back
        badge_secret = await shared_secret(session, BADGES)
    return await render(
        request,
        "job.html",
        badge=badge_paths(badge_secret, "job", job.name),
        origin=public_origin(request),
        silenced=silenced,
        job=job,
        icon=job.status,
        row=job_row(job, [], now),
        words=describe_declaration(job.source, job.schedule, job.grace, job.rules),
        chart=size_chart(
            points,
            thresholds=size_thresholds(job.rules),
            missing=expected_missing(job, points, now),
        )
        if job.source is not None
        else duration_chart(run_points(runs)),
        last_ping=last_ping(runs),
        retention=retention_rows(spec.retention if spec is not None else None, slots),
        retention_zone=spec.schedule.zone.key if spec is not None else "UTC",
        history=history,
        runs=runs,
        notices=notices,
        notify_words=describe_notify(job.notify, request.app[channels_key].defaults),
        channels_configured=bool(request.app[channels_key].channels),
        held=held_words(job, now),
        duration=format_duration,
        files=files,
        # A mark per file when the job reads its files (verify.archive or verify.checksum).
        verifies=bool(
            job.verify and (job.verify.get("archive") or job.verify.get("checksum") == "sidecar")
        ),
        checks=checks,
        verification_state=verifications.state_of,
        verification_mark=verification_mark,
        artifact_words=artifact_words(job.source),
        artifact_name=artifact_name,
        describe_details=describe_details,
        next_before=next_before,
        now=now,
        relative=relative_time,
        digest=digest,
        access=access,
        logged_in=TOKEN_COOKIE in request.cookies,
        # The API's rule: only a read-write viewer may see where to ping.
        ping_path=f"/ping/{job.ping_key}" if shows_ping_keys(access) else None,
    )


@routes.get("/silences")
@_page(
    "Dashboard: silences, active and upcoming first, then the recent expired ones",
    errors=(303,),
)  # fmt: skip
async def silences_view(request: web.Request) -> web.Response:
    access = await require_viewer(request)
    now = datetime.now(UTC)
    async with request.app[sessionmaker_key]() as session:
        rows, total = await silences_page(session, now, limit=SILENCES_SHOWN, offset=0)
        digest = await status_digest(session)
    views = [view_of(row, now) for row in rows]
    return await render(
        request,
        "silences.html",
        groups=[
            (state, title, [view for view in views if view.state == state])
            for state, title in (
                ("active", "Active now"),
                ("upcoming", "Upcoming"),
                ("expired", "Recently expired"),
            )
        ],
        total=total,
        shown=len(views),
        now=now,
        relative=relative_time,
        describe_cron=describe_cron,
        duration=exact_duration,
        digest=digest,
        access=access,
        logged_in=TOKEN_COOKIE in request.cookies,
    )


@routes.post(r"/jobs/{job}/{action:pause|resume|scan}")
@_page(
    "Dashboard: pause, resume or scan a job (form, read-write)", status=303,
    errors=(400, 403, 404),
)  # fmt: skip
async def job_action(request: web.Request) -> web.Response:
    known_ref(request)
    access = await require_viewer(request)
    await checked_form(request)
    if access != "read-write":
        raise ApiError(403, "forbidden", "this token may only look; log in with a read-write one")
    ref, action = request.match_info["job"], request.match_info["action"]
    job = await act_on_job(
        request.app[sessionmaker_key], ref, cast(Action, action), datetime.now(UTC),
        request.app[settings_key].scan_options,
    )  # fmt: skip
    if job is None:
        raise web.HTTPNotFound(text=f"no job {quote(ref)}")
    raise web.HTTPSeeOther(f"/jobs/{quote_url(job.name)}")


@routes.get("/ui/digest")
@_page(
    "Dashboard: a digest that changes when a status changes (the pages poll it)",
    media_type="application/json", errors=(401,),
)  # fmt: skip
async def digest(request: web.Request) -> web.Response:
    if await viewer(request) is None:
        raise ApiError(401, "unauthorized", "log in at /login")
    async with request.app[sessionmaker_key]() as session:
        value = await status_digest(session)
    return web.json_response({"digest": value}, headers={"Cache-Control": "no-store"})


class IconQuery(BaseModel):
    status: IconStatus = "none"


@routes.get("/favicon.svg")
@_page(
    "Dashboard: the tab's icon for a status (a shape and a colour)",
    media_type="image/svg+xml", query=IconQuery, errors=(422,),
)  # fmt: skip
async def favicon_svg(request: web.Request) -> web.Response:
    try:
        query = IconQuery.model_validate(dict(request.query))
    except ValidationError:
        raise ApiError(
            422, "validation_error", f"status: one of {', '.join(get_args(IconStatus))}"
        ) from None
    return web.Response(
        body=status_svg(query.status), content_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )  # fmt: skip


@routes.get("/favicon.ico")
@_page("Dashboard: an icon for clients that ask /favicon.ico", media_type="image/x-icon")
async def favicon(request: web.Request) -> web.Response:
    return web.Response(
        body=favicon_ico(), content_type="image/x-icon",
        headers={"Cache-Control": "public, max-age=86400"},
    )  # fmt: skip


# --- tokens -----------------------------------------------------------------------------------


async def require_writer(request: web.Request) -> Access:
    """A read-write viewer (the login form for nobody, 403 for a read-only token)."""
    access = await require_viewer(request)
    if access != "read-write":
        raise ApiError(
            403, "forbidden", "only a read-write token may manage tokens; log in with one"
        )
    return access


async def tokens_page(
    request: web.Request,
    status: int = 200,
    *,
    created: TokenInfo | None = None,
    token: str | None = None,
    first_token: bool = False,
    error: str | None = None,
    name: str = "",
) -> web.Response:
    """The tokens page; `token` (just made) is shown this once, never stored for later."""
    cookie = request.cookies.get(TOKEN_COOKIE) or None
    own_name = None
    if cookie is not None:
        with contextlib.suppress(ApiError):  # revoked meanwhile: no row is this session's
            own_name = (await grant_for(request.app, cookie)).name
    async with request.app[sessionmaker_key]() as session:
        tokens = await list_tokens(session)
    response = await render(
        request, "tokens.html", status=status, tokens=tokens, created=created, token=token,
        first_token=first_token, error=error, name=name, own_name=own_name,
        bootstrap=request.app[settings_key].api_token is not None, now=datetime.now(UTC),
        relative=relative_time, access="read-write", logged_in=TOKEN_COOKIE in request.cookies,
    )  # fmt: skip
    return response


@routes.get("/tokens")
@_page("Dashboard: API tokens (read-write sessions only)", errors=(303, 403))
async def tokens_view(request: web.Request) -> web.Response:
    await require_writer(request)
    return await tokens_page(request)


@routes.post("/tokens")
@_page(
    "Dashboard: create an API token (form, read-write); the page shows it once",
    errors=(303, 400, 403, 409, 422),
)  # fmt: skip
async def token_create(request: web.Request) -> web.Response:
    await require_writer(request)
    form = await checked_form(request)
    name = form.get("name", "").strip()
    try:
        body = TokenCreate.model_validate({"name": name, "access": form.get("access", "")})
    except ValidationError:
        return await tokens_page(
            request, 422, name=name,
            error="A name is letters, digits, '_', '.', '@' or '-' (at most 100), and the access "
            "read-only or read-write.",
        )  # fmt: skip
    async with request.app[sessionmaker_key]() as session:
        first = not await list_tokens(session)
        try:
            info, token = await issue_token(
                session, body.name, read_only=body.access == "read-only"
            )
        except TokenError as exc:
            return await tokens_page(request, 409, name=name, error=str(exc))
    return await tokens_page(
        request, created=info, token=token,
        first_token=first and request.app[settings_key].api_token is None,
    )  # fmt: skip


@routes.post(r"/tokens/{token_id:\d{1,19}}/revoke")
@_page(
    "Dashboard: revoke an API token (form, read-write); at once, the session's own too",
    status=303, errors=(400, 403, 404),
)  # fmt: skip
async def token_revoke(request: web.Request) -> web.Response:
    token_id = int(request.match_info["token_id"])
    if not 1 <= token_id <= MAX_INT_ID:  # no token has this id: 404 at once, like known_ref
        raise web.HTTPNotFound(text=f"no token {token_id}")
    await require_writer(request)
    await checked_form(request)
    async with request.app[sessionmaker_key]() as session:
        revoked = await revoke_token_id(session, token_id)
    if revoked is None:
        raise web.HTTPNotFound(text=f"no token {token_id}")
    raise web.HTTPSeeOther("/tokens")


# --- login ------------------------------------------------------------------------------------


@routes.get("/login")
@_page("Dashboard: the login form (a token)")
async def login_form(request: web.Request) -> web.Response:
    return await render(
        request, "login.html", next=safe_next(request.query.get("next")), error=None
    )


@routes.post("/login")
@_page("Dashboard: log in with a token (sets the session cookie)", status=303, errors=(401, 403))
async def login(request: web.Request) -> web.Response:
    form = await checked_form(request)
    token = form.get("token", "").strip()
    target = safe_next(form.get("next"))
    try:
        await access_for(request.app, token or None, request)
    except ApiError:
        return await render(
            request,
            "login.html",
            status=401,
            next=target,
            error="That token is not valid (unknown or revoked).",
        )
    response = web.HTTPSeeOther(target)
    if not token:  # open access: nothing to remember
        raise response
    response.set_cookie(
        TOKEN_COOKIE, token, httponly=True, samesite="Strict", secure=secure(request), path="/",
        max_age=SESSION_DAYS * 86400,
    )  # fmt: skip
    set_browser_id(request, response)  # this login's forms: none from before it
    raise response


@routes.post("/logout")
@_page("Dashboard: log out (forgets the session cookie)", status=303, errors=(400, 403))
async def logout(request: web.Request) -> web.Response:
    await checked_form(request)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(TOKEN_COOKIE, path="/")
    set_browser_id(request, response)  # the forms of the login that ends die with it
    raise response
