"""The `backup-monitor` command: serve, scan, db upgrade, jobs apply, demo."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.engine import make_url

from service import migrate
from service.app import create_app
from service.db import create_engine, create_sessionmaker, ping
from service.errors import describe_error
from service.jobsfile import JobsFileError, apply_jobs, load_jobs_file
from service.logs import configure_logging
from service.scanner import ScanReport, run_scanner
from service.scanner.rules import worst_status
from service.settings import Settings, SettingsError, load_settings
from service.units import format_size

logger = logging.getLogger(__name__)

T = TypeVar("T")
NAGIOS_CODES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def database_step(settings: Settings, what: str, step: Callable[[], T]) -> T:
    try:
        return step()
    except (KeyboardInterrupt, CliError, JobsFileError):
        raise
    except Exception as exc:
        where = safe_url(settings.database_url)
        raise CliError(f"cannot {what} on the database {where}: {describe_error(exc)}") from exc


def upgrade_database(settings: Settings) -> None:
    database_step(settings, "run the migrations", lambda: migrate.upgrade(settings.database_url))


async def with_session(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    engine = create_engine(settings.database_url)
    try:
        async with create_sessionmaker(engine)() as session:
            return await work(session)
    finally:
        await engine.dispose()


def apply_file(settings: Settings, path: str, *, prune: bool) -> str:
    specs = load_jobs_file(path, settings.scan_roots)  # validates everything before any write

    async def work(session: Any) -> str:
        return (await apply_jobs(session, specs, prune=prune)).summary()

    return database_step(
        settings, "apply the jobs", lambda: asyncio.run(with_session(settings, work))
    )


async def check_database(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await ping(engine, 15)
    finally:
        await engine.dispose()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    if settings.auto_migrate:
        upgrade_database(settings)
    else:  # fail now, with one line, rather than serve errors
        database_step(settings, "connect", lambda: asyncio.run(check_database(settings)))
    if settings.jobs_file is not None:
        summary = apply_file(settings, str(settings.jobs_file), prune=False)
        logger.info("jobs file applied", extra={"file": str(settings.jobs_file), "result": summary})
    app = create_app(settings)
    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # full passes, which otherwise pause the event loop for tens of milliseconds during scans.
    gc.collect()
    gc.freeze()
    logger.info("serving", extra={"host": args.host, "port": args.port})
    try:
        # run_app turns SIGTERM and SIGINT into a graceful stop: no new requests, the running
        # scan finishes its current job, then the scheduler and the engine are closed.
        web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=30)
    except OSError as exc:
        raise CliError(f"cannot serve on {args.host}:{args.port}: {describe_error(exc)}") from exc
    return 0


def cmd_db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    upgrade_database(settings)
    print(f"database {safe_url(settings.database_url)} is at the latest schema")
    return 0


def cmd_jobs_apply(settings: Settings, args: argparse.Namespace) -> int:
    if settings.auto_migrate:
        upgrade_database(settings)
    print(apply_file(settings, args.file, prune=args.prune))
    return 0


def cmd_scan(settings: Settings, args: argparse.Namespace) -> int:
    if settings.auto_migrate:
        upgrade_database(settings)

    async def work(session: Any) -> ScanReport:
        names = [args.job] if args.job else None
        report = await run_scanner(
            session,
            trigger="cli",
            names=names,
            scan_roots=settings.scan_roots,
            source_timeout=settings.source_timeout_seconds,
        )
        if args.job and not report.jobs:
            raise CliError(f"no job named {args.job!r}", code=NAGIOS_CODES["unknown"])
        return report

    report = database_step(settings, "scan", lambda: asyncio.run(with_session(settings, work)))
    worst = worst_status(job.status for job in report.jobs)
    if args.format == "json":
        document = {"status": worst, "jobs": [job.as_dict() for job in report.jobs]}
        print(json.dumps(document, indent=2))
    else:
        print(render_table(report))
    return NAGIOS_CODES[worst]


def render_table(report: ScanReport) -> str:
    rows = [("STATUS", "JOB", "NEWEST", "SIZE", "COUNT")]
    for job in report.jobs:
        latest = job.latest_artifact
        rows.append((
            job.status.upper(), job.name, latest["path"] if latest else "-",
            format_size(latest["size"]) if latest else "-", str(job.artifact_count),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index:
            job = report.jobs[index - 1]
            lines.extend(f"    - {reason['message']}" for reason in job.reasons)
    if not report.jobs:
        lines.append("(no jobs declared: see `backup-monitor jobs apply`)")
    return "\n".join(line.rstrip() for line in lines)


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from service import demo

    return demo.run(settings, args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="backup-monitor", description="Watch backup files: inventory, status, history."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="migrate, apply JOBS_FILE, serve HTTP and scan")
    serve.add_argument("--host", default=None, help="address to listen on (default: HOST)")
    serve.add_argument("--port", type=int, default=None, help="port (default: PORT)")
    serve.set_defaults(handler=cmd_serve)

    scan = commands.add_parser("scan", help="scan now and print the results (Nagios exit code)")
    scan.add_argument("--job", help="scan only this job")
    scan.add_argument("--format", choices=("table", "json"), default="table")
    scan.set_defaults(handler=cmd_scan)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_commands.add_parser("upgrade", help="apply the migrations").set_defaults(
        handler=cmd_db_upgrade
    )

    jobs = commands.add_parser("jobs", help="declarative jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    apply = jobs_commands.add_parser("apply", help="create or update the jobs of a YAML file")
    apply.add_argument("file")
    apply.add_argument("--prune", action="store_true", help="delete jobs not in the file")
    apply.set_defaults(handler=cmd_jobs_apply)

    demo = commands.add_parser("demo", help="a sandbox with a job in every status, served")
    demo.add_argument("--dir", default="demo-backups", help="where to build the sandbox")
    demo.add_argument("--host", default=None)
    demo.add_argument("--port", type=int, default=None)
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `scan` is a Nagios check: when the check itself cannot run, the answer is UNKNOWN (3).
    cannot_run = NAGIOS_CODES["unknown"] if args.command == "scan" else None
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
    except JobsFileError as exc:
        print(f"backup-monitor: {exc.path}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        print("nothing was written", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"backup-monitor: {exc}", file=sys.stderr)
        return cannot_run or exc.code
    except KeyboardInterrupt:
        return 130
