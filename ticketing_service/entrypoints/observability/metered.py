"""Thin metering wrappers around the ports: outcomes counted once, when they are committed.

Counting here rather than from RPC answers keeps the numbers exact: a retried
StartPaidRegistration or a repeated webhook delivery answers from what is stored and commits
nothing, so it counts nothing; the sweeper's expirations are counted although no RPC made them;
and with several replicas each change is counted by the one process that committed it, so the
sum over replicas is the truth. Nothing here changes what the wrapped port does.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Protocol, Self

from ticketing_service.domain.reservations import (
    ConfirmOutcome,
    LockedReservation,
    PaymentClaim,
    Reservation,
    ReservationStatus,
    TierSeats,
)
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.webhook.signatures import SignatureRejected, Verified
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutGateway,
    CheckoutRefused,
    CheckoutRequest,
    CheckoutUnavailable,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.ports import (
    EventsRepository,
    ReservationRepository,
    SettingsRepository,
    UnitOfWork,
)


@dataclasses.dataclass(slots=True)
class _Tally:
    """What one transaction did, applied to the metrics only if it commits."""

    events: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    late_payments: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    reservation_locked: bool = False
    tier_locked_after_reservation: bool = False

    def apply_and_clear(self, metrics: TicketingMetrics) -> None:
        """Count what the committed transaction did; the next one starts from nothing."""
        for event_type, count in self.events.items():
            metrics.reservation_events.labels(event_type).inc(count)
        for result, count in self.late_payments.items():
            metrics.late_payments.labels(result).inc(count)
        self.clear()

    def clear(self) -> None:
        """Forget what was tallied."""
        self.events.clear()
        self.late_payments.clear()
        self.reservation_locked = self.tier_locked_after_reservation = False

    def settled(self, event_type: str) -> None:
        """A confirmation or a paid_unfulfilled; late when the tier had to be locked for it."""
        self.events[event_type] += 1
        if self.tier_locked_after_reservation:
            # ConfirmPayment locks the tier only for a late payment: a live hold's seat was
            # counted when it was made (payment_handlers._settle).
            result = "seat_found" if event_type == "confirmed" else "paid_unfulfilled"
            self.late_payments[result] += 1


class MeteredReservations:
    """The ReservationRepository, noting each state change in the transaction's tally."""

    def __init__(self, inner: ReservationRepository, tally: _Tally) -> None:
        self._inner = inner
        self._tally = tally

    async def lock_user(self, event_id: str, user_id: str) -> None:
        """Delegated unchanged."""
        await self._inner.lock_user(event_id, user_id)

    async def registration_id_of(self, event_id: str, user_id: str) -> str | None:
        """Delegated unchanged."""
        return await self._inner.registration_id_of(event_id, user_id)

    async def lock_pending_of(self, event_id: str, user_id: str) -> LockedReservation | None:
        """Delegated unchanged."""
        return await self._inner.lock_pending_of(event_id, user_id)

    async def lock_tier_seats(self, event_id: str, tier_id: str) -> TierSeats:
        """Delegated; after a reservation lock it marks a late payment."""
        seats = await self._inner.lock_tier_seats(event_id, tier_id)
        self._tally.tier_locked_after_reservation = self._tally.reservation_locked
        return seats

    async def insert(self, reservation: Reservation, hold_seconds: float) -> Reservation:
        """Delegated; counts a hold created."""
        inserted = await self._inner.insert(reservation, hold_seconds)
        self._tally.events["created"] += 1
        return inserted

    async def attach_checkout(self, reservation_id: str, checkout: Checkout) -> Reservation:
        """Delegated unchanged."""
        return await self._inner.attach_checkout(reservation_id, checkout)

    async def release_hold(
        self, reservation_id: str, status: ReservationStatus
    ) -> Reservation | None:
        """Delegated; counts a hold expired or cancelled when one was released."""
        released = await self._inner.release_hold(reservation_id, status)
        if released is not None:
            self._tally.events[status.value] += 1
        return released

    async def get(self, reservation_id: str) -> Reservation | None:
        """Delegated unchanged."""
        return await self._inner.get(reservation_id)

    async def lock(self, reservation_id: str) -> LockedReservation | None:
        """Delegated; remembers that a reservation's row is locked."""
        locked = await self._inner.lock(reservation_id)
        self._tally.reservation_locked = True
        return locked

    async def delivery_outcome(self, delivery_id: str) -> tuple[str, ConfirmOutcome] | None:
        """Delegated unchanged."""
        return await self._inner.delivery_outcome(delivery_id)

    async def record_delivery(
        self, delivery_id: str, reservation_id: str, outcome: ConfirmOutcome
    ) -> bool:
        """Delegated unchanged."""
        return await self._inner.record_delivery(delivery_id, reservation_id, outcome)

    async def record_mismatch(self, claim: PaymentClaim) -> None:
        """Delegated unchanged."""
        await self._inner.record_mismatch(claim)

    async def accept(self, locked: LockedReservation, claim: PaymentClaim) -> Reservation | None:
        """Delegated; counts a confirmation (late when the tier was locked for it)."""
        accepted = await self._inner.accept(locked, claim)
        if accepted is not None:
            self._tally.settled("confirmed")
        return accepted

    async def mark_paid_unfulfilled(self, claim: PaymentClaim) -> Reservation:
        """Delegated; counts a paid_unfulfilled reservation: a refund is due."""
        unfulfilled = await self._inner.mark_paid_unfulfilled(claim)
        self._tally.settled("paid_unfulfilled")
        return unfulfilled

    async def expire_overdue(self, batch_size: int) -> int:
        """Delegated; counts the holds the sweeper expired."""
        expired = await self._inner.expire_overdue(batch_size)
        self._tally.events["expired"] += expired
        return expired

    async def fold_confirmed_seats(self, batch_size: int) -> int:
        """Delegated unchanged."""
        return await self._inner.fold_confirmed_seats(batch_size)


class MeteredUnitOfWork:
    """A UnitOfWork whose reservation changes reach the metrics once it commits, never before."""

    def __init__(self, inner: UnitOfWork, metrics: TicketingMetrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._tally = _Tally()
        self._reservations: MeteredReservations | None = None

    @property
    def settings(self) -> SettingsRepository:
        """The inner unit's settings."""
        return self._inner.settings

    @property
    def reservations(self) -> ReservationRepository:
        """The inner unit's reservations, metered."""
        assert self._reservations is not None, "reservations outside of `async with`"
        return self._reservations

    @property
    def events(self) -> EventsRepository:
        """The inner unit's event feed."""
        return self._inner.events

    async def __aenter__(self) -> Self:
        """Begin the inner transaction with an empty tally."""
        await self._inner.__aenter__()
        self._tally.clear()
        self._reservations = MeteredReservations(self._inner.reservations, self._tally)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End the inner transaction; an uncommitted tally is dropped with it."""
        self._reservations = None
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        """Commit, then count what the transaction did."""
        await self._inner.commit()
        self._tally.apply_and_clear(self._metrics)


class MeteredCheckoutGateway:
    """The CheckoutGateway, timing each call to the payment service and counting failures."""

    def __init__(self, inner: CheckoutGateway, metrics: TicketingMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Delegated; observed as ok, unavailable, refused or error."""
        began = time.perf_counter()
        result = "error"
        try:
            checkout = await self._inner.create_checkout(request)
            result = "ok"
            return checkout
        except CheckoutUnavailable:
            result = "unavailable"
            raise
        except CheckoutRefused:
            result = "refused"
            raise
        finally:
            elapsed = time.perf_counter() - began
            self._metrics.payment_service_duration.labels(result).observe(elapsed)
            if result != "ok":
                self._metrics.payment_service_failures.labels(result).inc()


class CallbackVerifier(Protocol):
    """What the webhook app needs of a verifier (signatures.WebhookVerifier is one)."""

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        """Return the verified delivery, or raise SignatureRejected with a reason."""
        ...


class MeteredVerifier:
    """A CallbackVerifier that counts each refused signature by its reason."""

    def __init__(self, inner: CallbackVerifier, metrics: TicketingMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        """Delegated; a SignatureRejected is counted, then raised on."""
        try:
            return self._inner.verify(body, headers)
        except SignatureRejected as rejected:
            self._metrics.webhook_verification_failures.labels(rejected.reason).inc()
            raise


def metered_dependencies(deps: Dependencies, metrics: TicketingMetrics) -> Dependencies:
    """`deps` with its units of work and payment-service client metered."""
    make_uow = deps.uow
    return dataclasses.replace(
        deps,
        uow=lambda: MeteredUnitOfWork(make_uow(), metrics),
        checkouts=MeteredCheckoutGateway(deps.checkouts, metrics),
    )
