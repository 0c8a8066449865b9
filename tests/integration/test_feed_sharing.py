"""The feed under many and careless consumers: shared reads, slow watchers, poisoned pages."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import grpc
from moim.ticketing.v1 import registration_event_pb2 as events_pb2
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.flows import EVENT, configure_event, hold, paid_tier, sql
from ticketing_service.domain.errors import DatabaseUnavailable
from ticketing_service.domain.events import RegistrationEvent
from ticketing_service.entrypoints.grpc.server import start_server
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.event_fanout import READER_TASK_NAME, EventFanout
from ticketing_service.service_layer.events_handlers import (
    sequence_events,
    watch_registration_events,
)
from ticketing_service.service_layer.ports import UnitOfWork

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

WATCHERS = 20
CLIENT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a default client's limit on what it receives


class CountedDeps:
    """The real dependencies, counting every unit of work (each feed read opens one)."""

    def __init__(self, deps: Dependencies) -> None:
        self.opened = 0
        self.deps = dataclasses.replace(deps, uow=self._uow)
        self._uow_factory = deps.uow

    def _uow(self) -> UnitOfWork:
        self.opened += 1
        return self._uow_factory()


async def next_events(
    calls: list[
        grpc.aio.UnaryStreamCall[
            pb.WatchRegistrationEventsRequest, pb.WatchRegistrationEventsResponse
        ]
    ],
) -> list[int]:
    """The next event's sequence from each watcher."""
    sequences = []
    async with asyncio.timeout(30):
        for call in calls:
            response = await call.read()
            assert isinstance(response, pb.WatchRegistrationEventsResponse)
            sequences.append(response.event.sequence)
    return sequences


async def test_many_watchers_share_one_read_per_commit_and_each_gets_every_event_once(
    stub: Stub, deps: Dependencies
) -> None:
    await configure_event(stub)
    await hold(stub, "first")
    await sequence_events(deps)
    counted = CountedDeps(deps)
    watched = await start_server(counted.deps, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{watched.port}") as channel:
            watcher_stub = pb_grpc.TicketingServiceStub(channel)
            calls = [
                watcher_stub.WatchRegistrationEvents(pb.WatchRegistrationEventsRequest())
                for _ in range(WATCHERS)
            ]
            replayed = await next_events(calls)  # each caught up by reading the database once
            reads_before = counted.opened

            await hold(stub, "second")  # written and numbered through the other server
            await sequence_events(deps)
            live = await next_events(calls)
            reads_for_the_write = counted.opened - reads_before

            for call in calls:
                call.cancel()
    finally:
        await watched.stop(0)
    assert (replayed, live) == ([1] * WATCHERS, [2] * WATCHERS)
    # One read by the shared reader (and perhaps its safety-net timer), not one per watcher.
    assert reads_for_the_write <= 3


async def collect(events: AsyncIterator[RegistrationEvent], count: int) -> list[int]:
    seen = []
    async with asyncio.timeout(30):
        async for event in events:
            seen.append(event.sequence)
            if len(seen) == count:
                break
    return seen


async def test_a_watcher_too_slow_for_its_queue_catches_up_from_the_database_in_order(
    stub: Stub, deps: Dependencies
) -> None:
    await configure_event(stub, paid_tier("vip"))
    await hold(stub, "first")
    await sequence_events(deps)
    fanout = EventFanout(deps, max_watchers=10, max_queued_events=1)
    slow = watch_registration_events(deps, fanout, 0)
    fast = watch_registration_events(deps, fanout, 0)
    fast_sees = None
    try:
        assert await collect(slow, 1) == [1]  # then it stops reading for a while
        fast_sees = asyncio.create_task(collect(fast, 5))
        for user in range(4):
            await hold(stub, f"late-{user}")
            await sequence_events(deps)  # one offer each: the slow queue overflows at once
        assert await fast_sees == [1, 2, 3, 4, 5]
        assert await collect(slow, 4) == [2, 3, 4, 5]
    finally:
        if fast_sees is not None:
            fast_sees.cancel()
            await asyncio.gather(fast_sees, return_exceptions=True)
        await slow.aclose()
        await fast.aclose()


async def test_a_page_of_the_feed_stays_within_what_a_default_client_receives(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub)
    # Nearly the largest answers allowed (16 KiB in all, 4000 characters each).
    answers = [reservation_pb2.Answer(question_id=f"q{n}", answer="x" * 4000) for n in range(4)]
    await stub.StartPaidRegistration(
        pb.StartPaidRegistrationRequest(event_id=EVENT, tier_id="vip", user_id="u", answers=answers)
    )
    # 300 events that each carry those answers: nearly 5 MB of feed.
    sql(
        database_url,
        "INSERT INTO registration_events (type, reservation_id, reservation)"
        " SELECT type, reservation_id, reservation FROM registration_events,"
        " generate_series(1, 299)",
    )
    await sequence_events(deps)

    pages: list[pb.ListRegistrationEventsResponse] = []
    after = 0
    while not pages or pages[-1].events:
        pages.append(
            await stub.ListRegistrationEvents(
                pb.ListRegistrationEventsRequest(after_sequence=after, page_size=1000)
            )
        )
        after = pages[-1].next_sequence

    events: list[events_pb2.RegistrationEvent] = [e for page in pages for e in page.events]
    assert [e.sequence for e in events] == list(range(1, 301))
    assert sum(e.ByteSize() for e in events) > CLIENT_MAX_MESSAGE_BYTES  # the control
    assert len(pages[0].events) < 300
    assert all(page.ByteSize() < CLIENT_MAX_MESSAGE_BYTES for page in pages)


class ReaderOnCue:
    """The real dependencies, where each unit of work of the shared reader waits for a cue.

    So a test can number an event at the worst moment: after a watcher read the database and
    before the reader looks. The reader's wake-ups are immediate (its passes wait on the cues
    instead); `watcher_read` is set whenever another unit of work (a watcher's read) ends.
    """

    def __init__(self, deps: Dependencies) -> None:
        self.deps = dataclasses.replace(deps, uow=self._uow, event_signal=_AtOnce())
        self.watcher_read = asyncio.Event()
        self._uow_factory = deps.uow
        self._cues: asyncio.Queue[bool] = asyncio.Queue()

    def let_through(self) -> None:
        """The reader's next pass reads the database."""
        self._cues.put_nowait(False)

    def fail(self) -> None:
        """The reader's next pass fails before it reads anything."""
        self._cues.put_nowait(True)

    def _uow(self) -> UnitOfWork:
        task = asyncio.current_task()
        if task is not None and task.get_name() == READER_TASK_NAME:
            return cast(UnitOfWork, _Cued(self._uow_factory(), cues=self._cues))
        return cast(UnitOfWork, _Cued(self._uow_factory(), ended=self.watcher_read))


class _Cued:
    """A unit of work that begins on its cue (if it has cues) and tells when it ended."""

    def __init__(
        self,
        inner: UnitOfWork,
        cues: asyncio.Queue[bool] | None = None,
        ended: asyncio.Event | None = None,
    ) -> None:
        self._inner, self._cues, self._ended = inner, cues, ended

    async def __aenter__(self) -> UnitOfWork:
        if self._cues is not None and await self._cues.get():
            raise DatabaseUnavailable("the reader's pass failed, on cue")
        return await self._inner.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)
        if self._ended is not None:
            self._ended.set()


class _AtOnce:
    def generation(self) -> int:
        return 0

    async def wait_beyond(self, generation: int, timeout: float) -> None:  # noqa: ASYNC109  # the port's signature
        await asyncio.sleep(0)


async def number_an_event(stub: Stub, deps: Dependencies, user: str) -> None:
    """A hold of `user`, numbered on the feed."""
    await hold(stub, user)
    await sequence_events(deps)


@asynccontextmanager
async def first_watcher_on_cue(
    stub: Stub, deps: Dependencies
) -> AsyncIterator[tuple[ReaderOnCue, AsyncIterator[RegistrationEvent]]]:
    """A process's first watcher, its shared reader on cue, once it read event 1 itself."""
    await configure_event(stub)
    await number_an_event(stub, deps, "first")
    reader = ReaderOnCue(deps)
    watcher = watch_registration_events(reader.deps, EventFanout(reader.deps, 10), 0)
    try:
        assert await collect(watcher, 1) == [1]
        yield reader, watcher
    finally:
        await watcher.aclose()


async def test_an_event_numbered_before_the_shared_reader_starts_reaches_the_first_watcher(
    stub: Stub, deps: Dependencies
) -> None:
    # The first watcher started the shared reader and read the database itself ...
    async with first_watcher_on_cue(stub, deps) as (reader, watcher):
        # ... then an event is numbered before the reader first looks.
        await number_an_event(stub, deps, "second")
        reader.let_through()
        assert await collect(watcher, 1) == [2]


async def test_after_the_shared_reader_failed_it_misses_nothing_numbered_meanwhile(
    stub: Stub, deps: Dependencies
) -> None:
    async with first_watcher_on_cue(stub, deps) as (reader, watcher):
        reader.let_through()  # a pass that finds nothing new
        next_event = asyncio.create_task(collect(watcher, 1))
        reader.watcher_read.clear()
        reader.fail()  # the watcher is told to read the database itself ...
        async with asyncio.timeout(30):
            await reader.watcher_read.wait()
        await number_an_event(stub, deps, "second")  # ... and an event is numbered after it did
        reader.let_through()
        assert await next_event == [2]
