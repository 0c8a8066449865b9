"""The feed's use cases on fakes: numbered in commit order, listed in pages, pruning told."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from tests.fakes import FakeDatabase, FakeEvents
from tests.unit.service_layer.conftest import EVENT, PRICE, later, paid_event, registration
from ticketing_service.domain import errors
from ticketing_service.domain.events import RegistrationEvent
from ticketing_service.domain.settings import Tier
from ticketing_service.service_layer import events_handlers
from ticketing_service.service_layer.dependencies import FEED_READS_AT_ONCE, Dependencies
from ticketing_service.service_layer.event_fanout import (
    MAX_PAGE_BYTES,
    WATCH_PAGE_BYTES,
    WATCH_PAGE_SIZE,
    EventFanout,
)
from ticketing_service.service_layer.events_handlers import (
    list_registration_events,
    prune_history,
    sequence_events,
    watch_registration_events,
)
from ticketing_service.service_layer.registration_handlers import start_paid_registration


@pytest.fixture(autouse=True)
def an_event_on_sale(database: FakeDatabase) -> None:
    database.store.settings[EVENT] = paid_event(Tier("vip", "VIP", PRICE, None))


async def test_events_are_numbered_once_and_listed_in_pages(deps: Dependencies) -> None:
    for user in ("a", "b", "c"):
        await start_paid_registration(deps, registration(user))
    assert await sequence_events(deps) == 3
    assert await sequence_events(deps) == 0

    first = await list_registration_events(deps, after_sequence=0, page_size=2)
    rest = await list_registration_events(deps, first.next_sequence, page_size=2)

    assert [e.sequence for e in first.events] == [1, 2]
    assert ([e.sequence for e in rest.events], rest.next_sequence) == ([3], 3)
    assert [e.reservation.user_id for e in first.events + rest.events] == ["a", "b", "c"]


async def test_a_consumer_behind_pruned_events_is_told_where_to_resume(
    deps: Dependencies, database: FakeDatabase
) -> None:
    await start_paid_registration(deps, registration("old"))
    await sequence_events(deps)
    later(database, 86_400)
    await start_paid_registration(deps, registration("new"))
    await sequence_events(deps)

    counts = await prune_history(deps, database.store.now - timedelta(hours=1))
    assert counts["registration_events"] == 1

    with pytest.raises(errors.EventsPruned) as pruned:
        await list_registration_events(deps, after_sequence=0, page_size=10)
    assert pruned.value.metadata == {"firstRetainedSequence": "2"}
    page = await list_registration_events(deps, after_sequence=1, page_size=10)
    assert [e.reservation.user_id for e in page.events] == ["new"]


async def test_pruning_keeps_every_number_from_the_first_one_kept(
    deps: Dependencies, database: FakeDatabase
) -> None:
    for user in ("a", "b", "c"):
        await start_paid_registration(deps, registration(user))
    await sequence_events(deps)
    later(database, 86_400)
    cutoff = database.store.now - timedelta(hours=1)
    # b's transaction began after the cutoff; c's, numbered after it, before.
    database.store.events = [
        replace(e, create_time=cutoff) if e.sequence == 2 else e for e in database.store.events
    ]

    counts = await prune_history(deps, cutoff)

    assert counts["registration_events"] == 1
    page = await list_registration_events(deps, after_sequence=1, page_size=10)
    assert [e.reservation.user_id for e in page.events] == ["b", "c"]


async def test_a_consumer_ahead_of_the_feed_is_told_the_last_sequence(deps: Dependencies) -> None:
    await start_paid_registration(deps, registration("a"))
    await sequence_events(deps)

    with pytest.raises(errors.SequenceAheadOfFeed) as ahead:
        await list_registration_events(deps, after_sequence=2, page_size=10)
    assert ahead.value.metadata == {"lastSequence": "1"}
    page = await list_registration_events(deps, after_sequence=1, page_size=10)
    assert (page.events, page.next_sequence) == ([], 1)


async def test_a_backlog_is_numbered_batch_by_batch_each_in_a_transaction_of_its_own(
    deps: Dependencies, database: FakeDatabase
) -> None:
    for user in range(5):
        await start_paid_registration(deps, registration(f"user-{user}"))
    commits_before = len(database.committed)

    assert await sequence_events(deps, batch_size=2) == 5

    assert len(database.committed) - commits_before == 3  # 2 + 2 + 1
    assert [e.sequence for e in database.store.events] == [1, 2, 3, 4, 5]


async def test_ending_the_watches_ends_each_one_at_its_wait_and_refuses_new_ones(
    deps: Dependencies,
) -> None:
    await start_paid_registration(deps, registration("a"))
    await sequence_events(deps)
    fanout = EventFanout(deps, max_watchers=10)
    watch = watch_registration_events(deps, fanout, after_sequence=0)
    first = await anext(watch)  # replayed; the next one waits for live events

    fanout.end_watches()

    with pytest.raises(errors.ServerStopping):
        await anext(watch)
    with pytest.raises(errors.ServerStopping):
        await anext(watch_registration_events(deps, fanout, after_sequence=1))
    assert first.sequence == 1


async def test_a_watch_catching_up_ends_at_its_next_page_once_the_watches_are_ended(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events_handlers, "WATCH_PAGE_SIZE", 1)
    for user in range(3):
        await start_paid_registration(deps, registration(f"user-{user}"))
    await sequence_events(deps)
    fanout = EventFanout(deps, max_watchers=10)
    watch = watch_registration_events(deps, fanout, after_sequence=0)
    first = await anext(watch)  # the first page of the backlog; more pages are to be read

    fanout.end_watches()

    with pytest.raises(errors.ServerStopping):
        await anext(watch)  # before: the whole backlog, page after page
    assert first.sequence == 1


async def test_feed_pages_are_read_from_the_database_a_few_at_a_time(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 99 watchers catching up at once held every pooled connection: purchases starved.
    reading, most, opened = 0, 0, asyncio.Event()
    listed = FakeEvents.list_after

    async def held_open(self: FakeEvents, *args: int) -> tuple[list[RegistrationEvent], bool]:
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        await opened.wait()
        reading -= 1
        return await listed(self, *args)

    monkeypatch.setattr(FakeEvents, "list_after", held_open)
    pages = [
        asyncio.ensure_future(list_registration_events(deps, after_sequence=0, page_size=10))
        for _ in range(6)
    ]
    for _ in range(10):  # every page that can start a read has started it
        await asyncio.sleep(0)
    assert reading == FEED_READS_AT_ONCE
    opened.set()
    await asyncio.gather(*pages)
    assert most == FEED_READS_AT_ONCE


async def test_a_watcher_catches_up_in_smaller_pages_than_a_listing(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A watcher holds its page until its client reads it: 99 that never read, each holding a
    # 3 MiB page of large events, took a replica from 73 to 464 MB.
    budgets: list[tuple[int, int]] = []
    listed = FakeEvents.list_after

    async def recorded(
        self: FakeEvents, after: int, limit: int, max_bytes: int
    ) -> tuple[list[RegistrationEvent], bool]:
        budgets.append((limit, max_bytes))
        return await listed(self, after, limit, max_bytes)

    monkeypatch.setattr(FakeEvents, "list_after", recorded)
    await start_paid_registration(deps, registration("a"))
    await sequence_events(deps)
    await list_registration_events(deps, after_sequence=0, page_size=10)
    fanout = EventFanout(deps, max_watchers=1)
    watch = watch_registration_events(deps, fanout, after_sequence=0)
    await anext(watch)
    fanout.end_watches()
    await watch.aclose()

    assert budgets == [(10, MAX_PAGE_BYTES), (WATCH_PAGE_SIZE, WATCH_PAGE_BYTES)]
