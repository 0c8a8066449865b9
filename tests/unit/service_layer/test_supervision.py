"""A supervised task survives every kind of failure, and says when it cannot do its work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from ticketing_service.domain.errors import DatabaseUnavailable
from ticketing_service.service_layer.supervision import HealthBoard, Supervision, supervise

QUICK = Supervision(first_backoff_seconds=0.001, max_backoff_seconds=0.004)


class Health:
    def __init__(self) -> None:
        self.reports: list[tuple[str, bool]] = []

    def report(self, task: str, healthy: bool) -> None:
        self.reports.append((task, healthy))


def scripted(
    outcomes: list[BaseException | None], done: asyncio.Event
) -> Callable[[], Awaitable[None]]:
    """A pass that raises or succeeds as `outcomes` say, then sets `done`."""
    remaining = list(outcomes)

    async def one_pass() -> None:
        if not remaining:
            done.set()
            await asyncio.Event().wait()  # the test cancels it here
        outcome = remaining.pop(0)
        if outcome is not None:
            raise outcome

    return one_pass


async def run_until_done(outcomes: list[BaseException | None], health: Health) -> None:
    done = asyncio.Event()

    async def no_wait() -> None:
        return None

    task = asyncio.create_task(
        supervise("sweeper", scripted(outcomes, done), no_wait, health, QUICK)
    )
    async with asyncio.timeout(10):
        await done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_survives_any_exception_and_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = Health()
    failures: list[BaseException | None] = [
        RuntimeError("a bug"),
        DatabaseUnavailable("The database is away."),
        OSError("reset"),
        None,
    ]
    with caplog.at_level(logging.WARNING):
        await run_until_done(failures, health)
    assert [r.levelname for r in caplog.records] == ["ERROR", "WARNING", "ERROR"]
    assert caplog.records[0].exc_info is not None  # a bug is logged with its stack


async def test_a_task_failing_in_a_row_is_unhealthy_until_a_pass_succeeds() -> None:
    health = Health()
    await run_until_done([RuntimeError()] * 4 + [None, RuntimeError(), None], health)
    assert health.reports == [("sweeper", False), ("sweeper", True)]


async def test_a_blip_is_retried_without_turning_unhealthy() -> None:
    health = Health()
    await run_until_done([RuntimeError(), RuntimeError(), None], health)
    assert health.reports == []


def test_the_backoff_doubles_up_to_its_ceiling() -> None:
    supervision = Supervision(first_backoff_seconds=1, max_backoff_seconds=60)
    assert [supervision.backoff(n) for n in (1, 2, 3, 6, 7, 20)] == [1, 2, 4, 32, 60, 60]


def test_the_board_is_unhealthy_while_any_task_fails_and_tells_each_change_once() -> None:
    board = HealthBoard()
    board.report("sweeper", False)  # before anyone follows: only kept
    changes: list[bool] = []
    board.follow(changes.append)
    board.report("reconciler", False)
    board.report("sweeper", True)
    board.report("reconciler", True)
    assert changes == [False, True]
    assert board.healthy
