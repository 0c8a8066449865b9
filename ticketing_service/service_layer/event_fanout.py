"""One reader of the feed per process, handing each newly numbered event to every watcher.

Without it each watcher ran its own query on every wake-up, so N watchers drained the pool with
N queries per commit. Now one task reads what was numbered once per wake-up and offers it to
every watcher's bounded queue. A watcher still reads the database itself to catch up (at the
start, after a gap, or when it fell behind), then joins the shared stream again.

Correctness does not depend on the reader's timing: a watcher subscribes before it reads the
database, and it checks that what it is handed follows what it has (numbers have no gaps), so
an event the reader handed out before the watcher joined is found by the watcher's own read.
The other way round, the reader never starts past what a watcher read: the first watcher finds
where the reader starts before it reads the database itself, and a reader that failed goes on
from where it was. So every event numbered after a watcher's read is handed to it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ticketing_service.domain.errors import ServerStopping, TicketingError, TooManyWatchers
from ticketing_service.domain.events import RegistrationEvent
from ticketing_service.service_layer.dependencies import Dependencies

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
# A page's stored snapshots stay under this many bytes, so every page, encoded, fits in a
# client's default 4 MiB message limit. One event is at most about 20 KiB (16 KiB of answers).
MAX_PAGE_BYTES = 3 * 1024 * 1024
# A watcher catching up reads smaller pages: it holds its page until its client has read it,
# and 99 watchers that never read, each holding a 3 MiB page of large events, took a replica
# from 109 to 548 MB (172 MB with these pages). A page reads its rows before it cuts them to
# its bytes, so its rows are bounded too: with 1,000, 20 watchers catching up on 1,500 large
# events read ten rows for each one sent and took 12.5 s; with 100, 5.9 s.
WATCH_PAGE_BYTES = 256 * 1024
WATCH_PAGE_SIZE = 100
# Watchers are woken by LISTEN/NOTIFY; this timer is only a safety net for a lost signal.
WATCH_RECHECK_SECONDS = 5.0
# Events one watcher may have waiting; a watcher that falls further behind (a slow client)
# is dropped from the shared stream and catches up from the database instead.
MAX_QUEUED_EVENTS = 2000
READER_TASK_NAME = "registration-event-reader"


# What a watch ends with when its process stops.
STOPPING = "This server is stopping; watch again after the last sequence you applied."


class LiveEvents:
    """What the shared reader handed one watcher, in order, or word that some were dropped."""

    def __init__(self, capacity: int = MAX_QUEUED_EVENTS) -> None:
        self._capacity = capacity
        self._batches: deque[list[RegistrationEvent]] = deque()
        self._queued = 0
        self._behind = False
        self._ended = False
        self._ready = asyncio.Event()

    def offer(self, events: list[RegistrationEvent]) -> None:
        """Queue a page of events; past the capacity, drop everything and fall behind."""
        if self._behind:
            return
        if self._queued + len(events) > self._capacity:
            self.fall_behind()
            return
        self._batches.append(events)
        self._queued += len(events)
        self._ready.set()

    def fall_behind(self) -> None:
        """Drop what is queued: the watcher must read the database to catch up."""
        self._batches.clear()
        self._queued = 0
        self._behind = True
        self._ready.set()

    def end(self) -> None:
        """The process is stopping: the next take, or check, raises ServerStopping."""
        self._ended = True
        self._ready.set()

    def check(self) -> None:
        """ServerStopping once the watch was ended: a watcher catching up from the database
        checks before each page, or it read on until the whole backlog was sent (7,000 events
        held a stop 7 s, and under load the grace ran out and the watch ended CANCELLED)."""
        if self._ended:
            raise ServerStopping(STOPPING)

    async def take(self) -> list[RegistrationEvent] | None:
        """The events queued since the last take (waiting for some); None after a drop;
        ServerStopping once the watch was ended."""
        await self._ready.wait()
        self._ready.clear()
        self.check()
        if self._behind:
            self._behind = False
            return None
        events = [event for batch in self._batches for event in batch]
        self._batches.clear()
        self._queued = 0
        return events


class EventFanout:
    """The watchers of one process and the single reader that feeds them."""

    def __init__(
        self, deps: Dependencies, max_watchers: int, max_queued_events: int = MAX_QUEUED_EVENTS
    ) -> None:
        self._deps = deps
        self._max_watchers = max_watchers
        self._max_queued_events = max_queued_events
        self._watchers: set[LiveEvents] = set()
        self._reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._ended = False

    def end_watches(self) -> None:
        """The process is stopping: every watch ends at its next wait for events, and no new one
        starts. A watch would otherwise hold the stop for its whole grace period, and its client
        would learn of the stop only then."""
        self._ended = True
        for live in self._watchers:
            live.end()

    @asynccontextmanager
    async def watcher(self) -> AsyncIterator[LiveEvents]:
        """A place among the watchers, held until the block exits; TooManyWatchers if full,
        ServerStopping once the watches were ended."""
        if self._ended:
            raise ServerStopping(STOPPING)
        if len(self._watchers) >= self._max_watchers:
            raise TooManyWatchers(
                "This server streams the feed to as many watchers as it takes; retry later.",
                maxWatchers=str(self._max_watchers),
            )
        live = LiveEvents(self._max_queued_events)
        self._watchers.add(live)
        try:
            await self._start_reader()
            yield live
        finally:
            self._watchers.discard(live)
            if not self._watchers and self._reader is not None:
                self._reader.cancel()  # it has nobody to read for; the next watcher starts one
                self._reader = None

    async def _start_reader(self) -> None:
        """Start the reader if none runs, from the last number given so far.

        Awaited before the watcher reads the database: a reader that found its start later
        could start past an event numbered in between, which no watcher would then be handed.
        """
        async with self._starting:  # one reader, however many watchers arrive together
            if self._reader is None:
                async with self._deps.uow() as uow:
                    cursor = (await uow.events.retained_range())[1]
                self._reader = asyncio.create_task(self._read(cursor), name=READER_TASK_NAME)

    async def _read(self, cursor: int) -> None:
        while True:
            signal = self._deps.event_signal
            generation = signal.generation() if signal else 0
            try:
                cursor = await self._hand_out(cursor)
            except Exception as error:
                # Whatever failed, no watcher may wait on a reader that cannot read: each one
                # reads the database itself (and reports the failure to its client if it lasts).
                # The reader keeps its cursor: what is numbered meanwhile is still handed out.
                _log_failure(error)
                for live in self._watchers:
                    live.fall_behind()
            if signal is None:
                await asyncio.sleep(WATCH_RECHECK_SECONDS)
            else:
                await signal.wait_beyond(generation, WATCH_RECHECK_SECONDS)

    async def _hand_out(self, cursor: int) -> int:
        """Offer every event numbered after `cursor` to every watcher; return the new cursor."""
        async with self._deps.uow() as uow:
            while True:
                events, more = await uow.events.list_after(cursor, MAX_PAGE_SIZE, MAX_PAGE_BYTES)
                if events:
                    for live in self._watchers:
                        live.offer(events)
                    cursor = events[-1].sequence
                if not more:
                    return cursor


def _log_failure(error: Exception) -> None:
    if isinstance(error, TicketingError):  # the database away: expected, and said by its reason
        log.warning("the event reader failed (%s); watchers read the feed themselves", error.reason)
    else:
        log.error("the event reader failed; watchers read the feed themselves", exc_info=error)
