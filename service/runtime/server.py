"""The HTTP server `serve` runs: aiohttp's, with limits a stranger cannot talk it out of.

- A request's head (request line and headers) must arrive within HTTP_HEADER_TIMEOUT_SECONDS
  of the connection opening, or of the first byte of a next request on a kept-alive one; else
  the connection is closed. aiohttp has no such limit: a half-sent request held its connection
  for the keep-alive timeout, and enough of them used up the open-file limit.
- The body of a request must then arrive within BODY_TIMEOUT_FACTOR times that (a minute by
  default): a body sent a byte at a time held its connection, busy, for ever.
- At most HTTP_MAX_CONNECTIONS connections are open at once, lowered to fit RLIMIT_NOFILE with
  room for the database, the scans and the notices. At the limit a new connection takes the
  place of the one idle the longest (waiting for a request head), so a client that sends its
  request at once (`/health/live`, a ping) still gets in; only when every connection is busy
  with a request is the new one answered 503 and closed. The last places are kept for
  `/health/` probes: once the others are all busy, any other request is answered 503.
- A request aiohttp cannot parse is answered with the JSON error envelope and logged as one
  line (within the budget of `LogThrottle`), not as a traceback.

`start_server` is what `run_server` (and so `serve`) uses, and what the tests start.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import resource
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader

from service.http.api.errors import bad_requests_key, client_fault, error_response, log_bad_request
from service.http.headers import SECURITY_HEADERS, SERVER, add_security_headers
from service.logs import LogThrottle
from service.settings import Settings

logger = logging.getLogger(__name__)

# Descriptors kept for everything but HTTP connections: the database pool, a scan's open
# directories, notice deliveries, log and pipes.
RESERVED_DESCRIPTORS = 128
# Connections the listener accepts in one go (asyncio's default, made explicit): they hold a
# descriptor each until they are admitted or refused, so the limit leaves room for them, or a
# flood of connections at the limit runs out of descriptors in accept() (EMFILE).
ACCEPT_BACKLOG = 100
# How long a quiet kept-alive connection stays open (run_app's default; a proxy's pool is
# usually shorter), and how long requests in flight may take to finish at a stop.
KEEPALIVE_SECONDS = 75.0
SHUTDOWN_SECONDS = 30.0
# A request's body gets this many header timeouts to arrive (1 MiB at most: 60 s is ~17 KiB/s).
BODY_TIMEOUT_FACTOR = 4


def connection_limit(wanted: int, open_files: int) -> int:
    """HTTP_MAX_CONNECTIONS, lowered to fit `open_files` (RLIMIT_NOFILE's soft limit) with the
    descriptors kept for the rest and for one accept batch."""
    if open_files == resource.RLIM_INFINITY or open_files <= 0:
        return wanted
    return max(4, min(wanted, open_files - RESERVED_DESCRIPTORS - ACCEPT_BACKLOG))


BUSY_BODY = json.dumps(
    {"error": {"code": "unavailable", "message": "too many connections; try again shortly",
               "details": []}}
).encode()  # fmt: skip
BUSY_HEADERS = {"Content-Type": "application/json; charset=utf-8", "Retry-After": "1"}


def _busy_answer() -> bytes:
    headers = {
        **BUSY_HEADERS, "Content-Length": str(len(BUSY_BODY)), "Connection": "close",
        "Server": SERVER, **SECURITY_HEADERS,
    }  # fmt: skip
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"HTTP/1.1 503 Service Unavailable\r\n{head}\r\n".encode() + BUSY_BODY


# For a connection refused before it sent anything: written straight to the socket.
BUSY_ANSWER = _busy_answer()


class Connections:
    """The open connections of one listener, the least recently active first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # The last places are for health checks: when the others are all busy with requests (a
        # flood of slow ones), a probe of /health/ still gets in and is answered.
        self.reserve = max(1, min(8, limit // 8))
        self._open: dict[GuardedHandler, None] = {}  # a dict keeps insertion order
        self._pressure = LogThrottle(burst=1, window=60.0)
        self._evicted = 0
        self._refused = 0

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, handler: GuardedHandler) -> bool:
        """Whether `handler`'s new connection may stay; at the limit, the connection idle the
        longest is closed to make room, and without one the new connection is refused."""
        if len(self._open) >= self.limit:
            idle = next((other for other in self._open if other.idle), None)
            if idle is None:
                self.refused()
                return False
            self.forget(idle)
            idle.force_close()
            self._evicted += 1
            self._report()
        self._open[handler] = None
        return True

    def only_health(self, handler: GuardedHandler) -> bool:
        """Whether the request `handler` just received must be a health check: the places
        before the reserve are all taken by connections busy with a request."""
        normal = self.limit - self.reserve
        if len(self._open) <= normal:
            return False
        busy = sum(1 for other in self._open if other is not handler and not other.idle)
        return busy >= normal

    def refused(self) -> None:
        self._refused += 1
        self._report()

    def touch(self, handler: GuardedHandler) -> None:
        """`handler` sent a request: it becomes the most recently active."""
        if handler in self._open:
            del self._open[handler]
            self._open[handler] = None

    def forget(self, handler: GuardedHandler) -> None:
        self._open.pop(handler, None)

    def _report(self) -> None:
        if self._pressure.allow() is None:
            return
        logger.warning(
            "connection limit reached",
            extra={"limit": self.limit, "idle_closed": self._evicted, "refused": self._refused},
        )
        self._evicted = self._refused = 0


class GuardedHandler(web.RequestHandler):
    """aiohttp's protocol for one connection, with a deadline for each request head."""

    def __init__(
        self,
        manager: web.Server,
        *,
        connections: Connections,
        header_timeout: float,
        bad_requests: LogThrottle,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=asyncio.get_running_loop(), **kwargs)
        self.connections = connections
        self.header_timeout = header_timeout
        self.bad_requests = bad_requests
        self.heads = 0  # request heads parsed on this connection
        self.answered = 0  # responses finished
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.app_handler = self._request_handler
        self._request_handler = self._handle_unless_crowded

    async def _handle_unless_crowded(self, request: web.BaseRequest) -> web.StreamResponse:
        """The app's answer; but only a health check's while the other places are all busy."""
        crowded = not request.path.startswith("/health/") and self.connections.only_health(self)
        if crowded or self.app_handler is None:
            self.connections.refused()
            response = web.Response(status=503, body=BUSY_BODY, headers=BUSY_HEADERS)
            add_security_headers(response)
            response.force_close()
            return response
        return await self.app_handler(request)

    @property
    def idle(self) -> bool:
        """Waiting for a request head: no request of this connection is being handled."""
        return self.heads == self.answered

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.connections.admit(self):
            self.refuse()
            return
        self._arm()

    def refuse(self) -> None:
        """503 and close, without reading what the client sends."""
        self.connections.forget(self)  # its place is free now, not once the close is done
        if isinstance(self.transport, asyncio.WriteTransport):
            self.transport.write(BUSY_ANSWER)
        self.force_close()

    def data_received(self, data: bytes) -> None:
        before = self._request_count  # aiohttp's count of request heads parsed
        super().data_received(data)
        parsed = self._request_count - before
        if parsed:
            self.heads += parsed
            self._disarm()
            self.connections.touch(self)
            # The newest request is at the end of aiohttp's queue (its handler not started yet).
            payload = self._messages[-1][1] if self._messages else None
            if payload is not None and not payload.is_eof():
                self._expect_body(payload)
        elif data and self.head_timer is None and self.idle:
            self._arm()  # the first bytes of a next request on a kept-alive connection

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self.answered += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self.body_timer is not None:
            self.body_timer.cancel()
        self.connections.forget(self)
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self.head_timer = asyncio.get_running_loop().call_later(
            self.header_timeout, self._head_overdue
        )

    def _disarm(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _expect_body(self, payload: StreamReader) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
        self.body_timer = asyncio.get_running_loop().call_later(
            self.header_timeout * BODY_TIMEOUT_FACTOR, self._body_overdue, payload
        )

    def _body_overdue(self, payload: StreamReader) -> None:
        self.body_timer = None
        if not payload.is_eof() and self.transport is not None:
            # Its handler, waiting for the rest, sees the connection lost (logged at debug).
            logger.debug("request body not complete in time: connection closed")
            self.force_close()

    def _head_overdue(self) -> None:
        self.head_timer = None
        if self.idle and self.transport is not None:
            logger.debug("request head not complete in time: connection closed")
            self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs a request it could not parse (or whose body it could not read) with a
        traceback: that is the client's fault, worth one line; anything else stays a traceback."""
        exc = kw.get("exc_info")
        fault = client_fault(exc) if isinstance(exc, BaseException) else None
        if fault is None:
            super().log_exception(*args, **kw)
            return
        if self.idle:
            # The rest of a body the app already answered 400 for (and logged): aiohttp
            # drains it after the answer and meets the same fault again.
            logger.debug("unreadable body after the answer", extra={"reason": fault})
            return
        log_bad_request(self.bad_requests, fault, peer=self._peer())

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse: the JSON envelope, one log line."""
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        self.log_exception("Error handling request", exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent: no room for the error")
        response = error_response(status, "bad_request", client_fault(exc) or "bad request")
        add_security_headers(response)
        response.force_close()
        return response

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, tuple) else "-"


class GuardedSite(web.BaseSite):
    """A TCP listener, bound already (see start_server), whose connections are GuardedHandlers
    (TCPSite's, with the limits)."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, listener: asyncio.Server
    ) -> None:
        super().__init__(runner)
        self.host = host
        self.port = port
        self.listener = listener

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self._server = self.listener
        await self.listener.start_serving()


async def start_server(
    app: web.Application,
    host: str,
    port: int,
    settings: Settings,
) -> web.AppRunner:
    """Run the app's startups and listen; the caller ends with `runner.cleanup()`."""
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = connection_limit(settings.http_max_connections, open_files)
    if limit < settings.http_max_connections:
        logger.info(
            "connection limit lowered to fit the open-file limit",
            extra={"limit": limit, "open_files": open_files},
        )
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_SECONDS)
    connections = Connections(limit)
    bad_requests = app[bad_requests_key]

    def protocol() -> GuardedHandler:
        assert runner.server is not None  # nothing is accepted before runner.setup()
        return GuardedHandler(
            runner.server,
            connections=connections,
            header_timeout=settings.http_header_timeout_seconds,
            bad_requests=bad_requests,
            keepalive_timeout=KEEPALIVE_SECONDS,
        )

    # Bound first, served once the app has started: a busy port or a bad address fails here,
    # before the app's start-ups (migrations checked, the first scan begun, the scheduler).
    listener = await asyncio.get_running_loop().create_server(
        protocol, host, port, backlog=ACCEPT_BACKLOG, start_serving=False
    )
    try:
        await runner.setup()
        settle_startup_objects()
        await GuardedSite(runner, host, port, listener).start()
    except BaseException:
        listener.close()
        await runner.cleanup()
        raise
    return runner


# The collector's thresholds once started: a young collection every 50 000 objects made and not
# freed (Python's default: 700), an older one every 20 of those (default 10). A rescan of 200 000
# files made ~210 young, ~20 middle and 1-2 full collections with the defaults, a fifth of its
# CPU in this process (bench/scan.py: 1.40-1.48 s of CPU per rescan, 1.04-1.21 s with these).
# What stays unfreed meanwhile is reference cycles only, collected at the next pass.
GC_THRESHOLDS = (50_000, 20, 20)


def settle_startup_objects() -> None:
    """What the start-up made (modules, schemas, the app, the models: ~150 000 objects) lives
    as long as the process: moved out of the garbage collector's sight. Each full collection
    would walk them all on the event loop, and a scan of 1M files triggers a few: each stalled
    every request for 110 ms (asyncio's slow-callback log, bench/scan.py). And the collector
    runs less often (GC_THRESHOLDS)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_server(
    app: web.Application,
    host: str,
    port: int,
    settings: Settings,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully: no new connections, requests in
    flight get SHUTDOWN_SECONDS, then the app's cleanups run while every other task still
    runs (a running scan finishes the job in hand; aiohttp's own signal handling would end
    the loop first, and asyncio.run would cancel the scan under the cleanup's feet).
    `on_listening` is called once the port is bound and the app started."""

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping.set)
        runner = await start_server(app, host, port, settings)
        if on_listening is not None:
            on_listening()
        try:
            await stopping.wait()
        finally:
            await runner.cleanup()

    loop_factory = None
    if settings.uvloop:
        import uvloop  # only where it serves: the CLI's other commands need not load it

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as loop_runner:
        loop_runner.run(serve())
