"""What the repositories of one transaction share: the events it appended, and the test-only
switches that take a protection away.

Locking discipline (every lock is transaction-scoped, so a crash or rollback releases it):
- a user's attempts at one event are serialized by an advisory lock on (event, user);
- a reservation's confirmations by its row lock (`SELECT … FOR UPDATE`);
- seat counting by the tier's row lock;
- folding confirmed seats into their tiers by an advisory lock one sweeper holds at a time
  (a fold touches several tiers in no set order; the others skip their turn).
Order is always user → reservation → tier; `lock_timeout` turns any unexpected wait into
`CONCURRENT_UPDATE` instead of a hang.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ticketing_service.adapters.db.reservation_rows import reservation_from
from ticketing_service.adapters.db.transaction import Transaction
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reservations import Reservation

Pause = Callable[[str], Awaitable[None]]


async def no_pause(point: str) -> None:
    """The production pause: none."""


@dataclass(frozen=True, slots=True)
class Protections:
    """The concurrency protections, all on in production.

    Only the tests that prove each protection matters turn one off (and `pause` at a named
    point to force the interleaving it prevents); the composition root never passes these.
    """

    locking: bool = True
    clock_after_lock: bool = True
    one_snapshot: bool = True
    pause: Pause = no_pause


@dataclass(slots=True)
class Changes:
    """One transaction's connection and the feed events it appended, by type: once it commits,
    the unit of work hands them on (the sequencer numbers them, the metrics count them)."""

    tx: Transaction
    appended: Counter[RegistrationEventType] = field(default_factory=Counter)

    async def reservation(
        self, event: RegistrationEventType, statement: str, **params: Any
    ) -> Reservation | None:
        """Run a statement that changes a reservation and appends `event`; the row after."""
        row = await self.tx.one(statement, {"event": event.value, **params})
        if row is None:
            return None
        self.appended[event] += 1
        return reservation_from(row)
