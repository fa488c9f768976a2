"""Which chains a claim takes from the pending deliveries it read (dispatcher.first_chains, a
pure rule): the first ready queues of each channel, in event order, as many as it has room
for; a queue waits behind a head that is not ready, and a chain ends before the first
delivery that is not ready."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from service.notify.dispatcher import CHAIN, first_chains, within

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)


def row(event_id: int, job: str, channel: str = "ops", *, due: datetime = NOW,
        lease: datetime | None = None) -> SimpleNamespace:  # fmt: skip
    return SimpleNamespace(
        id=event_id * 10, event_id=event_id, channel=channel, job_name=job,
        next_attempt_at=due, lease_until=lease,
    )  # fmt: skip


def ids(chains: list[list[SimpleNamespace]]) -> list[list[int]]:
    return [[item.event_id for item in chain] for chain in chains]


def test_queues_come_in_the_order_of_their_oldest_notice():
    rows = [row(1, "b"), row(2, "a"), row(3, "b"), row(4, "c"), row(5, "a")]
    chains, short = first_chains(rows, NOW, lambda channel: 10)
    assert ids(chains) == [[1, 3], [2, 5], [4]]
    assert short  # room for 10, three found


def test_a_queue_waits_behind_a_head_that_is_not_ready():
    rows = [
        row(1, "leased", lease=LATER), row(2, "leased"),
        row(3, "retried", due=LATER), row(4, "retried"),
        row(5, "free", lease=NOW - timedelta(seconds=1)),  # a lease run out: free again
    ]  # fmt: skip
    chains, _short = first_chains(rows, NOW, lambda channel: 10)
    assert ids(chains) == [[5]]


def test_a_chain_ends_before_the_first_that_is_not_ready_and_at_chain():
    rows = [row(1, "a"), row(2, "a"), row(3, "a", due=LATER), row(4, "a")]
    chains, _short = first_chains(rows, NOW, lambda channel: 1)
    assert ids(chains) == [[1, 2]]
    long = [row(n, "a") for n in range(1, CHAIN + 10)]
    chains, short = first_chains(long, NOW, lambda channel: 1)
    assert ids(chains) == [list(range(1, CHAIN + 1))]
    assert not short


def test_each_channel_gets_its_own_room():
    rows = [row(n, f"job{n}", channel="mail" if n % 2 else "hook") for n in range(1, 11)]
    room = {"hook": 2, "mail": 0}
    chains, short = first_chains(rows, NOW, room.__getitem__)
    assert ids(chains) == [[2], [4]]
    assert not short  # hook got its two, mail has no room
    chains, short = first_chains(rows[:3], NOW, {"hook": 2, "mail": 1}.__getitem__)
    assert ids(chains) == [[1], [2]]
    assert short  # hook found one of two


def test_a_claim_names_at_most_so_many_deliveries_after_the_first_ones():
    chains = [[row(n * 10 + k, f"job{n}") for k in range(5)] for n in range(1, 4)]
    kept = within(chains, 6)
    assert ids(kept) == [[10, 11, 12, 13, 14], [20, 21, 22], [30]]
    assert ids(within(chains, 0)) == [[10], [20], [30]]
