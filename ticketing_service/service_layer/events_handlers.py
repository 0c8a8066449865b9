"""Use cases of the registration event feed: list, watch, number (sequencer) and prune."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import get_args

from ticketing_service.domain.errors import EventsPruned, SequenceAheadOfFeed
from ticketing_service.domain.events import RegistrationEvent
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.event_fanout import (
    MAX_PAGE_BYTES,
    WATCH_PAGE_BYTES,
    WATCH_PAGE_SIZE,
    EventFanout,
)
from ticketing_service.service_layer.ports import PrunedRecords, UnitOfWork

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 100
# Events numbered per transaction; a busy second commits far fewer.
SEQUENCE_BATCH = 5000
# Rows `prune-events` deletes per statement and transaction: well inside the statement timeout
# (at about 2 µs a row, 30 s is some 13 million).
PRUNE_BATCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of the feed, the `after_sequence` to ask for next, and whether more may follow."""

    events: list[RegistrationEvent]
    next_sequence: int
    more: bool = False


async def list_registration_events(
    deps: Dependencies, after_sequence: int, page_size: int, max_bytes: int = MAX_PAGE_BYTES
) -> EventPage:
    """The numbered events after `after_sequence`; EventsPruned if some were pruned, and
    SequenceAheadOfFeed if `after_sequence` was never numbered.

    A page holds at most `page_size` events and `max_bytes` of them, but always one. It
    waits its turn among the process's feed reads (FEED_READS_AT_ONCE).
    """
    async with deps.feed_reads, deps.uow() as uow:
        events, more = await uow.events.list_after(
            after_sequence, page_size or DEFAULT_PAGE_SIZE, max_bytes
        )
        first_kept, last_given = await uow.events.retained_range()
    if after_sequence > last_given:
        # Waiting would not do: once the feed passed the cursor, the events up to it (never
        # seen by this consumer) would be skipped without a word.
        raise SequenceAheadOfFeed(
            "This sequence was never numbered by this feed: the cursor comes from another one"
            " (another environment, or a database since restored); rebuild the consumer's state.",
            lastSequence=str(last_given),
        )
    # Numbers have no gaps, so a consumer behind the oldest kept event has provably missed some.
    oldest_unseen = after_sequence + 1
    missed = (first_kept or last_given + 1) > oldest_unseen and last_given >= oldest_unseen
    if missed:
        raise EventsPruned(
            "Events after this sequence were pruned; resynchronize and resume from the oldest.",
            firstRetainedSequence=str(first_kept or last_given + 1),
        )
    next_sequence = events[-1].sequence if events else after_sequence
    return EventPage(events, next_sequence, more)


async def watch_registration_events(
    deps: Dependencies, fanout: EventFanout, after_sequence: int
) -> AsyncGenerator[RegistrationEvent, None]:
    """Replay what came after `after_sequence`, then each event as it is numbered.

    Live events come from the process's shared reader (`fanout`); the watcher reads the
    database itself only to catch up: at the start, after a gap, or when it fell behind.
    """
    async with fanout.watcher() as live:  # before the first read: nothing numbered is missed
        cursor = after_sequence
        while True:
            page = EventPage([], cursor, more=True)
            while page.more:
                live.check()
                page = await list_registration_events(
                    deps, cursor, WATCH_PAGE_SIZE, WATCH_PAGE_BYTES
                )
                for event in page.events:
                    yield event
                cursor = page.next_sequence
            while (events := await live.take()) is not None:
                if events[0].sequence > cursor + 1:
                    break  # a gap (numbered before this watcher joined): read it from the database
                for event in events:
                    if event.sequence > cursor:  # the catch-up read may have given it already
                        yield event
                        cursor = event.sequence


async def sequence_events(deps: Dependencies, batch_size: int = SEQUENCE_BATCH) -> int:
    """Number every event committed so far that has no number yet, in one pass.

    A pass numbers everything committed before it started, a batch per transaction (a backlog
    after a long outage is never one statement that outruns the statement timeout). What commits
    during the pass wakes the sequencer again.
    """
    total = 0
    while True:
        async with deps.uow() as uow:
            numbered = await uow.events.sequence_pending(batch_size)
            await uow.commit()
        total += numbered
        if numbered < batch_size:
            return total


class Sequencer:
    """Numbers events whenever this process commits some, and every interval for the others.

    Passes start at least `min_pass_seconds` apart. A commit after a quiet spell is numbered at
    once; under load, the commits that arrive during that spacing are numbered by the next
    pass together, instead of one pass each. Each pass is a transaction that takes the
    numbering lock (shared by every process), and one per commit cost about as much as the
    commits that woke it. Feed consumers see events at most that much later, never out of order.
    """

    def __init__(self, interval_seconds: float, min_pass_seconds: float = 0.0) -> None:
        self.wakeup = asyncio.Event()
        self._interval = interval_seconds
        self._min_pass = min_pass_seconds
        self._last_pass = -math.inf

    async def one_pass(self, deps: Dependencies) -> None:
        """Number what was committed so far. Only a pass that numbered something spaces the next
        one: a pass that found nothing says nothing about load."""
        began = asyncio.get_running_loop().time()
        self.wakeup.clear()
        if await sequence_events(deps):
            self._last_pass = began

    async def wait(self) -> None:
        """Until a commit wakes it (or the interval passes), and the spacing since the last."""
        try:
            async with asyncio.timeout(self._interval):
                await self.wakeup.wait()
        except TimeoutError:
            pass
        spacing = self._last_pass + self._min_pass - asyncio.get_running_loop().time()
        if spacing > 0:
            await asyncio.sleep(spacing)


async def prune_history(
    deps: Dependencies, cutoff: datetime, batch_size: int = PRUNE_BATCH_SIZE
) -> dict[str, int]:
    """Delete what is kept only for a while, from before `cutoff`: numbered feed events,
    webhook deliveries, mismatched payments' records, removed tiers; how many of each.

    Each table is pruned `batch_size` rows at a time, each batch its own transaction, until
    none is left: one statement over a backlog of millions ran past the statement timeout, and
    could never be done. A failure keeps the batches committed before it.
    """

    # Only numbers below the first one kept: an event is numbered once its transaction
    # commits, but stamped when it began, so an older stamp may carry a higher number than a
    # newer one. Pruning by stamp alone deleted such a number inside the kept range, a gap a
    # consumer resuming at the first retained sequence skipped with no EVENTS_PRUNED.
    async with deps.uow() as uow:
        below = await uow.events.first_kept_after(cutoff)

    def events(uow: UnitOfWork) -> Awaitable[int]:
        return uow.events.prune_before(cutoff, below, batch_size)

    pruned = {"registration_events": await _in_batches(deps, events, batch_size)}
    for kind in get_args(PrunedRecords):

        def records(uow: UnitOfWork, kind: PrunedRecords = kind) -> Awaitable[int]:
            return uow.sweeps.prune_records_before(kind, cutoff, batch_size)

        pruned[kind] = await _in_batches(deps, records, batch_size)
    return pruned


async def _in_batches(
    deps: Dependencies, prune_batch: Callable[[UnitOfWork], Awaitable[int]], batch_size: int
) -> int:
    """Run `prune_batch`, a transaction each time, until it deletes fewer than `batch_size`;
    how many it deleted in all."""
    total = 0
    while True:
        async with deps.uow() as uow:
            deleted = await prune_batch(uow)
            await uow.commit()
        total += deleted
        if deleted < batch_size:
            return total
