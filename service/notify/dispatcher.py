"""The notification dispatcher: routes outbox events to channels and delivers them.

Every step is a short transaction, so any number of dispatchers (one per replica) can share
the work, and a crash at any point loses nothing:

- route: an event not yet routed gets one delivery per channel (the job's, or the defaults);
- claim: the due deliveries of a job to a channel are leased (`lease_until`) together, up to
  CHAIN, in event order (a chain), and the first one's attempt recorded; it is sent with no
  transaction open. Its outcome is recorded after, and in the same transaction the next one's
  attempt is started (or, after a failure, the rest of the chain given back: it waits behind
  the failed one). A dispatcher that dies mid-delivery leaves the leases to expire and the
  attempt unfinished: the delivery is tried again, and the rest of its chain after it.

Each chain is sent by a task of its own, and each channel has its own slots (`concurrency`, by
default 32 for a webhook and 8 for the other types): a chain is claimed only when its channel
has a free slot, and the slot is free again as soon as the chain's last send is answered (its
outcome is written meanwhile). A channel that hangs holds at most its own slots, each until its
timeout; other channels are never delayed by it. Other jobs on the hung channel are: when hung
sends fill all its slots, their notices wait for a free slot, at most that channel's timeout
per wave. One job's notice held by a receiver holds one slot.

Deliveries of one job to one channel go out in event order, so a recovery never arrives
before the alert it ends. A delivery recorded as delivered is never sent again; the window
between a receiver's "accepted" and that record is covered by the event id, which receivers
can deduplicate on (webhook body, X-Event-Id and Idempotency-Key, e-mail Message-ID). The same
holds for a timeout: the receiver may have taken the notice, it is retried with the same id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import takewhile
from typing import Any, cast
from urllib.parse import quote

import aiohttp
from sqlalchemy import (
    Row,
    Table,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from service.core.clock import Clock, utcnow
from service.core.visible import quote as visible_quote
from service.db.engine import (
    claimed,
    commit_without_waiting,
    database_url_of,
    is_postgresql,
    lock_for_write,
)
from service.db.errors import describe_error, log_failure
from service.db.models import NotificationAttempt, NotificationDelivery, NotificationEvent
from service.notify.config import ChannelSet
from service.notify.notice import Notice
from service.notify.outbox import CANCELLED, JOB_DELETED
from service.notify.transports import DeliveryError, client_session, deliver

logger = logging.getLogger(__name__)

BATCH = 500  # events routed per round
# Sends at once to one channel, by its type: an HTTP server takes many; a mail server may
# refuse a client's tenth connection, and apprise's services are someone else's.
SLOTS = {"webhook": 32}
DEFAULT_SLOTS = 8
CHAIN = 100  # deliveries of one job to one channel leased at once, sent one after the other
# The oldest pending deliveries of a channel a claim reads first: enough for a chain and for a
# chain per slot of one notice each (when those are all held, see _ready_queues).
READ_FIRST = CHAIN + 4 * max(SLOTS.values())
# Deliveries leased by one claim at most beyond the chains' first ones: its UPDATE names each
# by two parameters, and PostgreSQL (asyncpg) and SQLite take at most 32 767 a statement.
MAX_LEASED = 4000
MAX_BACKOFF = 3600.0
# A notice routed this late (it waited for a CHANNELS_FILE, or for any dispatcher to run) is
# history, not news: it is kept, not sent.
STALE_AFTER = timedelta(days=1)


# A pending delivery, with 'pending' written in the statement, not bound: a prepared statement's
# generic plan may use the partial indexes of pending deliveries only then.
def _pending(delivery: Any) -> Any:
    return delivery.state == literal_column("'pending'")


PENDING = _pending(NotificationDelivery)
# How often the channels gone from the file are looked for (_gone_channels).
GONE_EVERY = 60.0
# How often at most deliveries routed in a burst have PostgreSQL count them (_new_statistics).
STATISTICS_EVERY = 60.0
# How long a stopping dispatcher lets deliveries under way finish before it cancels them.
STOP_GRACE = 5.0


def backoff(attempts: int, first: float, limit: float = MAX_BACKOFF) -> float:
    """Seconds before the next try after `attempts` failed ones: first, 2×first, 4×first..."""
    exponent = max(0, min(attempts - 1, 60))
    return float(min(limit, first * 2**exponent))


@dataclass(frozen=True, slots=True)
class DispatchOptions:
    poll_seconds: float = 2.0
    lease_seconds: float = 300.0
    retry_seconds: float = 30.0
    max_attempts: int = 24
    # Sends (chains) at once to one channel, each channel its own slots; None: by its type.
    concurrency: int | None = None
    public_url: str | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this dispatcher holds: what to send, where, and its attempt's row; and the
    next ones of its job to its channel, leased with it, to send after it (their attempts are
    not started: `attempt_id` 0, `attempts` as read)."""

    delivery_id: int
    attempt_id: int
    attempts: int
    channel: str
    notice: Notice
    after: tuple[Claimed, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a send ended, waiting to be written (`done` once it is committed, with the next
    delivery of the chain if it was delivered and that one's attempt is started with it)."""

    item: Claimed
    ok: bool
    at: datetime
    values: dict[str, Any]  # of the delivery, for a failure
    detail: str
    extra: dict[str, Any]  # what the log says about it
    done: asyncio.Future[Claimed | None]


class Dispatcher:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        channels: ChannelSet,
        options: DispatchOptions = DispatchOptions(),
        *,
        clock: Clock = utcnow,
    ) -> None:
        self.sessions = sessions
        self.channels = channels
        self.options = options
        self.clock = clock
        # Claimed and not yet recorded (a stop gives back those cut short), by chain.
        self._in_flight: dict[int, Claimed] = {}
        # The slots in use: each chain's channel until its last send is answered (its outcome
        # is written after, while the slot goes to the next claim), by chain.
        self._sending: dict[int, str] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()  # a send ended: its slot is free
        # Outcomes of sends, written together by one task at a time (started when one comes).
        self._outcomes: list[Outcome] = []
        self._recorder: asyncio.Task[None] | None = None
        # One HTTP client session for the dispatcher's lifetime (aiohttp pools its connections):
        # opened when it starts, closed when it stops. Outside run(), each send opens its own.
        self._http: aiohttp.ClientSession | None = None
        self._stop = asyncio.Event()
        self._statistics_at = 0.0  # (loop time) see _new_statistics
        self._gone: tuple[str, ...] = ()  # see _gone_channels, and when to look again
        self._gone_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Dispatch in the background (`run`) until `stop`."""
        self._stop.clear()
        self._task = asyncio.create_task(self.run(self._stop), name="notification-dispatcher")

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set; a failing round is logged and retried later. Sends run
        on their own: a round never waits for them, and a send that ends starts a new round."""
        logger.info(
            "notification dispatcher started",
            extra={"channels": ",".join(self.channels.channels) or "-"},
        )
        failures = 0
        loop = asyncio.get_running_loop()
        # The outbox is read for new events at every round until one finds none, then once a
        # poll (a round woken by a freed slot only claims: an event written meanwhile queues
        # behind the deliveries already routed anyway).
        route_at = loop.time()
        self._open_http()
        try:
            while not stop.is_set():
                self._freed.clear()  # before the claim: a send ending during it wakes us after
                try:
                    route = loop.time() >= route_at
                    routed, _started, more = await self._round(route=route)
                    if route and routed < BATCH:
                        route_at = loop.time() + self.options.poll_seconds
                    failures = 0
                except Exception as exc:
                    failures += 1
                    more = False
                    log_failure(
                        logger, "notification round failed", exc, database_url_of(self.sessions)
                    )
                if more:
                    continue
                pause = self.options.poll_seconds * min(2**failures, 30)
                # A freed slot may let a waiting delivery go; not while the database fails.
                wakes = [stop.wait(), *([self._freed.wait()] if not failures else [])]
                await _first_of(wakes, within=pause)
            await self._wait_for_sends()  # stop bounds how long
        finally:
            await self._cancel_sends()  # cut short: they stay in flight, to be given back
            await self._close_http()

    def _open_http(self) -> None:
        if self._http is None:
            self._http = client_session()

    async def _close_http(self) -> None:
        """After the sends have ended (a send under way would lose its connection)."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def stop(self, grace: float) -> None:
        """Stop dispatching: deliveries under way get `grace` seconds to finish; those cut
        short are given back for the next start."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        with suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), grace)
        if not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        with suppress(Exception):
            await self.release(list(self._in_flight.values()))

    async def run_once(self) -> int:
        """One round, and wait for its sends (for tests and one-off use; `run` never waits for
        a round's sends). Returns the deliveries attempted."""
        _routed, started, _more = await self._round()
        await self._wait_for_sends()
        return started

    async def _round(self, *, route: bool = True) -> tuple[int, int, bool]:
        """Route (if `route`), claim what is due where a slot is free and start sending it.
        Returns the events routed, the deliveries started, and whether there may be more to do
        at once: more events to route, or a channel given chains that still has a free slot
        (one of the deliveries read was cancelled, or another dispatcher took it). A channel
        whose slots are all taken waits for one to be freed. (Reminders are not made here:
        the judgement at a reminder's due time writes it, with the job's reasons as they are
        then; see service.notify.events.)"""
        routed = await self.route() if route else 0
        claimed = await self.claim()
        for item in claimed:
            task = asyncio.create_task(self._send(item), name=f"notify-{item.delivery_id}")
            self._sends.add(task)
            task.add_done_callback(self._sent)
        in_use = Counter(self._sending.values())
        room = any(in_use[item.channel] < self.slots(item.channel) for item in claimed)
        return routed, len(claimed), routed >= BATCH or room

    async def _send(self, item: Claimed) -> None:
        """Send a chain: each next delivery once the one before it is delivered and recorded
        (its attempt started in the same transaction). It holds one slot of its channel."""
        slot = item.delivery_id
        current: Claimed | None = item
        try:
            while current is not None:
                self._in_flight[slot] = current
                try:
                    ended = await self._attempt(current)
                    if not current.after:  # its last send is answered: the slot is free
                        self._free(slot)
                    current = await self._record(current, **ended)
                except Exception as exc:  # a bug: its lease runs out, the chain goes again
                    logger.error("notification send failed", extra={"channel": item.channel},
                                 exc_info=exc)  # fmt: skip
                    break
        finally:
            self._free(slot)
        # Cancelled (a stop), it stays in flight, for stop to give back.
        del self._in_flight[slot]

    def _free(self, slot: int) -> None:
        if self._sending.pop(slot, None) is not None:
            self._freed.set()

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)
        self._freed.set()

    async def _wait_for_sends(self) -> None:
        while self._sends:
            await asyncio.wait(set(self._sends))

    async def _cancel_sends(self) -> None:
        sends = list(self._sends)
        if self._recorder is not None:
            sends.append(self._recorder)
        for task in sends:
            task.cancel()
        await asyncio.gather(*sends, return_exceptions=True)
        self._outcomes.clear()  # their sends are cut short: they stay in flight, given back

    # --- route ------------------------------------------------------------------------------

    async def route(self) -> int:
        """Give each unrouted event its deliveries; returns the events routed."""
        now = self.clock()
        async with self.sessions() as session:
            await lock_for_write(session)
            # Routing lost to a crash of the database server is routed again, the same way.
            await commit_without_waiting(session)
            query = (
                select(
                    NotificationEvent.id,
                    NotificationEvent.job_name,
                    NotificationEvent.channels,
                    NotificationEvent.created_at,
                    NotificationEvent.job_id,
                )
                .where(NotificationEvent.routed_at.is_(None))
                .order_by(NotificationEvent.id)
                .limit(BATCH)
            )
            if is_postgresql(session):
                query = query.with_for_update(skip_locked=True)
            events = (await session.execute(query)).all()
            if not events:
                return 0
            deliveries = [
                {
                    "event_id": event.id,
                    "channel": channel,
                    "job_name": event.job_name,
                    # A deleted job's notice is recorded as cancelled, never sent.
                    "state": "pending" if event.job_id is not None else CANCELLED,
                    "last_error": None if event.job_id is not None else JOB_DELETED,
                    "attempts": 0,
                    "next_attempt_at": now,
                }
                for event in events
                if event.created_at >= now - STALE_AFTER
                for channel in self.channels.route(event.channels)
            ]
            stale = sum(event.created_at < now - STALE_AFTER for event in events)
            if stale:
                logger.warning(
                    "%d notices older than %s not sent (no channel was configured, or no "
                    "dispatcher ran, when they happened)", stale, STALE_AFTER,
                )  # fmt: skip
            if deliveries:
                await session.execute(insert(NotificationDelivery), deliveries)
            await session.execute(
                update(NotificationEvent)
                .where(NotificationEvent.id.in_([event.id for event in events]))
                .values(routed_at=now)
            )
            await session.commit()
        if len(deliveries) >= BATCH:
            await self._new_statistics(len(deliveries))
        return len(events)

    async def _new_statistics(self, added: int) -> None:
        """After a burst of deliveries (a mount gone: a thousand jobs critical at once), have
        PostgreSQL count the pending ones again, at most once a minute. Its planner otherwise
        plans the claims on counts from before the burst (autovacuum takes up to a minute, and
        never comes when the burst is small beside the table's history) and takes the pending
        indexes for small: each claim then reads every pending delivery."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._statistics_at:
            return
        self._statistics_at = loop.time() + STATISTICS_EVERY
        async with self.sessions() as session:
            if not is_postgresql(session):
                return
            # Never long: a lock held by a vacuum or by another replica's ANALYZE is not
            # waited for. (A role that does not own the table gets a warning from PostgreSQL,
            # and nothing is done: the claims still work, planned as before.)
            try:
                await session.execute(text("SET LOCAL lock_timeout = '1s'"))
                await session.execute(text("SET LOCAL statement_timeout = '10s'"))
                await session.execute(text("ANALYZE notification_deliveries"))
                await session.commit()
            except Exception as exc:
                logger.warning("cannot analyze the deliveries after %d new ones: %s", added,
                               describe_error(exc))  # fmt: skip

    # --- claim and deliver ------------------------------------------------------------------

    async def claim(self) -> list[Claimed]:
        """Lease the due deliveries, as many chains per channel as it has free slots, recording
        an attempt for the first of each; a lease taken by another dispatcher meanwhile is
        skipped. A chain is the oldest pending deliveries of one job to one channel, in event
        order, all due and free, up to CHAIN: its first is sent now, each next one after the
        one before it is delivered (see `Claimed.after`)."""
        now = self.clock()
        in_use = Counter(self._sending.values())
        lease = now + timedelta(seconds=self.options.lease_seconds)
        event = NotificationEvent
        # Checked again in the claim itself: a job deleted since the read is never sent to.
        job_still_there = exists().where(
            event.id == NotificationDelivery.event_id, event.job_id.is_not(None)
        )
        async with self.sessions() as session:
            # On SQLite, the write lock first: this process's own sends record their outcomes
            # meanwhile, and a read turned into a write after theirs would fail.
            await lock_for_write(session)
            # A lease lost to a crash of the database server leaves the delivery free: it is
            # sent again, as after a dispatcher's crash (same event id, for receivers to drop
            # the copy). Outcomes are committed durably: a delivery recorded stays recorded.
            await commit_without_waiting(session)
            chains = within(await self._chains(session, in_use, now), MAX_LEASED)
            events = await _events_of(session, [row for chain in chains for row in chain])
            wanted: list[list[tuple[Any, Notice]]] = []
            for first, *rest in chains:
                if first.waits:  # an earlier event of its job is being routed: wait for it
                    continue
                head = events[first.event_id]
                if head.job_id is None:  # its job was deleted (SET NULL) since it was routed
                    await self._cancel(session, first.id)
                    continue
                # No more than can be sent at once: each starts as soon as it is leased.
                if in_use[first.channel] >= self.slots(first.channel):
                    continue
                try:
                    notice = self._notice(head.payload)
                except (KeyError, TypeError, ValueError) as exc:  # written by hand, or a bug
                    await self._unreadable(session, first.id, now, describe_error(exc))
                    continue
                in_use[first.channel] += 1
                taking = [(first, notice)]
                # Each next one goes after the one before it. The chain ends before one that
                # must not ride along (dealt with when it comes first).
                for row in rest:
                    next_notice = None if row.waits else self._readable(events[row.event_id])
                    if next_notice is None:
                        break
                    taking.append((row, next_notice))
                wanted.append(taking)
            taken_now = await self._lease(session, wanted, now, lease, job_still_there)
            await session.commit()
        for item in taken_now:  # from now on, a stop gives them back
            self._in_flight[item.delivery_id] = item
            self._sending[item.delivery_id] = item.channel
        return taken_now

    async def _chains(
        self, session: AsyncSession, in_use: Counter[str], now: datetime
    ) -> list[list[Row[Any]]]:
        """The chains to claim, oldest first: of each channel with a free slot, the first
        queues whose head is ready (`first_chains`), read from its oldest pending deliveries,
        as many as that takes; where those are all held (a dead channel's notices waiting for
        their retry, a job's hundreds behind one on the wire), its ready queues are looked for
        instead. Each channel is read on its own (those gone from the file too), so that one
        with many cannot crowd out the others."""
        names = [*self.channels.channels, *await self._gone_channels(session)]
        names = [name for name in names if in_use[name] < self.slots(name)]

        def room(name: str) -> int:
            return self.slots(name) - in_use[name]

        chains: list[list[Row[Any]]] = []
        read = await _oldest_pending(session, names, READ_FIRST) if names else []
        for name, rows in zip(names, read, strict=True):
            found, short = first_chains(rows, now, room)
            if short and len(rows) == READ_FIRST:  # too few ready: look past the rows read
                more = room(name) - len(found)
                seen = {row.job_name for row in rows}  # their heads were among them
                later = await _ready_queues(session, name, more, now, seen)
                found += first_chains(later, now, room)[0]  # (at most `more` queues)
            chains += found
        return sorted(chains, key=lambda chain: chain[0].event_id)

    async def _gone_channels(self, session: AsyncSession) -> tuple[str, ...]:
        """The channels gone from the file that pending deliveries still name (routed before it
        changed, or by a replica with another file): each send to them fails, and is recorded
        so. Looked for when the dispatcher starts, then once a minute (it reads every pending
        delivery's channel)."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._gone_at:
            channel = NotificationDelivery.channel
            found = await session.scalars(
                select(channel).distinct().where(PENDING, channel.not_in(self.channels.channels))
            )
            self._gone = tuple(sorted(found))
            self._gone_at = loop.time() + GONE_EVERY
        return self._gone

    def slots(self, channel: str) -> int:
        """How many sends at once to this channel: a webhook takes more than a mail server."""
        if self.options.concurrency is not None:
            return self.options.concurrency
        declared = self.channels.channels.get(channel)
        return SLOTS.get(declared.type if declared is not None else "", DEFAULT_SLOTS)

    def _readable(self, row: EventOf) -> Notice | None:
        """The notice of a delivery after the first of a chain, or None if it must not ride
        along (its job deleted, its notice unreadable: dealt with when it comes first)."""
        if row.job_id is None:
            return None
        try:
            return self._notice(row.payload)
        except (KeyError, TypeError, ValueError):
            return None

    @staticmethod
    async def _lease(
        session: AsyncSession,
        wanted: Sequence[Sequence[tuple[Row[Any], Notice]]],
        now: datetime,
        lease: datetime,
        job_still_there: Any,
    ) -> list[Claimed]:
        """Lease the chains read (one UPDATE for all) and record an attempt for the first of
        each taken (one INSERT). Each delivery is fenced by the attempt count read: one another
        dispatcher leased, tried or finished meanwhile is skipped, as is one whose job was
        deleted, and a chain ends before the first one skipped."""
        if not wanted:
            return []
        delivery = NotificationDelivery
        free = or_(delivery.lease_until.is_(None), delivery.lease_until < now)
        firsts = [chain[0][0].id for chain in wanted]
        taken_ids = set(
            await session.scalars(
                update(delivery)
                .where(_as_read([(row.id, row.attempts) for chain in wanted for row, _ in chain]))
                .where(delivery.state == "pending", free, job_still_there)
                .values(lease_until=lease,
                        attempts=delivery.attempts + case((delivery.id.in_(firsts), 1), else_=0))
                .returning(delivery.id)
                .execution_options(synchronize_session=False)
            )
        )  # fmt: skip
        chains, past_a_skipped = [], []
        for chain in wanted:
            end = next((n for n, (row, _) in enumerate(chain) if row.id not in taken_ids), None)
            if end != 0:
                chains.append(chain[:end])
            skipped_on = chain[end:] if end is not None else []
            past_a_skipped += [(row.id, row.attempts) for row, _ in skipped_on]
        # Leased behind one that was not: given back (never tried, their counts unchanged).
        await _give_back(session, [key for key in past_a_skipped if key[0] in taken_ids])
        if not chains:
            return []
        # The last holder of these died during its attempt.
        abandoned = [chain[0][0].id for chain in chains if chain[0][0].lease_until is not None]
        if abandoned:
            await session.execute(
                update(NotificationAttempt)
                .where(
                    NotificationAttempt.delivery_id.in_(abandoned),
                    NotificationAttempt.finished_at.is_(None),
                )
                .values(ok=False, detail="abandoned: the dispatcher died during it")
                .execution_options(synchronize_session=False)
            )
        attempt_of = await _start_attempts(session, [chain[0][0].id for chain in chains], now)
        return [
            Claimed(first.id, attempt_of[first.id], first.attempts + 1, first.channel, notice,
                    tuple(Claimed(row.id, 0, row.attempts, row.channel, later)
                          for row, later in rest))
            for (first, notice), *rest in chains
        ]  # fmt: skip

    @staticmethod
    async def _cancel(session: AsyncSession, delivery_id: int) -> None:
        cancelled = await claimed(
            session,
            update(NotificationDelivery)
            .where(NotificationDelivery.id == delivery_id, NotificationDelivery.state == "pending")
            .values(state=CANCELLED, last_error=JOB_DELETED, lease_until=None),
        )
        if cancelled:
            logger.info("notification cancelled: %s", JOB_DELETED,
                        extra={"delivery_id": delivery_id})  # fmt: skip

    @staticmethod
    async def _unreadable(session: AsyncSession, delivery_id: int, now: datetime, why: str) -> None:
        """A delivery whose notice cannot be read is given up at once (it would fail forever),
        with the reason as its attempt."""
        logger.error("notification unreadable, given up: %s", why,
                     extra={"delivery_id": delivery_id})  # fmt: skip
        given_up = await claimed(
            session,
            update(NotificationDelivery)
            .where(NotificationDelivery.id == delivery_id, NotificationDelivery.state == "pending")
            .values(state="failed", last_error=f"unreadable notice: {why}"),
        )
        if given_up:
            await session.execute(
                insert(NotificationAttempt).values(
                    delivery_id=delivery_id, started_at=now, finished_at=now, ok=False,
                    detail=f"unreadable notice: {why}",
                )
            )  # fmt: skip

    def _notice(self, payload: dict[str, Any]) -> Notice:
        notice = Notice.from_json(payload)
        if self.options.public_url:
            url = f"{self.options.public_url}/jobs/{quote(notice.job, safe='')}"
            notice = dataclasses.replace(notice, url=url)
        return notice

    async def _deliver(self, item: Claimed) -> Claimed | None:
        """Send one delivery and record how it ended; returns the next of its chain, its
        attempt started, if this one was delivered and the next may go."""
        return await self._record(item, **await self._attempt(item))

    async def _attempt(self, item: Claimed) -> dict[str, Any]:
        """Send one delivery; returns how it ended, as `_record` takes it."""
        channel = self.channels.channels.get(item.channel)
        try:
            if channel is None:
                raise DeliveryError(
                    f"no channel {visible_quote(item.channel)} in CHANNELS_FILE", permanent=True
                )
            outcome = await deliver(channel, item.notice, self._http)
        except DeliveryError as exc:
            return {"ok": False, "detail": str(exc), "permanent": exc.permanent}
        except Exception as exc:  # a bug in a channel must not stop the others
            logger.error(
                "notification channel failed", extra={"channel": item.channel}, exc_info=exc
            )
            return {"ok": False, "detail": f"internal error: {describe_error(exc)}",
                    "permanent": False}  # fmt: skip
        return {"ok": True, "detail": outcome, "permanent": False}

    async def _record(
        self, item: Claimed, *, ok: bool, detail: str, permanent: bool
    ) -> Claimed | None:
        """Write the outcome; while the database is away, keep trying (a success not written
        would be sent again). Returns the next delivery of the chain, its attempt started, if
        this one was delivered; a failure gives the rest of the chain back (they wait behind
        it)."""
        now = self.clock()
        values: dict[str, Any]
        if ok:
            values = {"state": "delivered", "delivered_at": now, "last_error": None}
        elif permanent or item.attempts >= self.options.max_attempts:
            values = {"state": "failed", "last_error": detail}
        else:
            retry = backoff(item.attempts, self.options.retry_seconds)
            values = {"next_attempt_at": now + timedelta(seconds=retry), "last_error": detail}
        extra = {
            "channel": item.channel,
            "job": item.notice.job,
            "event_id": item.notice.event_id,
            "attempt": item.attempts,
        }
        if ok:
            logger.info("notification delivered: %s", detail, extra=extra)
        elif values.get("state") == "failed":
            logger.error("notification given up: %s", detail, extra=extra)
        else:
            logger.warning("notification attempt failed: %s", detail, extra=extra)
        done: asyncio.Future[Claimed | None] = asyncio.get_running_loop().create_future()
        self._outcomes.append(Outcome(item, ok, now, values, detail[:2000], extra, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_all(), name="notify-outcomes")
        return await done

    async def _record_all(self) -> None:
        """Write the outcomes waiting, all in one transaction, until none is left (group
        commit: the more sends end together, the fewer transactions each costs). While the
        database is away, keep trying: a success not written would be sent again."""
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            delay = 0.5
            while True:
                try:
                    nexts = await self._write_outcomes(batch)
                    break
                except Exception as exc:
                    log_failure(
                        logger, "cannot record notification outcomes yet", exc,
                        database_url_of(self.sessions), count=len(batch), **batch[0].extra,
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            for outcome, next_one in zip(batch, nexts, strict=True):
                if not outcome.done.done():
                    outcome.done.set_result(next_one)

    async def _write_outcomes(self, batch: Sequence[Outcome]) -> list[Claimed | None]:
        """Write the outcomes in one transaction, and start the attempt of the next delivery
        of each chain whose delivery succeeded; give back the rest of the others' chains.
        Returns, for each outcome, the next delivery started, or None."""
        # The tables themselves: an executemany of one UPDATE with bound values per row.
        deliveries = cast(Table, NotificationDelivery.__table__)
        attempts = cast(Table, NotificationAttempt.__table__)
        delivered = [outcome for outcome in batch if outcome.ok]
        async with self.sessions() as session:
            if delivered:
                # A success is the truth whoever holds the lease: recorded while the delivery
                # is pending, and over a cancellation made while this very attempt was on the
                # wire (see _outcome_applies).
                await session.execute(
                    update(deliveries)
                    .where(
                        deliveries.c.id == bindparam("b_id"),
                        or_(
                            deliveries.c.state == "pending",
                            and_(
                                deliveries.c.state == CANCELLED,
                                deliveries.c.attempts == bindparam("b_attempts"),
                            ),
                        ),
                    )
                    .values(state="delivered", delivered_at=bindparam("b_at"), last_error=None,
                            lease_until=None),
                    [
                        {"b_id": o.item.delivery_id, "b_attempts": o.item.attempts, "b_at": o.at}
                        for o in delivered
                    ],
                )  # fmt: skip
            for outcome in batch:  # failures: few, each with its own next try
                if not outcome.ok:
                    await session.execute(
                        update(NotificationDelivery)
                        .where(
                            NotificationDelivery.id == outcome.item.delivery_id,
                            _outcome_applies(outcome.item, False),
                        )
                        .values(lease_until=None, **outcome.values)
                        .execution_options(synchronize_session=False)
                    )
            await session.execute(
                update(attempts)
                .where(attempts.c.id == bindparam("b_id"))
                .values(finished_at=bindparam("b_at"), ok=bindparam("b_ok"),
                        detail=bindparam("b_detail")),
                [
                    {"b_id": o.item.attempt_id, "b_at": o.at, "b_ok": o.ok, "b_detail": o.detail}
                    for o in batch
                ],
            )  # fmt: skip
            nexts = await self._start_next(session, batch)
            await session.commit()
        return nexts

    async def _start_next(
        self, session: AsyncSession, batch: Sequence[Outcome]
    ) -> list[Claimed | None]:
        """In the outcomes' transaction: lease again and start the attempt of the next
        delivery of each chain whose delivery succeeded (fenced as a claim is: still pending,
        its count as read, its job still there); give back the rest of every other chain."""
        now = self.clock()
        delivery = NotificationDelivery
        wanted = [o.item.after[0] for o in batch if o.ok and o.item.after]
        started: set[int] = set()
        if wanted:
            job_still_there = exists().where(
                NotificationEvent.id == delivery.event_id, NotificationEvent.job_id.is_not(None)
            )
            started = set(
                await session.scalars(
                    update(delivery)
                    .where(_as_read([(item.delivery_id, item.attempts) for item in wanted]))
                    .where(delivery.state == "pending", job_still_there)
                    .values(lease_until=now + timedelta(seconds=self.options.lease_seconds),
                            attempts=delivery.attempts + 1)
                    .returning(delivery.id)
                    .execution_options(synchronize_session=False)
                )
            )  # fmt: skip
        attempt_of = await _start_attempts(session, sorted(started), now)
        nexts: list[Claimed | None] = []
        back: list[Claimed] = []
        for outcome in batch:
            after = outcome.item.after
            if after and after[0].delivery_id in started:
                first, *rest = after
                nexts.append(dataclasses.replace(
                    first, attempt_id=attempt_of[first.delivery_id], attempts=first.attempts + 1,
                    after=tuple(rest),
                ))  # fmt: skip
            else:
                nexts.append(None)
                back += after
        await _give_back(session, [(item.delivery_id, item.attempts) for item in back])
        return nexts

    async def release(self, items: Sequence[Claimed]) -> None:
        """Give back deliveries not finished at a stop, so the next start sends them at once."""
        if not items:
            return
        now = self.clock()
        untried = [(later.delivery_id, later.attempts) for item in items for later in item.after]
        async with self.sessions() as session:
            await _give_back(session, untried)
            for item in items:  # unless another dispatcher has taken it over since
                await session.execute(
                    update(NotificationDelivery)
                    .where(
                        NotificationDelivery.id == item.delivery_id,
                        NotificationDelivery.state == "pending",
                        NotificationDelivery.attempts == item.attempts,
                    )
                    .values(lease_until=None)
                )
            await session.execute(
                update(NotificationAttempt)
                .where(
                    NotificationAttempt.id.in_([item.attempt_id for item in items]),
                    NotificationAttempt.finished_at.is_(None),
                )
                .values(finished_at=now, ok=False, detail="interrupted: the service stopped")
            )
            await session.commit()


def is_ready(row: Any, now: datetime) -> bool:
    """A pending delivery that may be sent now: due, and held by no lease."""
    return bool(row.next_attempt_at <= now and (row.lease_until is None or row.lease_until < now))


def first_chains(
    rows: Sequence[Row[Any]], now: datetime, room: Callable[[str], int]
) -> tuple[list[list[Row[Any]]], bool]:
    """Of the oldest pending deliveries of one or more channels, in event order, the chains to
    claim: of each channel, the first queues (one job's deliveries to it) whose head is ready,
    as many as `room(channel)`. A chain is its queue's deliveries from the head, up to CHAIN,
    ending before the first that is not ready (held by a lease, or waiting for a retry); a
    queue whose head is not ready waits behind it. Returns them, and whether a channel found
    fewer than it has room for. (Event ids follow a job's changes, each written under the job's
    row lock; delivery ids need not: another replica may route an earlier event later.)"""
    queues: dict[tuple[str, str], list[Row[Any]]] = {}
    for row in rows:
        queues.setdefault((row.channel, row.job_name), []).append(row)
    left: dict[str, int] = {}
    chains = []
    for (channel, _job), queue in queues.items():
        wanted = left.setdefault(channel, room(channel))
        chain = list(takewhile(lambda row: is_ready(row, now), queue[:CHAIN]))
        if chain and wanted > 0:
            chains.append(chain)
            left[channel] = wanted - 1
    return chains, any(wanted > 0 for wanted in left.values())


def _waits(job_name: Any, event_id: Any) -> Any:
    """Whether a delivery waits for an earlier event of its job that another dispatcher is
    routing right now (it has no delivery yet to wait behind). Read in the same statement as
    the deliveries: one snapshot (an event routed between two reads would let a later notice
    go first)."""
    earlier = aliased(NotificationEvent)
    return exists().where(
        earlier.job_name == job_name, earlier.routed_at.is_(None), earlier.id < event_id
    )


async def _oldest_pending(
    session: AsyncSession, channels: Sequence[str], limit: int
) -> list[list[Row[Any]]]:
    """The oldest pending deliveries of each channel, at most `limit` each, in event order,
    each with whether it waits (_waits): one statement."""
    delivery = NotificationDelivery
    waits = _waits(delivery.job_name, delivery.event_id)
    parts = [
        select(
            select(
                literal(number).label("part"), delivery.id, delivery.event_id, delivery.attempts,
                delivery.channel, delivery.job_name, delivery.lease_until,
                delivery.next_attempt_at, waits.label("waits"),
            )
            .where(PENDING, delivery.channel == channel)
            .order_by(delivery.event_id)
            .limit(limit)
            .subquery()
        )
        for number, channel in enumerate(channels)
    ]  # fmt: skip
    read: list[list[Row[Any]]] = [[] for _ in channels]
    for row in await session.execute(parts[0] if len(parts) == 1 else union_all(*parts)):
        read[row.part].append(row)
    for rows in read:  # (a union keeps no order)
        rows.sort(key=lambda row: row.event_id)
    return read


async def _ready_queues(
    session: AsyncSession, channel: str, count: int, now: datetime, seen: Collection[str]
) -> list[Row[Any]]:
    """The first CHAIN pending deliveries of each of the `count` oldest queues of `channel`
    whose head is ready, but those of the jobs `seen`, in event order, each with whether it
    waits (_waits): for a channel whose oldest deliveries held too few ready queues. Two
    statements: the heads (an index probe for each ready delivery of a job not seen, none for
    a held one: a dead channel's thousands waiting for their retry, or one job's hundreds
    behind one on the wire, cost a pass over the channel's pending deliveries), then their
    queues (the chains are made from this one's snapshot)."""
    delivery = NotificationDelivery
    earlier = aliased(NotificationDelivery)
    # (A subquery for each row, never a join: the planner then always probes the queue's
    # index, statistics or not.)
    oldest_of_its_queue = (
        select(func.min(earlier.event_id))
        .where(
            _pending(earlier),
            earlier.channel == delivery.channel,
            earlier.job_name == delivery.job_name,
        )
        .scalar_subquery()
    )
    ready = and_(
        delivery.next_attempt_at <= now,
        or_(delivery.lease_until.is_(None), delivery.lease_until < now),
    )
    jobs = list(
        await session.scalars(
            select(delivery.job_name)
            .where(PENDING, delivery.channel == channel, delivery.job_name.not_in(seen), ready,
                   delivery.event_id == oldest_of_its_queue)
            .order_by(delivery.event_id)
            .limit(count)
        )
    )  # fmt: skip
    if not jobs:
        return []
    place = func.row_number().over(partition_by=delivery.job_name, order_by=delivery.event_id)
    queues = (
        select(
            delivery.id, delivery.event_id, delivery.attempts, delivery.channel,
            delivery.job_name, delivery.lease_until, delivery.next_attempt_at,
            place.label("place"),
        )
        .where(PENDING, delivery.channel == channel, delivery.job_name.in_(jobs))
        .subquery()
    )  # fmt: skip
    rows = await session.execute(
        select(*queues.c, _waits(queues.c.job_name, queues.c.event_id).label("waits"))
        .where(queues.c.place <= CHAIN)
        .order_by(queues.c.event_id)
    )
    return cast(list[Row[Any]], list(rows))


@dataclass(frozen=True, slots=True)
class EventOf:
    """What a claim needs of a delivery's event: its notice, and whether its job is still
    there (checked again by the lease)."""

    payload: Any
    job_id: int | None


async def _events_of(session: AsyncSession, rows: Sequence[Row[Any]]) -> dict[int, EventOf]:
    """The events of these deliveries, by event id."""
    if not rows:
        return {}
    event = NotificationEvent
    read = await session.execute(
        select(event.id, event.payload, event.job_id).where(
            event.id.in_(sorted({row.event_id for row in rows}))
        )
    )
    return {row.id: EventOf(row.payload, row.job_id) for row in read}


def within(chains: Sequence[list[Row[Any]]], most: int) -> list[list[Row[Any]]]:
    """The chains with no more than `most` deliveries after their first ones in all (each
    claim's statements name each delivery, and take at most 32 767 parameters): the first of
    each is kept, the oldest chains keep the most."""
    kept = []
    for first, *rest in chains:
        later = rest[: max(0, most)]
        most -= len(later)
        kept.append([first, *later])
    return kept


def _outcome_applies(item: Claimed, ok: bool) -> Any:
    """Which state of a delivery an outcome may overwrite.

    A failure is fenced by the attempt number: a late outcome, from a dispatcher whose lease
    ran out and was taken over, does not undo the newer holder's; a failure of a delivery
    cancelled meanwhile (its job deleted while it was on the wire) leaves it cancelled, never
    retried. A success is the truth whoever holds the lease: recorded while the delivery is
    pending, and over a cancellation made while this very attempt was on the wire."""
    pending = NotificationDelivery.state == "pending"
    this_attempt = NotificationDelivery.attempts == item.attempts
    if not ok:
        return and_(pending, this_attempt)
    return or_(pending, and_(NotificationDelivery.state == CANCELLED, this_attempt))


async def _start_attempts(
    session: AsyncSession, delivery_ids: Sequence[int], now: datetime
) -> dict[int, int]:
    """Record an attempt started now for each of these deliveries (one INSERT); returns each
    delivery's attempt id."""
    if not delivery_ids:
        return {}
    attempts = await session.execute(
        insert(NotificationAttempt).returning(
            NotificationAttempt.id, NotificationAttempt.delivery_id
        ),
        [{"delivery_id": delivery_id, "started_at": now, "detail": ""}
         for delivery_id in delivery_ids],
    )  # fmt: skip
    return {delivery_id: attempt_id for attempt_id, delivery_id in attempts}


def _as_read(keys: Sequence[tuple[int, int]]) -> Any:
    """The deliveries given as (id, attempt count as read), each as it was read: found by its
    id (the primary key; a list of pairs alone is a scan of every pending delivery), fenced by
    its count (one tried or taken over since is left alone)."""
    delivery = NotificationDelivery
    return and_(
        delivery.id.in_([key[0] for key in keys]),
        tuple_(delivery.id, delivery.attempts).in_(list(keys)),
    )


async def _give_back(session: AsyncSession, keys: Sequence[tuple[int, int]]) -> None:
    """Free the leases of deliveries leased in a chain and never tried, given as (id, attempt
    count as read): unless another dispatcher has taken one over since, or it has ended."""
    if not keys:
        return
    delivery = NotificationDelivery
    await session.execute(
        update(delivery)
        .where(_as_read(keys), delivery.state == "pending")
        .values(lease_until=None)
        .execution_options(synchronize_session=False)
    )


async def _first_of(waits: Sequence[Awaitable[Any]], within: float) -> None:
    """Until the first of `waits` is done, or `within` seconds; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
