"""Helpers shared by the tests: the test environment (which PostgreSQL, CI or not, `missing()`),
declaring jobs, building backup trees, servers of their own. Fixtures live in conftest.py.

`missing()` is how a test says a tool or server is absent: a skip on a developer's machine, a
failure under CI=true (where `make test` installs everything).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg
import pytest
from aiohttp import web
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.cli.demo import write_file
from service.core.jobspec import parse_job
from service.db.models import Job
from service.settings import Settings
from service.store.jobs import new_job
from service.store.pings import PingWriter, Received

T = TypeVar("T")

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent
# Settings the tests decide (every setting of the service); whatever the calling shell has for
# them is left out.
OWNED_SETTINGS = {name.upper() for name in Settings.model_fields}


def missing(message: str) -> NoReturn:
    """Skip a test for want of something this machine lacks; under CI=true, fail instead (CI
    machines have every tool `make test` installs, so a skip there would hide a gap)."""
    if IN_CI:
        pytest.fail(f"{message} (CI=true: this test must run)", pytrace=False)
    pytest.skip(message)


def in_thread(function: Callable[[], T]) -> T:
    """Run blocking set-up (alembic runs its own event loop) away from any running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(function).result()


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


async def pg_admin(statement: str, url: str = TEST_DATABASE_URL) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class Clock:
    """A settable clock for code that takes `clock=`; time never moves by itself."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: Any) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Result:
    code: int
    out: str
    err: str
    seconds: float

    def __str__(self) -> str:
        return (
            f"exit {self.code} after {self.seconds:.1f} s\n"
            f"--- stdout\n{self.out}\n--- stderr\n{self.err}"
        )


async def cli(
    *args: str,
    env: dict[str, str],
    database_url: str | None,
    cwd: Path,
    timeout: float = 60,
    **settings: str,
) -> Result:
    """Run `python -m service ARGS` to its end and collect what it said."""
    started = time.monotonic()
    child_env = dict(env, **settings)
    if database_url is not None:
        child_env["DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", *args, cwd=cwd, env=child_env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode(), time.monotonic() - started)


async def add_job(
    sessionmaker: async_sessionmaker[AsyncSession], created_at: datetime, **declaration: Any
) -> int:
    """Declare one job (validated like the YAML file does) and return its id."""
    declaration.setdefault("schedule", {"every": "1d"})
    job = new_job(parse_job(declaration), created_at)
    async with sessionmaker() as session:
        session.add(job)
        await session.commit()
        return job.id


async def get_job(sessionmaker: async_sessionmaker[AsyncSession], name: str) -> Job:
    async with sessionmaker() as session:
        job = await session.scalar(select(Job).where(Job.name == name))
        assert job is not None, f"no job {name}"
        return job


def make_file(path: Path, size: int, mtime: datetime) -> Path:
    """A file of `size` bytes whose modification time is `mtime`."""
    write_file(path, size, mtime)
    return path


def read(path: Path) -> str:
    return path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TcpProxy:
    """A real TCP forwarder in front of a server; `cut()` drops every connection and refuses
    new ones (the database "goes away"), `restore()` brings it back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start(self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


class Receiver:
    """A real HTTP server taking webhook notices, as a team's endpoint would.

    `answers` scripts the status codes of the next requests (then 200). A request for an event
    in `hold` is kept waiting, unanswered, until the event leaves `hold` and `release()` is
    called; a held request whose client went away meanwhile is not counted as delivered.
    `delivered` lists the bodies answered 2xx, in order.
    """

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.hold: set[str] = set()
        self.arrived: list[dict[str, Any]] = []  # every request body, answered or not
        self.delivered: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.peers: list[Any] = []  # the client's address of every request: its connection
        self._released = asyncio.Event()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def release(self) -> None:
        self._released.set()

    def event_ids(self) -> list[str]:
        return [body["event_id"] for body in self.delivered]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrived.append(body)
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        self._changed.set()
        while body["event_id"] in self.hold:
            self._released.clear()
            await self._released.wait()
        status = self.answers.pop(0) if self.answers else 200
        if 200 <= status < 300:
            self.delivered.append(body)
            self.headers.append(dict(request.headers))
        self._changed.set()
        return web.Response(status=status, text="ok" if status < 300 else "no")

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 20) -> None:
        """Until `condition()` holds (checked at each request), or fail after `timeout` s."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


def _as_owner(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: run its programs as the `postgres` user then.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    """initdb'd on creation; `start()`, `stop(mode)`; `url` for SQLAlchemy, `dsn` for asyncpg."""

    def __init__(self, directory: Path, max_connections: int = 5) -> None:
        if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
            raise FileNotFoundError("initdb and pg_ctl are not on PATH")
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "postgres.log"
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(directory, "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{directory}'",
            "max_connections": str(max_connections),
            "superuser_reserved_connections": "0",  # the tests connect as the superuser
            "fsync": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        done = subprocess.run(_as_owner(list(command)), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast", *, wait: bool = True) -> None:
        """`smart` waits for the sessions to end (new ones are refused meanwhile: pass
        wait=False), `fast` ends them, `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-W" if not wait else "-w", "stop")

    def running(self) -> bool:
        done = subprocess.run(
            _as_owner(["pg_ctl", "-D", str(self.data), "status"]), capture_output=True, timeout=30
        )
        return done.returncode == 0


async def store_failure_ping(sessionmaker, key: str) -> None:
    """A /fail ping stored as the service stores it (through the ping writer)."""
    writer = PingWriter(sessionmaker)
    await writer.start()
    try:
        assert await writer.submit(Received(key, "fail", 2, None, "", datetime.now(UTC)))
    finally:
        await writer.stop(30)
