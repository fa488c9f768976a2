"""The aiohttp application: routes, middlewares, and the lifecycle of the engine and of the
background components (ping writer, scans, watcher, verifier, notification dispatcher)."""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import AsyncIterator

from aiohttp import web

from service.core.scan_options import ScanOptions
from service.db.engine import create_engine, create_sessionmaker, is_postgresql
from service.http import health, metrics
from service.http.access import access_middleware, echo_request_id
from service.http.api import badges, docs, jobs, pings, scans, silences, tokens
from service.http.api.coalesce import Coalescer, coalescer_key, invalidate_on_write
from service.http.api.errors import bad_requests_key, error_middleware
from service.http.auth import auth_middleware
from service.http.headers import on_response_prepare
from service.http.web import public, views
from service.http.wellformed import well_formed_middleware
from service.logs import LogThrottle
from service.notify.config import ChannelSet, load_channels
from service.notify.dispatcher import STOP_GRACE, Dispatcher, DispatchOptions
from service.runtime.coordinator import ScanCoordinator
from service.runtime.fleet import Fleet
from service.runtime.keys import (
    channels_key,
    coordinator_key,
    deadline_tick_key,
    engine_key,
    fleet_key,
    open_access_key,
    ping_writer_key,
    scan_scheduler_key,
    scheduler_enabled_key,
    sessionmaker_key,
    settings_key,
    verifier_key,
    watcher_key,
)
from service.runtime.lifecycle import Component, component_ctx
from service.runtime.scheduling import ScanScheduler
from service.runtime.tick import DeadlineTick
from service.runtime.verifier import Verifier, options_of
from service.scanner.watch import SourceWatcher
from service.settings import Settings, get_settings
from service.store.pings import PingWriter

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
# How long a stop lets a running scan (or tick) finish the job in hand before it is cancelled.
SCAN_DRAIN_SECONDS = 30.0
# How long a stop lets the ping writer store the pings queued.
PINGS_DRAIN_SECONDS = 30.0
# How long a stop lets the watcher's judgement under way end.
WATCH_STOP_SECONDS = 5.0
# How long a stop lets a heartbeat under way end (then the replica leaves the fleet).
FLEET_STOP_SECONDS = 5.0
# How long a stop waits for the verifications under way to notice it (they stop at their next
# read and give their leases back: nothing is lost, they are verified again later).
VERIFY_STOP_SECONDS = 5.0


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[settings_key].database_url)
    app[engine_key] = engine
    app[sessionmaker_key] = create_sessionmaker(engine)
    yield
    await engine.dispose()


def build_ping_writer(app: web.Application) -> PingWriter:
    """Stores the pings; at a stop, every ping already answered "OK" is stored, and the queued
    ones too (within PINGS_DRAIN_SECONDS)."""
    app[ping_writer_key] = writer = PingWriter(app[sessionmaker_key])
    return writer


def replica_name(settings: Settings) -> str:
    """REPLICA_NAME, or this host's name and this process's id."""
    return settings.replica_name or f"{socket.gethostname()}-{os.getpid()}"[:128]


def build_fleet(app: web.Application) -> Fleet | None:
    """This replica's membership in a PostgreSQL fleet, wherever the scheduler runs (SQLite is
    one process: it lists every job, no fleet). Joins before the first scan, leaves after the
    last one (its cleanup runs after the scans')."""
    if not app[scheduler_enabled_key] or not is_postgresql(app[engine_key]):
        return None
    settings = app[settings_key]
    app[fleet_key] = fleet = Fleet(
        app[sessionmaker_key],
        replica_name(settings),
        interval_seconds=settings.scanner_interval_minutes * 60,
        lease_seconds=settings.fleet_lease_seconds,
    )
    return fleet


def scan_options(app: web.Application) -> ScanOptions:
    """The options of this app's scans: the settings', and the replica named on its scan runs
    in a fleet."""
    options = app[settings_key].scan_options
    fleet = app.get(fleet_key)
    return options if fleet is None else dataclasses.replace(options, replica=fleet.name)


def build_scans(app: web.Application) -> Component:
    """This app's scans: its coordinator (one full scan at a time) and, when the scheduler is
    enabled, its own APScheduler with the full scan, the deadline tick and retention."""
    settings = app[settings_key]
    sessions = app[sessionmaker_key]
    options = scan_options(app)
    app[coordinator_key] = coordinator = ScanCoordinator(
        sessions, options, fleet=app.get(fleet_key)
    )
    if not app[scheduler_enabled_key]:
        return coordinator  # the scans asked for through the API, drained at the stop
    app[deadline_tick_key] = tick = DeadlineTick(sessions, options)
    app[scan_scheduler_key] = scheduler = ScanScheduler(
        coordinator,
        settings.scanner_interval_minutes,
        tick=tick,
        tick_seconds=settings.tick_seconds,
        retention_days=settings.retention_days,
    )
    return scheduler


def build_watcher(app: web.Application) -> SourceWatcher | None:
    """Local sources are watched wherever the scheduler runs (every replica: a judgement is
    claimed in the database). Stops before the scans and the engine."""
    if not app[scheduler_enabled_key]:
        return None
    settings = app[settings_key]
    app[watcher_key] = watcher = SourceWatcher(
        app[sessionmaker_key],
        scan_options=scan_options(app),
        refresh_seconds=settings.watch_refresh_seconds,
        enabled=settings.watch_sources,
        leases=app.get(fleet_key),
    )
    return watcher


def build_verifier(app: web.Application) -> Verifier | None:
    """The verifier runs wherever the scheduler does (every replica: each artifact is leased in
    the database). Stops before the scans and the engine."""
    if not app[scheduler_enabled_key]:
        return None
    settings = app[settings_key]
    app[verifier_key] = verifier = Verifier(
        app[sessionmaker_key], options_of(settings), scan_options=settings.scan_options
    )
    return verifier


def build_dispatcher(app: web.Application) -> Dispatcher | None:
    """The notification dispatcher runs wherever the scheduler does (every replica: they
    share the work through the database)."""
    if not app[scheduler_enabled_key]:
        return None
    channels = app[channels_key]
    if not channels.channels:
        # Notices stay in the outbox (until RETENTION_DAYS): a replica without the file must
        # not route them to nothing while another one could send them.
        logger.info("no CHANNELS_FILE: status changes are recorded, no notice is sent")
        return None
    return Dispatcher(
        app[sessionmaker_key], channels, dispatch_options(app[settings_key], channels)
    )


def dispatch_options(settings: Settings, channels: ChannelSet) -> DispatchOptions:
    # A lease must outlast the slowest delivery (its timeout, plus an e-mail's QUIT), or
    # another replica would send it again.
    slowest = max((channel.timeout for channel in channels.channels.values()), default=0.0)
    return DispatchOptions(
        poll_seconds=settings.notify_poll_seconds,
        lease_seconds=max(settings.notify_lease_seconds, slowest + 10),
        retry_seconds=settings.notify_retry_seconds,
        max_attempts=settings.notify_max_attempts,
        public_url=settings.public_url,
    )


def create_app(
    settings: Settings | None = None,
    *,
    scheduler: bool = True,
    open_access: bool = True,
    channels: ChannelSet | None = None,
) -> web.Application:
    """Build the application. Cleanups run in reverse: the scheduler stops before the engine.

    `channels`: the notification channels (default: read from CHANNELS_FILE, which raises
    ChannelsFileError when the file is wrong).
    `open_access`: whether the API answers without a token while no token is configured
    (`serve` allows it on loopback only, unless told `--insecure-no-auth`).
    """
    app = web.Application(
        middlewares=[
            access_middleware,
            error_middleware,
            well_formed_middleware,
            auth_middleware,
            invalidate_on_write,
        ],
        client_max_size=MAX_BODY_BYTES,
    )
    app[coalescer_key] = Coalescer()
    app[bad_requests_key] = LogThrottle()
    app.on_response_prepare.append(on_response_prepare)
    app.on_response_prepare.append(echo_request_id)
    app[settings_key] = settings = settings or get_settings()
    app[channels_key] = channels if channels is not None else load_channels(settings.channels_file)
    app[scheduler_enabled_key] = scheduler
    app[open_access_key] = open_access
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(component_ctx(build_fleet, FLEET_STOP_SECONDS))
    app.cleanup_ctx.append(component_ctx(build_ping_writer, PINGS_DRAIN_SECONDS))
    app.cleanup_ctx.append(component_ctx(build_scans, SCAN_DRAIN_SECONDS))
    app.cleanup_ctx.append(component_ctx(build_watcher, WATCH_STOP_SECONDS))
    app.cleanup_ctx.append(component_ctx(build_verifier, VERIFY_STOP_SECONDS))
    app.cleanup_ctx.append(component_ctx(build_dispatcher, STOP_GRACE))
    for module in (
        health,
        metrics,
        jobs,
        silences,
        scans,
        pings,
        tokens,
        badges,
        docs,
        views,
        public,
    ):
        app.add_routes(module.routes)
    return app
