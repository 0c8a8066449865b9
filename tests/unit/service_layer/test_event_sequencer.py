"""The sequencer's loop: numbered at once after a quiet spell, and in shared passes under load."""

from __future__ import annotations

import asyncio
from functools import partial
from types import TracebackType
from typing import Any, cast

from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.events_handlers import Sequencer
from ticketing_service.service_layer.supervision import HealthBoard, supervise


class _Events:
    """Counts the passes after the first; the first (as the task starts) finds nothing."""

    def __init__(self, passes: list[int], pass_done: asyncio.Event) -> None:
        self._passes = passes
        self._pass_done = pass_done
        self.started = asyncio.Event()

    async def sequence_pending(self, limit: int) -> int:
        await asyncio.sleep(0)  # a real pass awaits the database: commits may wake it meanwhile
        if not self.started.is_set():
            self.started.set()
            return 0
        self._passes.append(1)
        self._pass_done.set()
        return 1


class _UnitOfWork:
    def __init__(self, events: _Events) -> None:
        self.events = events

    async def __aenter__(self) -> _UnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def commit(self) -> None:
        return None


async def _passes_after_a_burst_of_commits(
    min_pass_seconds: float, passes_to_await: int
) -> tuple[int, bool]:
    """Wake the sequencer with 10 commits in a burst; its passes and whether it is still woken."""
    passes: list[int] = []
    pass_done = asyncio.Event()
    events = _Events(passes, pass_done)
    deps = Dependencies(uow=lambda: cast(Any, _UnitOfWork(events)), payment_service=cast(Any, None))
    numberer = Sequencer(interval_seconds=3600, min_pass_seconds=min_pass_seconds)
    wakeup = numberer.wakeup
    sequencer = asyncio.create_task(
        supervise("sequencer", partial(numberer.one_pass, deps), numberer.wait, HealthBoard())
    )
    async with asyncio.timeout(10):  # the pass as the task starts: nothing committed yet
        await events.started.wait()
    try:
        for _ in range(10):
            wakeup.set()  # a commit that appended events
            await asyncio.sleep(0)
        async with asyncio.timeout(10):
            while len(passes) < passes_to_await:
                pass_done.clear()
                await pass_done.wait()
        for _ in range(10):  # let a pass that a late wake-up asked for begin and end
            await asyncio.sleep(0)
        return len(passes), wakeup.is_set()
    finally:
        sequencer.cancel()


async def test_after_a_quiet_spell_a_commit_is_numbered_at_once() -> None:
    # However long the spacing between passes, the first wake-up does not wait for it: the
    # 10 s timeout above would fail this test otherwise.
    passes, _ = await _passes_after_a_burst_of_commits(min_pass_seconds=3600, passes_to_await=1)

    assert passes == 1


async def test_commits_that_arrive_during_the_spacing_share_the_next_pass() -> None:
    # One pass at once for the first commit, one for the nine that woke it meanwhile, and then
    # nothing is left to do.
    passes, still_woken = await _passes_after_a_burst_of_commits(
        min_pass_seconds=0.2, passes_to_await=2
    )

    assert passes == 2
    assert not still_woken


async def test_without_spacing_each_wake_up_during_a_pass_costs_another_pass() -> None:
    # The control: the same burst without spacing takes more than two passes.
    passes, still_woken = await _passes_after_a_burst_of_commits(
        min_pass_seconds=0, passes_to_await=2
    )

    assert passes + int(still_woken) > 2
