"""The aiohttp application: routes, middlewares and the lifecycle of engine and scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from service.api import docs, health, jobs, metrics, pings, scans
from service.api.auth import auth_middleware
from service.api.coalesce import Coalescer, coalescer_key, invalidate_on_write
from service.api.errors import bad_requests_key, error_middleware
from service.api.headers import on_response_prepare
from service.api.wellformed import well_formed_middleware
from service.db import create_engine, create_sessionmaker
from service.keys import (
    channels_key,
    engine_key,
    open_access_key,
    ping_writer_key,
    scheduler_enabled_key,
    sessionmaker_key,
    settings_key,
    watcher_key,
)
from service.logs import LogThrottle
from service.notify.channels import ChannelSet, load_channels
from service.notify.dispatcher import Dispatcher, DispatchOptions
from service.pings import PingWriter
from service.scanner.watch import SourceWatcher
from service.scheduler import drain_scans, shutdown_scheduler, start_scheduler
from service.settings import Settings, get_settings
from service.web import views

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[settings_key].database_url)
    app[engine_key] = engine
    app[sessionmaker_key] = create_sessionmaker(engine)
    yield
    await engine.dispose()


async def pings_ctx(app: web.Application) -> AsyncIterator[None]:
    writer = PingWriter(app[sessionmaker_key])
    app[ping_writer_key] = writer
    writer.start()
    yield
    await writer.stop()  # every ping already answered "OK" is stored; the queued ones too


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    if not app[scheduler_enabled_key]:
        yield
        await drain_scans()  # scans started through the API
        return
    settings = app[settings_key]
    await start_scheduler(
        app[sessionmaker_key],
        settings.scanner_interval_minutes,
        scan_options=settings.scan_options,
        tick_seconds=settings.tick_seconds,
        retention_days=settings.retention_days,
    )
    yield
    await shutdown_scheduler()


async def watch_ctx(app: web.Application) -> AsyncIterator[None]:
    """Local sources are watched wherever the scheduler runs (every replica: a judgement is
    claimed in the database). Stops before the scheduler and the engine."""
    if not app[scheduler_enabled_key]:
        yield
        return
    settings = app[settings_key]
    watcher = SourceWatcher(
        app[sessionmaker_key],
        scan_options=settings.scan_options,
        refresh_seconds=settings.watch_refresh_seconds,
        enabled=settings.watch_sources,
    )
    app[watcher_key] = watcher
    await watcher.start()
    yield
    await watcher.stop()


async def notify_ctx(app: web.Application) -> AsyncIterator[None]:
    """The notification dispatcher runs wherever the scheduler does (every replica: they
    share the work through the database)."""
    if not app[scheduler_enabled_key]:
        yield
        return
    channels = app[channels_key]
    if not channels.channels:
        # Notices stay in the outbox (until RETENTION_DAYS): a replica without the file must
        # not route them to nothing while another one could send them.
        logger.info("no CHANNELS_FILE: status changes are recorded, no notice is sent")
        yield
        return
    dispatcher = Dispatcher(
        app[sessionmaker_key], channels, dispatch_options(app[settings_key], channels)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop), name="notification-dispatcher")
    yield
    await dispatcher.stop_gracefully(task, stop)


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
    app[settings_key] = settings = settings or get_settings()
    app[channels_key] = channels if channels is not None else load_channels(settings.channels_file)
    app[scheduler_enabled_key] = scheduler
    app[open_access_key] = open_access
    app.cleanup_ctx.append(database_ctx)
    app.cleanup_ctx.append(pings_ctx)
    app.cleanup_ctx.append(scheduler_ctx)
    app.cleanup_ctx.append(watch_ctx)
    app.cleanup_ctx.append(notify_ctx)
    for module in (health, metrics, jobs, scans, pings, docs, views):
        app.add_routes(module.routes)
    return app
