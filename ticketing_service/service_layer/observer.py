"""What the use cases tell the outside about work no RPC answers for (the metrics listen)."""

from __future__ import annotations

from typing import Protocol

from ticketing_service.domain.reconciliation import CheckoutAnswer
from ticketing_service.domain.reservations import ConfirmOutcome


class Observer(Protocol):
    """Told what reconciliation found."""

    def reconciled(self, answer: CheckoutAnswer, outcome: ConfirmOutcome | None) -> None:
        """A checkout was asked about; `outcome` when the answer settled a payment."""
        ...

    def awaiting_follow_up(self, count: int) -> None:
        """How many reservations reconciliation will ask about again."""
        ...


class _NoObserver:
    def reconciled(self, answer: CheckoutAnswer, outcome: ConfirmOutcome | None) -> None:
        """Nothing listens."""

    def awaiting_follow_up(self, count: int) -> None:
        """Nothing listens."""


NO_OBSERVER: Observer = _NoObserver()
