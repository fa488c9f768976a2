"""Typed application keys: what the aiohttp app holds, in one place."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.notify.config import ChannelSet
from service.runtime.coordinator import ScanCoordinator
from service.runtime.fleet import Fleet
from service.runtime.scheduling import ScanScheduler
from service.runtime.tick import DeadlineTick
from service.runtime.verifier import Verifier
from service.scanner.watch import SourceWatcher
from service.settings import Settings
from service.store.pings import PingWriter
from service.store.tokens import Access

settings_key = web.AppKey("settings", Settings)
engine_key = web.AppKey("engine", AsyncEngine)
sessionmaker_key = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
scheduler_enabled_key = web.AppKey("scheduler_enabled", bool)
# True when the API may be used without a token while none is configured (loopback, or
# `serve --insecure-no-auth`).
open_access_key = web.AppKey("open_access", bool)
ping_writer_key = web.AppKey("ping_writer", PingWriter)
# One full scan at a time, for this app (scheduled or asked for through the API).
coordinator_key = web.AppKey("scan_coordinator", ScanCoordinator)
# Set only when the app runs its scheduler (scheduler_enabled_key).
scan_scheduler_key = web.AppKey("scan_scheduler", ScanScheduler)
deadline_tick_key = web.AppKey("deadline_tick", DeadlineTick)
# The notification channels of CHANNELS_FILE, loaded once at start.
channels_key = web.AppKey("channels", ChannelSet)
# This replica in a PostgreSQL fleet (only there, and where the scheduler runs).
fleet_key = web.AppKey("fleet", Fleet)
# The watcher of local sources (only where the scheduler runs).
watcher_key = web.AppKey("source_watcher", SourceWatcher)
# The verifier of artifacts and repositories (only where the scheduler runs).
verifier_key = web.AppKey("verifier", Verifier)
# The access the request's bearer token grants (set by the API's auth middleware).
access_key: web.RequestKey[Access] = web.RequestKey("access")
# The name of the request's token (`created_by` of a silence it makes).
caller_key: web.RequestKey[str] = web.RequestKey("caller", str)
# The request's id (the client's well-formed X-Request-Id, or a new one): service.http.access.
request_id_key: web.RequestKey[str] = web.RequestKey("request_id", str)
