"""The `backup-monitor` command: serve, scan, check, db upgrade, jobs, tokens, notify test, demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from service.scanner.scanner import ScanReport
    from service.settings import Settings

# Start-up speed: this module imports the standard library only, so that `--help` and a wrong
# command line answer at once. A command imports the modules it needs when it runs (the imports
# inside the functions below, each marked "lazy"); the application, the database, the scanner,
# alembic or the notification transports are imported only by the commands that use them.
# tests/integration/test_cli_startup.py checks that `--help` imports none of them.

logger = logging.getLogger(__name__)

T = TypeVar("T")
NAGIOS_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
MAX_PROBLEMS_SHOWN = 50


class CliError(Exception):
    """A failure of the command itself (a job or a channel it cannot find, a scan that failed)
    to report as one line on stderr, with an exit code; start-up's are StartupErrors."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from service.cli.demo import browse_host
    from service.db.errors import describe_error
    from service.runtime.app import create_app
    from service.runtime.server import run_server
    from service.runtime.startup import prepare_to_serve

    ready = prepare_to_serve(settings, args.host, insecure=args.insecure_no_auth)
    app = create_app(settings, open_access=ready.open_access, channels=ready.channels)
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise pause the event loop for tens of milliseconds during scans.
    gc.collect()
    gc.freeze()

    def listening() -> None:
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # uvloop, asyncio
        logger.info("serving", extra={"host": args.host, "port": args.port, "loop": loop})
        base = f"http://{browse_host(args.host)}:{args.port}"
        print(f"backup-monitor: the dashboard is at {base}/ (API: {base}/api/docs)", flush=True)

    try:
        # SIGTERM and SIGINT make a graceful stop: no new requests, the running scan finishes
        # its current job, then the scheduler and the engine are closed.
        run_server(app, args.host, args.port, settings, on_listening=listening)
    except OSError as exc:
        raise CliError(f"cannot serve on {args.host}:{args.port}: {describe_error(exc)}") from exc
    return 0


def cmd_db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from service.runtime.startup import safe_url, upgrade_database

    upgrade_database(settings)
    print(f"database {safe_url(settings.database_url)} is at the latest schema")
    return 0


def cmd_jobs_apply(settings: Settings, args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from service.runtime.startup import apply_file, upgrade_database

    # A dry run writes nothing: not even the migrations.
    if settings.auto_migrate and not args.dry_run:
        upgrade_database(settings)
    print(apply_file(settings, args.file, prune=args.prune, dry_run=args.dry_run))
    return 0


def read_jobs_step(settings: Settings, what: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run a read-only `work(session)`: no migration, nothing written."""
    # lazy: imported when the command runs (start-up speed)
    import asyncio

    from service.runtime.startup import database_step, schema_checked, with_session

    checked = schema_checked(settings, what, work)
    return database_step(settings, what, lambda: asyncio.run(with_session(settings, checked)))


def cmd_jobs_list(settings: Settings, _args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from sqlalchemy import select

    from service.core.visible import visible
    from service.db.models import Job

    async def work(session: Any) -> list[Any]:
        query = select(Job.name, Job.status, Job.paused, Job.source, Job.schedule)
        return list((await session.execute(query.order_by(Job.name))).all())

    rows = [("NAME", "STATUS", "SOURCE", "SCHEDULE")]
    for job in read_jobs_step(settings, "list the jobs", work):
        status = "paused" if job.paused else job.status
        rows.append(
            (visible(job.name), status, source_text(job.source), schedule_text(job.schedule))
        )
    if len(rows) == 1:
        print("(no jobs declared: see `backup-monitor jobs apply`)")
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def source_text(source: dict[str, Any] | None) -> str:
    """A stored source as `KIND LOCATION` (`heartbeat` for a job without one), escaped."""
    # lazy: imported when the command runs (start-up speed)
    from pydantic import TypeAdapter, ValidationError

    from service.core.jobspec import Source
    from service.core.visible import visible

    if source is None:
        return "heartbeat (pings only)"
    kind = str(source.get("type", "local"))
    try:
        location = TypeAdapter(Source).validate_python(source).location()
    except ValidationError:
        location = "(unreadable declaration)"
    return visible(f"{kind} {location}")


def schedule_text(schedule: dict[str, Any]) -> str:
    # lazy: imported when the command runs (start-up speed)
    from service.core.units import format_duration
    from service.core.visible import visible

    if schedule.get("every") is not None:
        return f"every {format_duration(int(schedule['every']))}"
    zone = f" ({schedule['timezone']})" if schedule.get("timezone") else ""
    return visible(f"cron {schedule.get('cron')}{zone}")


def cmd_jobs_export(settings: Settings, args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from service.config.jobsfile import export_jobs

    text = read_jobs_step(settings, "export the jobs", export_jobs)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"jobs written to {args.output}", file=sys.stderr)
    return 0


def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    import asyncio

    from service.cli.check import job_names, unknown_job
    from service.core.rules import worst_status
    from service.runtime.startup import schema_checked, upgrade_database, with_session
    from service.scanner.scanner import run_scanner

    if settings.auto_migrate:
        upgrade_database(settings)

    async def work(session: Any) -> ScanReport:
        names = [args.job] if args.job else None
        if args.job:
            # Before the scan starts: a name no job has records no scan run.
            known = await job_names(session)
            if args.job not in known:
                raise CliError(unknown_job(args.job, known), code=NAGIOS_CODES["unknown"])
        return await run_scanner(session, settings.scan_options, trigger="cli", names=names)

    checked = work if settings.auto_migrate else schema_checked(settings, "scan", work)
    report = scan_step(settings, lambda: asyncio.run(with_session(settings, checked)))
    # No job at all is no "OK": a check run against the wrong database must not pass (as `check`).
    worst = worst_status(job.status for job in report.jobs) if report.jobs else "unknown"
    if args.format == "json":
        document = {"status": worst, "jobs": [job.as_dict() for job in report.jobs]}
        print(json.dumps(document, indent=2))
    else:
        print(render_table(report))
    return NAGIOS_CODES[worst]


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """The Nagios/Icinga check. By default it judges from the database alone: the statuses
    the service's scans and pings left, read in one query after a catalog lookup (a database
    never migrated is told as such), nothing migrated or written (cheap
    enough to run every minute, and harmless on a replica). `--scan` scans the selected jobs
    first (a scan run is recorded, as `scan` does)."""
    # lazy: imported when the command runs (start-up speed)
    import asyncio

    from service.cli.check import (
        JobState,
        job_names,
        judged_too_long_ago,
        nagios_output,
        read_states,
        unknown_job,
    )
    from service.core.visible import quote
    from service.runtime.startup import schema_checked, upgrade_database, with_session

    if args.max_age is not None and not args.max_age > 0:
        raise CliError("--max-age: a number of minutes above 0", code=NAGIOS_CODES["unknown"])
    migrated = args.scan and settings.auto_migrate
    if migrated:
        upgrade_database(settings)

    async def work(session: Any) -> list[JobState]:
        if args.job is not None:
            known = await job_names(session)
            if args.job not in known:
                raise CliError(unknown_job(args.job, known), code=NAGIOS_CODES["unknown"])
        states = await read_states(session, name=args.job, tag=args.tag)
        if args.scan and states:
            # lazy: imported when the command runs (start-up speed)
            from service.scanner.scanner import run_scanner

            names = [state.name for state in states]
            await run_scanner(session, settings.scan_options, trigger="check", names=names)
            states = await read_states(session, name=args.job, tag=args.tag)
        return states

    checked = work if migrated else schema_checked(settings, "check", work)
    states = scan_step(settings, lambda: asyncio.run(with_session(settings, checked)), "check")
    if not states:
        what = f"no job has the tag {quote(args.tag)}" if args.tag else "no jobs declared"
        raise CliError(what, code=NAGIOS_CODES["unknown"])
    now = datetime.now(UTC)
    if args.max_age is not None:
        states = judged_too_long_ago(states, now, timedelta(minutes=args.max_age))
    code, text = nagios_output(states, now)
    print(text)
    return code


def scan_step(settings: Settings, step: Callable[[], T], what: str = "scan") -> T:
    """Run the scan; only a database that is unavailable (the one classifier's word: down,
    unreachable, locked, full) is blamed on the database. Anything else, a statement the
    database refused included, is a bug and says so, with its traceback in the log."""
    # lazy: imported when the command runs (start-up speed)
    from service.db.errors import database_unavailable, describe_database_error, describe_error
    from service.runtime.startup import StartupError, safe_url

    try:
        return step()
    except (KeyboardInterrupt, CliError, StartupError):
        raise
    except Exception as exc:
        if database_unavailable(exc):
            where = safe_url(settings.database_url)
            error = describe_database_error(exc, settings.database_url)
            raise CliError(f"cannot {what} on the database {where}: {error}") from exc
        logger.error(f"{what} failed", exc_info=exc)
        recorded = "; the scan is recorded as failed" if what == "scan" else ""
        raise CliError(
            f"the {what} failed: internal error: {describe_error(exc)} (a bug: the traceback is "
            f"above{recorded})"
        ) from exc


def _newest(latest: dict[str, Any] | None) -> str:
    # lazy: imported when the command runs (start-up speed)
    from service.core.visible import visible

    if latest is None:
        return "-"
    writing = " (being written)" if latest.get("being_written") else ""
    return visible(latest["path"]) + writing


def render_table(report: ScanReport) -> str:
    """The scan as a table for a terminal: file names (alone, or quoted by a reason) show their
    control characters as escapes, so none can repaint the terminal or add a row."""
    # lazy: imported when the command runs (start-up speed)
    from service.core.units import format_size
    from service.core.visible import visible

    rows = [("STATUS", "JOB", "NEWEST", "SIZE", "COUNT")]
    for job in report.jobs:
        latest = job.latest_artifact
        rows.append((
            job.status.upper(), visible(job.name), _newest(latest),
            format_size(latest["size"]) if latest else "-", str(job.artifact_count),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index:
            job = report.jobs[index - 1]
            lines.extend(f"    - {visible(reason['message'])}" for reason in job.reasons)
    if not report.jobs:
        lines.append("(no jobs declared: see `backup-monitor jobs apply`)")
    return "\n".join(line.rstrip() for line in lines)


def run_tokens(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    # lazy: imported when the command runs (start-up speed)
    import asyncio

    from service.runtime.startup import database_step, upgrade_database, with_session
    from service.store.tokens import TokenError

    if settings.auto_migrate:
        upgrade_database(settings)
    try:
        return database_step(
            settings, "manage the tokens", lambda: asyncio.run(with_session(settings, work))
        )
    except TokenError as exc:
        raise CliError(str(exc)) from None


def cmd_tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from service.core.visible import quote
    from service.store.tokens import create_token

    token = run_tokens(
        settings, lambda session: create_token(session, args.name, read_only=args.read_only)
    )
    access = "read-only" if args.read_only else "read-write"
    print(token)
    print(
        f"token {quote(args.name)} ({access}) created; it is shown only this once: store it now",
        file=sys.stderr,
    )
    return 0


def cmd_tokens_list(settings: Settings, _args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from service.core.visible import visible
    from service.store.tokens import list_tokens

    tokens = run_tokens(settings, list_tokens)
    if not tokens:
        print("(no tokens: see `backup-monitor tokens create`)")
    width = max((len(visible(token.name)) for token in tokens), default=0)
    for token in tokens:
        access = "read-only" if token.read_only else "read-write"
        created = f"{token.created_at:%Y-%m-%d %H:%M} UTC"
        print(f"{visible(token.name).ljust(width)}  {access.ljust(10)}  created {created}")
    if settings.api_token is not None:
        print("(plus API_TOKEN from the environment, read-write)")
    return 0


def cmd_tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from service.core.visible import quote
    from service.store.tokens import revoke_token

    run_tokens(settings, lambda session: revoke_token(session, args.name))
    print(f"token {quote(args.name)} revoked")
    return 0


def cmd_notify_test(settings: Settings, args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    import asyncio

    from service.core.visible import quote, visible
    from service.notify.config import ChannelsFileError, load_channels
    from service.notify.notice import test_notice
    from service.notify.transports import DeliveryError, deliver

    if settings.channels_file is None:
        raise CliError("no channels: set CHANNELS_FILE to a channels file")
    try:
        channels = load_channels(settings.channels_file)
    except ChannelsFileError as exc:
        raise CliError(str(exc)) from None
    channel = channels.channels.get(args.channel)
    if channel is None:
        known = ", ".join(sorted(channels.channels)) or "none"
        raise CliError(
            f"no channel named {quote(args.channel)} in {settings.channels_file} "
            f"(channels: {known})"
        )
    try:
        outcome = asyncio.run(deliver(channel, test_notice(args.channel, datetime.now(UTC))))
    except DeliveryError as exc:
        retry = "" if exc.permanent else " (may succeed later)"
        # What the receiver answered is quoted: shown escaped, as in every terminal output.
        raise CliError(f"channel {quote(args.channel)}: {visible(str(exc))}{retry}") from None
    print(f"test message sent through {quote(args.channel)}: {visible(outcome)}")
    return 0


def cmd_import_healthchecks(settings: Settings, args: argparse.Namespace) -> int:
    """One job per Healthchecks check, its ping URL's UUID kept as the job's ping key; run it
    again to update (idempotent)."""
    # lazy: imported when the command runs (start-up speed)
    import asyncio

    from service.config.healthchecks import fetch_checks, import_checks, jobs_of_checks
    from service.core.visible import visible
    from service.runtime.startup import database_step, upgrade_database, with_session

    if args.file is not None:
        source = args.file
        try:
            document = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CliError(f"cannot read {args.file}: {visible(str(exc))}") from None
    else:
        if not args.api_key:
            raise CliError(
                "--url needs --api-key (a read-write key: read-only ones hide ping URLs)"
            )
        source = args.url
        try:
            document = asyncio.run(fetch_checks(args.url, args.api_key))
        except (OSError, ValueError, TimeoutError) as exc:
            why = visible(str(exc) or type(exc).__name__)
            raise CliError(f"cannot fetch the checks: {why}") from None
    checks = jobs_of_checks(document, source)
    if settings.auto_migrate:
        upgrade_database(settings)

    async def work(session: Any) -> str:
        result = await import_checks(session, checks, datetime.now(UTC), source)
        return result.summary()

    summary = database_step(
        settings, "import the checks", lambda: asyncio.run(with_session(settings, work))
    )
    print(summary)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    # lazy: imported when the command runs (start-up speed)
    from service.cli import demo

    sandbox = demo.start(settings, Path(args.dir), datetime.now(UTC))
    print(demo.banner(sandbox, args.host, args.port), flush=True)
    return cmd_serve(sandbox.settings, args)


def add_insecure_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow an API without tokens on a non-loopback address",
    )


# The settings' defaults, written out: `--help` must not import the settings (pydantic) to say
# them; tests/unit/test_settings.py keeps them equal.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
HOST_HELP = f"address to listen on (default: the HOST setting, else {DEFAULT_HOST})"
PORT_HELP = f"port to listen on (default: the PORT setting, else {DEFAULT_PORT})"


def package_version() -> str:
    """This installation's version, from the package's metadata."""
    # lazy: only `--version` needs it (start-up speed)
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("backup-monitor")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class VersionAction(argparse.Action):
    """`--version`: the package's version, read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        print(f"backup-monitor {package_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backup-monitor", description="Watch backup files: inventory, status, history."
    )
    parser.add_argument("--version", action=VersionAction, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="migrate, apply JOBS_FILE, serve HTTP and scan")
    serve.add_argument("--host", default=None, help=HOST_HELP)
    serve.add_argument("--port", type=int, default=None, help=PORT_HELP)
    add_insecure_flag(serve)
    serve.set_defaults(handler=cmd_serve)

    scan = commands.add_parser("scan", help="scan now and print the results (Nagios exit code)")
    scan.add_argument("--job", help="scan only this job")
    scan.add_argument("--format", choices=("table", "json"), default="table")
    scan.set_defaults(handler=cmd_scan)

    # A command of its own rather than `scan --format nagios`: a check runs every minute and
    # must be cheap and harmless, so it reads the stored statuses and writes nothing by
    # default; `scan` always scans and records a scan run.
    check = commands.add_parser(
        "check", help="Nagios/Icinga check: summary, bad jobs, perfdata (reads, never writes)"
    )
    check.add_argument("--job", help="check only this job")
    check.add_argument("--tag", help="check only the jobs with this tag")
    check.add_argument(
        "--scan", action="store_true", help="scan the jobs first (writes a scan run)"
    )
    check.add_argument(
        "--max-age",
        type=float,
        metavar="MINUTES",
        help="a job not judged for this long (the service stopped?) is UNKNOWN",
    )
    check.set_defaults(handler=cmd_check)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_commands.add_parser("upgrade", help="apply the migrations").set_defaults(
        handler=cmd_db_upgrade
    )

    jobs = commands.add_parser("jobs", help="declarative jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    apply = jobs_commands.add_parser("apply", help="create or update the jobs of a YAML file")
    apply.add_argument("file")
    apply.add_argument(
        "--prune",
        action="store_true",
        help="delete jobs not in the file (and end its silences it no longer declares)",
    )
    apply.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be created, changed (which fields) or deleted; write nothing",
    )
    apply.set_defaults(handler=cmd_jobs_apply)
    jobs_commands.add_parser("list", help="the jobs: name, status, source, schedule").set_defaults(
        handler=cmd_jobs_list
    )
    export = jobs_commands.add_parser(
        "export", help="the database's jobs as a jobs file (YAML) that `jobs apply` takes"
    )
    export.add_argument("-o", "--output", help="write to this file (default: standard output)")
    export.set_defaults(handler=cmd_jobs_export)

    imports = commands.add_parser("import", help="import jobs from another monitor")
    import_commands = imports.add_subparsers(
        dest="import_command", required=True, metavar="COMMAND"
    )
    healthchecks = import_commands.add_parser(
        "healthchecks", help="Healthchecks checks, their ping URLs kept (idempotent)"
    )
    origin = healthchecks.add_mutually_exclusive_group(required=True)
    origin.add_argument("--file", help="the JSON of GET /api/v3/checks/ (read-write key)")
    origin.add_argument("--url", help="the Healthchecks instance, e.g. https://healthchecks.io")
    healthchecks.add_argument("--api-key", help="the project's read-write API key (with --url)")
    healthchecks.set_defaults(handler=cmd_import_healthchecks)

    tokens = commands.add_parser("tokens", help="API tokens")
    tokens_commands = tokens.add_subparsers(dest="tokens_command", required=True, metavar="COMMAND")
    create = tokens_commands.add_parser("create", help="create a token and print it (only once)")
    create.add_argument("name")
    create.add_argument("--read-only", action="store_true", help="may read, not change")
    create.set_defaults(handler=cmd_tokens_create)
    tokens_commands.add_parser("list", help="list the tokens (never their value)").set_defaults(
        handler=cmd_tokens_list
    )
    revoke = tokens_commands.add_parser("revoke", help="revoke a token at once")
    revoke.add_argument("name")
    revoke.set_defaults(handler=cmd_tokens_revoke)

    notify = commands.add_parser("notify", help="notification channels")
    notify_commands = notify.add_subparsers(dest="notify_command", required=True, metavar="COMMAND")
    notify_test = notify_commands.add_parser("test", help="send a test message through a channel")
    notify_test.add_argument("channel", help="a channel of CHANNELS_FILE")
    notify_test.set_defaults(handler=cmd_notify_test)

    demo = commands.add_parser("demo", help="a sandbox with a job in every status, served")
    demo.add_argument("--dir", default="demo-backups", help="where to build the sandbox")
    demo.add_argument("--host", default=None, help=HOST_HELP)
    demo.add_argument("--port", type=int, default=None, help=PORT_HELP)
    add_insecure_flag(demo)
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `scan` and `check` are Nagios checks: when the check itself cannot run, the answer is
    # UNKNOWN (3); `check` says so on stdout too, the line Nagios shows.
    nagios = args.command in ("scan", "check")
    cannot_run = NAGIOS_CODES["unknown"] if nagios else None
    # lazy: what every command needs, imported once the command line is known (start-up speed)
    from service.config.yamlfile import FileProblems
    from service.core.visible import visible
    from service.logs import configure_logging
    from service.runtime.startup import EXIT_USAGE, StartupError
    from service.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"backup-monitor: {exc}", file=sys.stderr)
        return cannot_run or EXIT_USAGE
    configure_logging(settings.log_level, settings.log_format)
    if getattr(args, "host", None) is None and hasattr(args, "host"):
        args.host = settings.host
    if getattr(args, "port", None) is None and hasattr(args, "port"):
        args.port = settings.port
    try:
        code: int = args.handler(settings, args)
        return code
    except FileProblems as exc:
        print(f"backup-monitor: {exc.path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        # A file of 10 000 broken jobs is told in a screenful, not in 10 000 lines.
        for problem in exc.problems[:MAX_PROBLEMS_SHOWN]:
            print(f"  - {visible(problem)}", file=sys.stderr)
        if len(exc.problems) > MAX_PROBLEMS_SHOWN:
            print(f"  - ... and {len(exc.problems) - MAX_PROBLEMS_SHOWN} more", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return 1
    except (CliError, StartupError) as exc:
        if args.command == "check":
            print(f"UNKNOWN - {visible(str(exc))}")
        print(f"backup-monitor: {exc}", file=sys.stderr)
        return cannot_run or exc.code
    except KeyboardInterrupt:
        return 130
