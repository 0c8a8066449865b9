"""The expiry sweeper: moves overdue holds to `expired` in small batches.

Correctness never depends on it (seat counts read `expire_time` directly); it keeps statuses
truthful for readers. Batches skip rows another replica or a confirmation has locked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ticketing_service.domain.errors import TicketingError
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.ports import SweepRepository

log = logging.getLogger(__name__)

BATCH_SIZE = 100


async def expire_overdue_holds(deps: Dependencies, batch_size: int = BATCH_SIZE) -> int:
    """Expire every overdue hold, one short transaction per batch; return how many."""
    return await _in_batches(deps, lambda repo, n: repo.expire_overdue(n), batch_size)


async def fold_confirmed_seats(deps: Dependencies, batch_size: int = BATCH_SIZE) -> int:
    """Move confirmed seats into their tiers' accepted counts, keeping seat counts cheap."""
    return await _in_batches(deps, lambda repo, n: repo.fold_confirmed_seats(n), batch_size)


async def _in_batches(
    deps: Dependencies,
    step: Callable[[SweepRepository, int], Awaitable[int]],
    batch_size: int,
) -> int:
    """Repeat one batch step, each in its own short transaction, until a batch comes up short."""
    total = 0
    while True:
        async with deps.uow() as uow:
            done = await step(uow.sweeps, batch_size)
            await uow.commit()
        total += done
        if done < batch_size:
            return total


async def run_expiry_sweeper(deps: Dependencies, interval_seconds: float) -> None:
    """Sweep every `interval_seconds` until cancelled; a failed sweep is logged and retried."""
    while True:
        try:
            expired = await expire_overdue_holds(deps)
            folded = await fold_confirmed_seats(deps)
            if expired or folded:
                log.info("expired %d overdue holds, folded %d confirmed seats", expired, folded)
        except TicketingError as error:
            log.warning("expiry sweep failed: %s", error.reason)
        await asyncio.sleep(interval_seconds)
