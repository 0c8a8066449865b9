"""Supervision of background work: a failure is logged, backed off and retried, never fatal.

Each background task (sweeper, fold, sequencer, reconciler, refund worker) is one pass run over
and over. A pass that fails is logged (a TicketingError, such as the database being away, as a
warning; anything else with its stack), then retried after a back-off that doubles up to a
ceiling. A task whose passes keep failing is reported unhealthy, so the process stops saying it
serves (health NOT_SERVING) instead of running on with a dead task; its next good pass reports
it healthy again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ticketing_service.domain.errors import TicketingError

log = logging.getLogger(__name__)


class TaskHealth(Protocol):
    """Told when a supervised task starts failing and when it recovers."""

    def report(self, task: str, healthy: bool) -> None:
        """Record whether `task` is doing its work."""
        ...


@dataclass(frozen=True, slots=True)
class Supervision:
    """How a task's failures are retried and when it counts as unhealthy."""

    first_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 60.0
    # Passes failed in a row before the task is reported unhealthy: one failure is usually a
    # blip (a connection replaced, a lock timeout); several mean the task cannot do its work.
    failures_before_unhealthy: int = 3

    def backoff(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row: doubling, up to the ceiling."""
        return min(self.first_backoff_seconds * 2.0 ** (failures - 1), self.max_backoff_seconds)


async def supervise(
    name: str,
    one_pass: Callable[[], Awaitable[object]],
    wait: Callable[[], Awaitable[object]],
    health: TaskHealth,
    supervision: Supervision = Supervision(),
) -> None:
    """Run `one_pass`, then `wait`, forever (until cancelled); failures as described above."""
    failures = 0
    while True:
        try:
            await one_pass()
        except TicketingError as error:
            failures += 1
            log.warning("%s failed (%s), %d in a row", name, error.reason, failures)
        except Exception:
            failures += 1
            log.exception("%s failed unexpectedly, %d in a row", name, failures)
        else:
            if failures >= supervision.failures_before_unhealthy:
                log.info("%s recovered", name)
                health.report(name, True)
            failures = 0
            await wait()
            continue
        if failures == supervision.failures_before_unhealthy:
            health.report(name, False)
        await asyncio.sleep(supervision.backoff(failures))


def every(seconds: float) -> Callable[[], Awaitable[None]]:
    """A wait of `seconds` between passes."""

    async def wait() -> None:
        await asyncio.sleep(seconds)

    return wait


class HealthBoard:
    """The TaskHealth of one process: healthy while none of its tasks is failing.

    `on_change` is told each time the whole turns healthy or unhealthy (the server's health
    service follows it); before one is set, the board only keeps count.
    """

    def __init__(self) -> None:
        self._failing: set[str] = set()
        self._on_change: Callable[[bool], None] | None = None

    @property
    def healthy(self) -> bool:
        """Whether every task does its work."""
        return not self._failing

    def follow(self, on_change: Callable[[bool], None]) -> None:
        """Tell `on_change` the health now and at every change."""
        self._on_change = on_change
        on_change(self.healthy)

    def report(self, task: str, healthy: bool) -> None:
        """Record a task's health; tell the follower if the whole changed."""
        before = self.healthy
        if healthy:
            self._failing.discard(task)
        else:
            self._failing.add(task)
        if self.healthy != before and self._on_change is not None:
            self._on_change(self.healthy)
