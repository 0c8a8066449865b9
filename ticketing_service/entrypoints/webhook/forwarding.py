"""The port the webhook shim forwards verified payments through, and what crosses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from ticketing_service.entrypoints.webhook.signatures import Scheme

RejectionKind = Literal["not_found", "failed_precondition", "invalid_argument", "unavailable"]


@dataclass(frozen=True, slots=True)
class PaidCallback:
    """A verified `ticket_payment.paid` callback; money is an integer in minor units."""

    reservation_id: str
    checkout_id: str
    payment_id: str
    tx_id: str
    provider: str
    amount: int
    currency_code: str
    paid_time: datetime
    delivery_id: str
    # Which signature the delivery came with: its ids are unique only within that scheme.
    delivery_scheme: Scheme
    # Kept out of repr so a logged or raised callback never carries the whole body.
    raw_event: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.paid_time.tzinfo is None or self.paid_time.utcoffset() is None:
            raise ValueError("PaidCallback.paid_time must be timezone-aware.")


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    """What confirming did: CONFIRMED, ALREADY_CONFIRMED or PAID_UNFULFILLED, and for whom."""

    outcome: str
    reservation_id: str
    registration_id: str


class ConfirmRejected(Exception):
    """The backend refused or could not take the confirmation; `kind` picks the HTTP status."""

    def __init__(self, kind: RejectionKind, reason: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(f"The payment confirmation was rejected: {kind} ({reason}).")
        self.kind: RejectionKind = kind
        self.reason = reason
        # The request fields the service named as invalid (ConfirmPayment's names).
        self.fields = fields


class PaymentConfirmer(Protocol):
    """Forwards a verified payment to the ticketing service (ConfirmPayment)."""

    async def confirm(self, payment: PaidCallback) -> ConfirmResult:
        """Confirm `payment`, or raise ConfirmRejected saying why not."""
        ...


@dataclass(frozen=True, slots=True)
class RefundCallback:
    """A verified `ticket_payment.refunded` / `refund_failed` callback: only which refund it is
    about is taken from it; what became of the refund is asked of the payment service."""

    refund_id: str
    delivery_id: str


class RefundRefresher(Protocol):
    """Asks the ticketing service to look up a refund now (RefreshRefund)."""

    async def refresh_refund(self, refund: RefundCallback) -> str:
        """The refund's state after the look-up (e.g. SUCCEEDED), or raise ConfirmRejected."""
        ...


class BoundedConfirmer:
    """A PaymentConfirmer that forwards at most `limit` payments at once, refusing the rest.

    Past the limit a callback is refused at once as unavailable (a 503 the sender retries)
    instead of queueing behind a backend that is already saturated. Only verified callbacks
    whose whole body arrived count, so idle or slow connections can never take the places.
    """

    def __init__(self, confirmer: PaymentConfirmer, limit: int) -> None:
        self._confirmer = confirmer
        self._limit = limit
        self._in_flight = 0

    async def confirm(self, payment: PaidCallback) -> ConfirmResult:
        """Forward `payment`, or raise ConfirmRejected("unavailable") when `limit` are in flight."""
        if self._in_flight >= self._limit:
            raise ConfirmRejected("unavailable", "TOO_MANY_CALLBACKS_IN_FLIGHT")
        self._in_flight += 1
        try:
            return await self._confirmer.confirm(payment)
        finally:
            self._in_flight -= 1
