"""Typed application keys: what the aiohttp app holds, in one place."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.notify.channels import ChannelSet
from service.pings import PingWriter
from service.scanner.watch import SourceWatcher
from service.settings import Settings
from service.tokens import Access

settings_key = web.AppKey("settings", Settings)
engine_key = web.AppKey("engine", AsyncEngine)
sessionmaker_key = web.AppKey("sessionmaker", async_sessionmaker[AsyncSession])
scheduler_enabled_key = web.AppKey("scheduler_enabled", bool)
# True when the API may be used without a token while none is configured (loopback, or
# `serve --insecure-no-auth`).
open_access_key = web.AppKey("open_access", bool)
ping_writer_key = web.AppKey("ping_writer", PingWriter)
# The notification channels of CHANNELS_FILE, loaded once at start.
channels_key = web.AppKey("channels", ChannelSet)
# The watcher of local sources (only where the scheduler runs).
watcher_key = web.AppKey("source_watcher", SourceWatcher)
# The access the request's bearer token grants (set by the API's auth middleware).
access_key: web.RequestKey[Access] = web.RequestKey("access")
