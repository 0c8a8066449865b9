"""LiveEvents: one watcher's bounded queue of what the shared reader handed out."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import cast

from ticketing_service.domain.events import RegistrationEvent
from ticketing_service.service_layer.event_fanout import LiveEvents


def events(*sequences: int) -> list[RegistrationEvent]:
    # The queue never looks inside an event; a stand-in with a sequence is enough.
    return [cast(RegistrationEvent, SimpleNamespace(sequence=n)) for n in sequences]


def sequences(taken: list[RegistrationEvent] | None) -> list[int] | None:
    return None if taken is None else [e.sequence for e in taken]


async def test_pages_offered_come_out_together_and_in_order() -> None:
    live = LiveEvents(capacity=10)
    live.offer(events(1, 2))
    live.offer(events(3))
    assert sequences(await live.take()) == [1, 2, 3]


async def test_take_waits_for_an_offer() -> None:
    live = LiveEvents(capacity=10)
    taking = asyncio.create_task(live.take())
    await asyncio.sleep(0)
    assert not taking.done()
    live.offer(events(7))
    async with asyncio.timeout(5):
        assert sequences(await taking) == [7]


async def test_past_its_capacity_a_watcher_falls_behind_once_then_is_fed_again() -> None:
    live = LiveEvents(capacity=3)
    live.offer(events(1, 2))
    live.offer(events(3, 4))  # would hold 4: everything queued is dropped
    live.offer(events(5))  # ignored until the watcher has caught up from the database
    assert await live.take() is None
    live.offer(events(6))
    assert sequences(await live.take()) == [6]


async def test_falling_behind_wakes_a_waiting_watcher() -> None:
    live = LiveEvents(capacity=3)
    taking = asyncio.create_task(live.take())
    await asyncio.sleep(0)
    live.fall_behind()  # the shared reader failed
    async with asyncio.timeout(5):
        assert await taking is None
