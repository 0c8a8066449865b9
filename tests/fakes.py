"""In-memory fakes of the service layer's ports, for unit tests of the handlers.

They keep the contracts the ports document (what is returned, what None means, which event a
change appends) on plain dictionaries. A unit of work works on a copy of the store and puts it
back only on `commit()`, so a handler that fails leaves nothing behind, as a transaction would.
Locks are no-ops: the unit tests run one handler at a time; the real locks are proven on
Postgres (tests/integration/test_concurrency.py).
"""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from ticketing_service.domain.errors import TierNotFound
from ticketing_service.domain.events import (
    MismatchedPayment,
    RegistrationEvent,
    RegistrationEventType,
)
from ticketing_service.domain.refunds import EventCancellation, Refund, RefundStatus
from ticketing_service.domain.reservations import (
    SETTLED_STATUSES,
    ConfirmOutcome,
    Delivery,
    DeliveryRecord,
    LockedReservation,
    PaymentClaim,
    Reservation,
    ReservationStatus,
    TierSeats,
)
from ticketing_service.domain.settings import Settings, Tier
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutNotFound,
    CheckoutRequest,
    CheckoutState,
    CheckoutStatus,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.ports import (
    Committed,
    OwedRefund,
    PrunedRecords,
    ReconcileCandidate,
    RefundChange,
)
from ticketing_service.service_layer.refunds import (
    REFUND_NOT_FOUND,
    RefundRequest,
    RefundState,
    UnknownRefund,
)
from ticketing_service.service_layer.refunds import RefundStatus as RefundAnswer

_EVENT_OF = {
    ReservationStatus.CONFIRMED: RegistrationEventType.RESERVATION_CONFIRMED,
    ReservationStatus.EXPIRED: RegistrationEventType.RESERVATION_EXPIRED,
    ReservationStatus.CANCELLED: RegistrationEventType.RESERVATION_CANCELLED,
    ReservationStatus.PAID_UNFULFILLED: RegistrationEventType.RESERVATION_PAID_UNFULFILLED,
}


@dataclass
class Store:
    """Everything the database would hold, and the database's clock."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    settings: dict[str, Settings] = field(default_factory=dict)
    deleted_tiers: set[tuple[str, str]] = field(default_factory=set)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    # (event id, user id) -> (registration id, reservation id)
    registrations: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    deliveries: dict[Delivery, DeliveryRecord] = field(default_factory=dict)
    mismatches: dict[tuple[str, str, str], MismatchedPayment] = field(default_factory=dict)
    # Unnumbered events have sequence 0 until the sequencer numbers them.
    events: list[RegistrationEvent] = field(default_factory=list)
    last_sequence: int = 0
    folded: set[str] = field(default_factory=set)
    reconciling: dict[str, Reconciling] = field(default_factory=dict)
    # Registrations given up: reservation id -> registration id.
    cancelled_registrations: dict[str, str] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    refund_due: dict[str, datetime] = field(default_factory=dict)
    cancellations: dict[str, Cancelling] = field(default_factory=dict)


@dataclass
class Cancelling:
    """An event's cancellation: when, whether it is done, how many it cancelled."""

    cancel_time: datetime
    done: bool = False
    count: int = 0


@dataclass
class Reconciling:
    """What reconciliation knows of one reservation (the columns it keeps)."""

    asked_time: datetime | None = None
    hold_extended: bool = False
    next_time: datetime | None = None
    attempts: int = 0
    lease_until: datetime | None = None


class FakeSettings:
    """The SettingsRepository port on a store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def lock_event(self, event_id: str) -> None:
        """No other handler runs: nothing to wait for."""

    async def get(self, event_id: str) -> Settings | None:
        """The stored settings, their live tiers only."""
        stored = self._store.settings.get(event_id)
        if stored is None:
            return None
        live = tuple(
            t for t in stored.tiers if (event_id, t.tier_id) not in self._store.deleted_tiers
        )
        return replace(stored, tiers=live)

    async def lock_tiers_in_use(self, event_id: str, tier_ids: Collection[str]) -> set[str]:
        """The tiers with a live hold or an accepted registration."""
        store = self._store
        held = {
            r.tier_id
            for r in store.reservations.values()
            if r.event_id == event_id and r.holds_seat_at(store.now)
        }
        registered = {
            store.reservations[reservation_id].tier_id
            for (event, _), (_, reservation_id) in store.registrations.items()
            if event == event_id
        }
        return set(tier_ids) & (held | registered)

    async def save(self, settings: Settings, deleted_tier_ids: Sequence[str]) -> Settings:
        """Store the settings; removed tiers become tombstones. A cancellation stays: saving
        settings never writes `cancel_time` (as in SQL)."""
        kept = self._store.settings.get(settings.event_id)
        cancel_time = None if kept is None else kept.cancel_time
        saved = replace(settings, update_time=self._store.now, cancel_time=cancel_time)
        self._store.settings[settings.event_id] = saved
        self._store.deleted_tiers |= {(settings.event_id, t) for t in deleted_tier_ids}
        return saved


class FakeReservations:
    """The HoldRepository, PaymentRepository and SweepRepository ports on a store; `appended`
    tallies the feed events."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.appended: Counter[RegistrationEventType] = Counter()

    def _append(self, event: RegistrationEventType, reservation: Reservation) -> None:
        self._store.events.append(RegistrationEvent(0, event, reservation, self._store.now))
        self.appended[event] += 1

    def _with_registration(self, reservation: Reservation) -> Reservation:
        found = self._store.registrations.get((reservation.event_id, reservation.user_id))
        mine = found is not None and found[1] == reservation.reservation_id
        registration_id = found[0] if found and mine else None
        cancelled = self._store.cancelled_registrations.get(reservation.reservation_id)
        return replace(reservation, registration_id=registration_id or cancelled)

    def _locked(self, reservation: Reservation) -> LockedReservation:
        found = self._store.registrations.get((reservation.event_id, reservation.user_id))
        elsewhere = found is not None and found[1] != reservation.reservation_id
        owed_back = frozenset(
            r.payment_id
            for r in self._store.refunds.values()
            if r.reservation_id == reservation.reservation_id and r.may_return_money
        )
        cancelled = reservation.event_id in self._store.cancellations
        return LockedReservation(
            self._with_registration(reservation), self._store.now, elsewhere, owed_back, cancelled
        )

    def _stored(self, reservation_id: str) -> Reservation:
        return self._store.reservations[reservation_id]

    def _put(self, changed: Reservation) -> Reservation:
        self._store.reservations[changed.reservation_id] = changed
        return self._with_registration(changed)

    async def lock_user(self, event_id: str, user_id: str) -> None:
        """No other handler runs: nothing to wait for."""

    async def registration_id_of(self, event_id: str, user_id: str) -> str | None:
        """The user's registration at the event."""
        found = self._store.registrations.get((event_id, user_id))
        return None if found is None else found[0]

    async def lock_pending_of(self, event_id: str, user_id: str) -> LockedReservation | None:
        """The user's pending hold at the event."""
        pending = [
            r
            for r in self._store.reservations.values()
            if (r.event_id, r.user_id, r.status) == (event_id, user_id, "pending_payment")
        ]
        return self._locked(pending[0]) if pending else None

    async def all_seats_taken(self, event_id: str, tier_id: str) -> bool:
        """Whether accepted registrations and live holds fill the tier."""
        tier = self._tier(event_id, tier_id)
        if tier is None or tier.capacity is None:
            return False
        return self._taken(event_id, tier_id) >= tier.capacity

    async def lock_tier_seats(self, event_id: str, tier_id: str) -> TierSeats:
        """Capacity and seats taken: accepted registrations plus live holds."""
        tier = self._tier(event_id, tier_id)
        if tier is None:
            raise TierNotFound("The event has no such tier.", tierId=tier_id)
        deleted = (event_id, tier_id) in self._store.deleted_tiers
        cancelled = event_id in self._store.cancellations
        if tier.capacity is None:
            return TierSeats(None, 0, deleted, cancelled)
        return TierSeats(tier.capacity, self._taken(event_id, tier_id), deleted, cancelled)

    def _tier(self, event_id: str, tier_id: str) -> Tier | None:
        settings = self._store.settings.get(event_id)
        return settings.tier(tier_id) if settings else None

    def _taken(self, event_id: str, tier_id: str) -> int:
        reservations = self._store.reservations
        registered = [
            reservation_id
            for (event, _), (_, reservation_id) in self._store.registrations.items()
            if event == event_id and reservations[reservation_id].tier_id == tier_id
        ]
        held = [
            r
            for r in reservations.values()
            if (r.event_id, r.tier_id) == (event_id, tier_id) and r.holds_seat_at(self._store.now)
        ]
        return len(registered) + len(held)

    async def insert(self, reservation: Reservation, hold_seconds: float) -> Reservation:
        """A pending hold timed by the store's clock."""
        now = self._store.now
        inserted = replace(
            reservation, create_time=now, expire_time=now + timedelta(seconds=hold_seconds)
        )
        self._store.reservations[reservation.reservation_id] = inserted
        self._append(RegistrationEventType.RESERVATION_CREATED, inserted)
        return inserted

    async def attach_checkout(self, reservation_id: str, checkout: Checkout) -> Reservation | None:
        """The checkout of a hold still pending; None otherwise."""
        if self._store.reservations[reservation_id].status is not ReservationStatus.PENDING_PAYMENT:
            return None
        return self._put(
            replace(
                self._stored(reservation_id),
                checkout_id=checkout.checkout_id,
                checkout_url=checkout.checkout_url,
            )
        )

    async def release_hold(
        self, reservation_id: str, status: ReservationStatus
    ) -> Reservation | None:
        """A pending hold moved to `status`; None if it was not pending."""
        held = self._stored(reservation_id)
        if held.status is not ReservationStatus.PENDING_PAYMENT:
            return None
        if held.checkout_id is not None:  # it may still be paid: follow it up
            state = self._store.reconciling.setdefault(reservation_id, Reconciling())
            state.next_time = self._store.now
        released = self._put(replace(held, status=status))
        self._append(_EVENT_OF[status], released)
        return released

    async def get(self, reservation_id: str) -> Reservation | None:
        """The reservation with its registration id."""
        found = self._store.reservations.get(reservation_id)
        return None if found is None else self._with_registration(found)

    async def latest_of(self, event_id: str, user_id: str) -> Reservation | None:
        """The user's most recently made reservation for the event."""
        mine = [
            r
            for r in self._store.reservations.values()
            if (r.event_id, r.user_id) == (event_id, user_id)
        ]
        latest = max(mine, key=lambda r: r.create_time, default=None)
        return None if latest is None else self._with_registration(latest)

    async def lock(
        self, reservation_id: str, payment_id: str | None = None
    ) -> LockedReservation | None:
        """The reservation and the store's clock."""
        found = self._store.reservations.get(reservation_id)
        if found is None:
            return None
        elsewhere = payment_id is not None and any(
            r.payment_id == payment_id
            and r.reservation_id != reservation_id
            and r.status in SETTLED_STATUSES
            for r in self._store.reservations.values()
        )
        return replace(self._locked(found), paid_elsewhere=elsewhere)

    async def delivery_outcome(self, delivery: Delivery) -> DeliveryRecord | None:
        """The first delivery with this scheme and id."""
        return self._store.deliveries.get(delivery)

    async def record_delivery(self, claim: PaymentClaim, outcome: ConfirmOutcome) -> None:
        """The claim's delivery, unless its id was seen."""
        assert claim.delivery is not None
        record = DeliveryRecord(claim.reservation_id, claim.checkout_id, claim.payment_id, outcome)
        self._store.deliveries.setdefault(claim.delivery, record)

    async def spoken_for(self, payment_id: str) -> bool:
        """Whether a reservation was settled by the payment, or a refund of it did not fail."""
        settled = any(
            r.payment_id == payment_id and r.status in SETTLED_STATUSES
            for r in self._store.reservations.values()
        )
        return settled or any(
            r.payment_id == payment_id and r.status.counts_against_payment
            for r in self._store.refunds.values()
        )

    async def record_mismatch(self, claim: PaymentClaim, fields: Sequence[str]) -> bool:
        """The mismatched payment and its event, once per payment."""
        key = (claim.reservation_id, claim.checkout_id, claim.payment_id)
        if key in self._store.mismatches:
            return False
        self._store.mismatches[key] = MismatchedPayment(
            claim.checkout_id,
            claim.payment_id,
            claim.provider,
            claim.amount,
            claim.currency_code,
            tuple(fields),
        )
        reservation = self._with_registration(self._store.reservations[claim.reservation_id])
        self._append(RegistrationEventType.PAYMENT_MISMATCH, reservation)
        return True

    async def accept(self, locked: LockedReservation, claim: PaymentClaim) -> Reservation | None:
        """A registration, the payment, a confirmed reservation; None if the user has a seat."""
        held = locked.reservation
        if (held.event_id, held.user_id) in self._store.registrations:
            return None
        registration = (str(uuid.uuid4()), held.reservation_id)
        self._store.registrations[(held.event_id, held.user_id)] = registration
        accepted = self._settled(claim, ReservationStatus.CONFIRMED)
        self._append(RegistrationEventType.RESERVATION_CONFIRMED, accepted)
        return accepted

    async def mark_paid_unfulfilled(self, claim: PaymentClaim) -> Reservation:
        """The payment recorded without a seat."""
        unfulfilled = self._settled(claim, ReservationStatus.PAID_UNFULFILLED)
        self._append(RegistrationEventType.RESERVATION_PAID_UNFULFILLED, unfulfilled)
        return unfulfilled

    def _settled(self, claim: PaymentClaim, status: ReservationStatus) -> Reservation:
        state = self._store.reconciling.get(claim.reservation_id)
        if state is not None:
            state.next_time = state.lease_until = None
        paid_time = claim.paid_time or self._store.now
        return self._put(
            replace(
                self._stored(claim.reservation_id),
                status=status,
                paid_time=paid_time,
                payment_id=claim.payment_id,
            )
        )

    async def expire_overdue(self, batch_size: int) -> int:
        """Up to `batch_size` overdue holds expired."""
        now = self._store.now
        overdue = [
            r.reservation_id
            for r in self._store.reservations.values()
            if r.status is ReservationStatus.PENDING_PAYMENT
            and r.expire_time <= now
            and r.checkout_id is None
        ][:batch_size]
        for reservation_id in overdue:
            expired = self._put(
                replace(self._stored(reservation_id), status=ReservationStatus.EXPIRED)
            )
            self._append(RegistrationEventType.RESERVATION_EXPIRED, expired)
        return len(overdue)

    async def prune_records_before(self, kind: PrunedRecords, cutoff: datetime, limit: int) -> int:
        """Nothing of these is kept by the fake with a time to prune by."""
        return 0

    async def fold_confirmed_seats(self, batch_size: int) -> int:
        """Up to `batch_size` confirmed seats marked folded (seat counts read registrations)."""
        unfolded = [
            r.reservation_id
            for r in self._store.reservations.values()
            if r.status is ReservationStatus.CONFIRMED
            and r.reservation_id not in self._store.folded
        ][:batch_size]
        self._store.folded.update(unfolded)
        return len(unfolded)


class FakeReconciliation:
    """The ReconciliationRepository port on a store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def _state(self, reservation_id: str) -> Reconciling:
        return self._store.reconciling.setdefault(reservation_id, Reconciling())

    def _candidate(self, reservation: Reservation) -> ReconcileCandidate:
        state = self._state(reservation.reservation_id)
        return ReconcileCandidate(reservation, state.hold_extended, state.attempts)

    def _due(self, reservation: Reservation, ask_after: timedelta) -> bool:
        now, state = self._store.now, self._state(reservation.reservation_id)
        if state.lease_until is not None and state.lease_until >= now:
            return False
        if reservation.status is ReservationStatus.PENDING_PAYMENT:
            early = state.asked_time is None and reservation.create_time <= now - ask_after
            ended = reservation.expire_time <= now
            return reservation.checkout_id is not None and (early or ended)
        ended_statuses = (ReservationStatus.EXPIRED, ReservationStatus.CANCELLED)
        return reservation.status in ended_statuses and (
            state.next_time is not None and state.next_time <= now
        )

    async def claim_due(
        self, ask_after: timedelta, lease: timedelta, limit: int
    ) -> list[ReconcileCandidate]:
        """The due reservations, leased."""
        due = [r for r in self._store.reservations.values() if self._due(r, ask_after)][:limit]
        for reservation in due:
            self._state(reservation.reservation_id).lease_until = self._store.now + lease
        return [self._candidate(r) for r in due]

    async def candidate(self, reservation_id: str) -> ReconcileCandidate | None:
        """One reservation with its reconciliation state."""
        found = self._store.reservations.get(reservation_id)
        return None if found is None else self._candidate(found)

    async def unsettled_since(self, since: timedelta) -> list[ReconcileCandidate]:
        """Reservations with a checkout made since then, no payment settled."""
        unsettled = (
            ReservationStatus.PENDING_PAYMENT,
            ReservationStatus.EXPIRED,
            ReservationStatus.CANCELLED,
        )
        return [
            self._candidate(r)
            for r in self._store.reservations.values()
            if r.checkout_id is not None
            and r.status in unsettled
            and r.create_time >= self._store.now - since
        ]

    async def keep_hold(self, reservation_id: str, grace: timedelta) -> Reservation | None:
        """A pending hold's end moved by `grace`, once."""
        held, state = self._store.reservations[reservation_id], self._state(reservation_id)
        if held.status is not ReservationStatus.PENDING_PAYMENT or state.hold_extended:
            return None
        state.hold_extended, state.asked_time, state.lease_until = True, self._store.now, None
        kept = replace(held, expire_time=held.expire_time + grace)
        self._store.reservations[reservation_id] = kept
        return kept

    async def asked(
        self, reservation_id: str, follow_up_after: timedelta | None, attempts: int
    ) -> None:
        """Asked now; when to ask again."""
        state = self._state(reservation_id)
        now = self._store.now
        state.asked_time, state.attempts, state.lease_until = now, attempts, None
        state.next_time = None if follow_up_after is None else now + follow_up_after

    async def awaiting_follow_up(self) -> int:
        """Reservations with a follow-up due some time."""
        return sum(1 for s in self._store.reconciling.values() if s.next_time is not None)


class FakeRefunds:
    """The RefundRepository port on a store; settled refunds are announced through `rows`."""

    def __init__(self, store: Store, rows: FakeReservations) -> None:
        self._store = store
        self._rows = rows

    async def owe(self, refund: OwedRefund) -> Refund:
        """A requested refund, due now; a request id is unique per reservation, as in SQL."""
        if refund.request_id is not None:
            reused = await self.by_request(refund.reservation_id, refund.request_id)
            assert reused is None, "uq_refunds_request_per_reservation violated"
        now = self._store.now
        owed = Refund(
            str(uuid.uuid4()),
            refund.reservation_id,
            refund.payment_id,
            refund.checkout_id,
            refund.amount,
            refund.currency_code,
            refund.reason,
            RefundStatus.REQUESTED,
            now,
            now,
            request_id=refund.request_id,
            release_seat=refund.release_seat,
        )
        self._store.refunds[owed.refund_id] = owed
        self._store.refund_due[owed.refund_id] = now
        return owed

    async def of_reservation(self, reservation_id: str) -> list[Refund]:
        """Oldest first (the dict keeps insertion order)."""
        return [r for r in self._store.refunds.values() if r.reservation_id == reservation_id]

    async def by_request(self, reservation_id: str, request_id: str) -> Refund | None:
        """The refund with this request id."""
        refunds = await self.of_reservation(reservation_id)
        return next((r for r in refunds if r.request_id == request_id), None)

    async def get(self, refund_id: str) -> Refund | None:
        """A refund by id."""
        return self._store.refunds.get(refund_id)

    async def claim_due(self, lease: timedelta, limit: int) -> list[Refund]:
        """Due refunds; the lease moves their next time (no one else runs)."""
        now = self._store.now
        due = [
            r
            for r in self._store.refunds.values()
            if not r.status.is_final and self._store.refund_due[r.refund_id] <= now
        ][:limit]
        for refund in due:
            self._store.refund_due[refund.refund_id] = now + lease
        return due

    async def record(self, read: Refund, change: RefundChange) -> Refund | None:
        """The try recorded, if the refund is still as it was read; a settled one is announced."""
        refund_id = read.refund_id
        stored = self._store.refunds[refund_id]
        if (stored.status, stored.attempts) != (read.status, read.attempts):
            return None
        now = self._store.now
        recorded = replace(
            stored,
            status=change.status,
            attempts=change.attempts,
            failure_code=change.failure_code,
            update_time=now,
        )
        self._store.refunds[refund_id] = recorded
        self._store.refund_due[refund_id] = now + (change.retry_in or timedelta(0))
        if recorded.status.is_final and recorded.status is not read.status:
            self._announce(recorded)
        return recorded

    def _announce(self, refund: Refund) -> None:
        succeeded = refund.status is RefundStatus.SUCCEEDED
        reservation = self._store.reservations[refund.reservation_id]
        if succeeded and refund.payment_id == reservation.payment_id:
            reservation = replace(
                reservation, refunded_amount=reservation.refunded_amount + refund.amount
            )
        announced = self._rows._put(reservation)
        event = (
            RegistrationEventType.REFUND_SUCCEEDED
            if succeeded
            else RegistrationEventType.REFUND_FAILED
        )
        self._store.events.append(
            RegistrationEvent(0, event, announced, self._store.now, refund=refund)
        )
        self._rows.appended[event] += 1


class FakeCancellations:
    """The CancellationRepository port on a store."""

    def __init__(self, store: Store, rows: FakeReservations) -> None:
        self._store = store
        self._rows = rows

    async def cancel_registration(self, reservation_id: str) -> Reservation:
        """The registration moves to the cancelled ones; the seat is free."""
        held = self._store.reservations[reservation_id]
        registration_id, _ = self._store.registrations.pop((held.event_id, held.user_id))
        self._store.cancelled_registrations[reservation_id] = registration_id
        cancelled = self._rows._put(replace(held, status=ReservationStatus.REGISTRATION_CANCELLED))
        self._rows._append(RegistrationEventType.REGISTRATION_CANCELLED, cancelled)
        return cancelled

    async def cancel_event(self, event_id: str, request_id: str | None) -> None:
        """Cancelled now, unless it already was; the settings say when, as the SQL adapter's
        `cancel_time` column does (StartPaidRegistration reads it before any tier)."""
        found = self._store.cancellations.setdefault(event_id, Cancelling(self._store.now))
        settings = self._store.settings[event_id]
        if settings.cancel_time is None:
            self._store.settings[event_id] = replace(settings, cancel_time=found.cancel_time)

    async def event_cancelled(self, event_id: str, tier_id: str) -> bool:
        """Whether the event was cancelled (no other handler runs: nothing to lock)."""
        return event_id in self._store.cancellations

    async def progress(self, event_id: str) -> EventCancellation | None:
        """Counted from the store."""
        found = self._store.cancellations.get(event_id)
        if found is None:
            return None
        left = len(self._live(event_id))
        refunds = [
            r
            for r in self._store.refunds.values()
            if self._store.reservations[r.reservation_id].event_id == event_id
        ]
        statuses = Counter(r.status for r in refunds)
        return EventCancellation(
            event_id,
            found.cancel_time,
            found.done,
            found.count,
            found.count + left,
            statuses[RefundStatus.REQUESTED] + statuses[RefundStatus.PENDING],
            statuses[RefundStatus.SUCCEEDED],
            statuses[RefundStatus.FAILED],
        )

    async def next_batch(self, limit: int) -> tuple[str, list[LockedReservation]] | None:
        """The first event under way and what is left of it."""
        for event_id, cancelling in self._store.cancellations.items():
            if not cancelling.done:
                live = self._live(event_id)[:limit]
                return event_id, [self._rows._locked(r) for r in live]
        return None

    async def finish(self, event_id: str, cancelled: int) -> bool:
        """Counted; done when nothing is left."""
        found = self._store.cancellations[event_id]
        found.count += cancelled
        found.done = not self._live(event_id)
        return found.done

    def _live(self, event_id: str) -> list[Reservation]:
        live = (ReservationStatus.PENDING_PAYMENT, ReservationStatus.CONFIRMED)
        return [
            r
            for r in self._store.reservations.values()
            if r.event_id == event_id and r.status in live
        ]


class FakeEvents:
    """The EventsRepository port on a store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def sequence_pending(self, limit: int) -> int:
        """Number up to `limit` unnumbered events in the order they were appended."""
        store = self._store
        pending = [i for i, e in enumerate(store.events) if e.sequence == 0][:limit]
        for index in pending:
            store.last_sequence += 1
            store.events[index] = replace(store.events[index], sequence=store.last_sequence)
        return len(pending)

    async def list_after(
        self, after_sequence: int, limit: int, max_bytes: int
    ) -> tuple[list[RegistrationEvent], bool]:
        """Numbered events after `after_sequence`, in order (the fake has no byte budget)."""
        numbered = sorted(
            (e for e in self._store.events if e.sequence > after_sequence), key=lambda e: e.sequence
        )
        return numbered[:limit], len(numbered) > limit

    async def retained_range(self) -> tuple[int | None, int]:
        """The lowest number kept and the last one given."""
        kept = [e.sequence for e in self._store.events if e.sequence]
        return (min(kept) if kept else None), self._store.last_sequence

    async def first_kept_after(self, cutoff: datetime) -> int | None:
        """The lowest number of an event stamped at or after `cutoff`."""
        kept = [e.sequence for e in self._store.events if e.sequence and e.create_time >= cutoff]
        return min(kept, default=None)

    async def prune_before(self, cutoff: datetime, below: int | None, limit: int) -> int:
        """Up to `limit` numbered events before `cutoff` and below `below` deleted, the lowest
        numbers first."""
        old = sorted(
            (
                e
                for e in self._store.events
                if e.sequence and e.create_time < cutoff and (below is None or e.sequence < below)
            ),
            key=lambda e: e.sequence,
        )
        pruned = {id(e) for e in old[:limit]}
        self._store.events = [e for e in self._store.events if id(e) not in pruned]
        return len(pruned)


class FakeUnitOfWork:
    """One transaction on a copy of the store, put back on commit."""

    def __init__(self, store: Store, committed: list[Committed]) -> None:
        self._store = store
        self._committed = committed
        self.late_payment = False

    async def __aenter__(self) -> Self:
        """Begin: work on a copy."""
        self._work = copy.deepcopy(self._store)
        self.settings = FakeSettings(self._work)
        # One fake serves the three reservation ports (holds, payments, sweeps): they are views
        # of the same rows, as the three SQL repositories are of the same tables.
        self.holds = self.payments = self.sweeps = FakeReservations(self._work)
        self.reconciliation = FakeReconciliation(self._work)
        self.refunds = FakeRefunds(self._work, self.holds)
        self.cancellations = FakeCancellations(self._work, self.holds)
        self.events = FakeEvents(self._work)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End: whatever was not committed is dropped with the copy."""

    def read_one_snapshot(self) -> None:
        """Every read here is of the copy made at the start: one moment already."""

    async def commit(self) -> None:
        """Put the copy back and report what was committed."""
        self._store.__dict__.update(copy.deepcopy(self._work).__dict__)
        self._committed.append(Committed(dict(self.holds.appended), self.late_payment))
        self.holds.appended.clear()


@dataclass
class FakeDatabase:
    """The store and the commits made on it; call it for a new unit of work."""

    store: Store = field(default_factory=Store)
    committed: list[Committed] = field(default_factory=list)

    def __call__(self) -> FakeUnitOfWork:
        """A new unit of work (the UnitOfWorkFactory port)."""
        return FakeUnitOfWork(self.store, self.committed)


@dataclass
class FakeCheckouts:
    """The PaymentService port: checkouts opened per reservation and read back as a test set
    them (`statuses`), refunds answered as told."""

    fail_with: type[PaymentServiceUnreachable | PaymentServiceRefused] | None = None
    asked: list[CheckoutRequest] = field(default_factory=list)
    # Run while the "payment service" is asked, e.g. to change the store meanwhile.
    meanwhile: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # What get_checkout answers, by checkout id; a checkout not here is not found.
    statuses: dict[str, CheckoutStatus] = field(default_factory=dict)
    refunds: list[RefundRequest] = field(default_factory=list)
    # Where every refund stands when asked, and what sending and reading one raise instead (if
    # anything); with `takes_failed_sends` a send that raises was taken all the same (its answer
    # was lost).
    refund_state: RefundState = RefundState.SUCCEEDED
    refund_error: Exception | None = None
    refund_read_error: Exception | None = None
    takes_failed_sends: bool = False
    # Run once, the next time a refund is sent or read, once the fake took it and before it
    # answers (e.g. another try of the refund recorded meanwhile).
    refund_meanwhile: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    # What a refund's answer says was refunded (None: the refund's amount).
    refunded_amount: int | None = None

    def pay(self, checkout_id: str, reservation_id: str, amount: int, payment_id: str) -> None:
        """The payer paid the checkout (no callback is sent: reconciliation must find it)."""
        self.statuses[checkout_id] = CheckoutStatus(
            checkout_id, reservation_id, CheckoutState.PAID, amount, "KRW", payment_id, None, None
        )

    def set_status(self, checkout_id: str, reservation_id: str, state: CheckoutState) -> None:
        """The checkout's status at the payment service is `state` (not paid)."""
        self.statuses[checkout_id] = CheckoutStatus(
            checkout_id, reservation_id, state, 0, "KRW", None, None, None
        )

    async def get_checkout(self, checkout_id: str) -> CheckoutStatus:
        """The status a test set; CheckoutNotFound for any other."""
        if self.fail_with is not None:
            raise self.fail_with("The fake payment service was told to fail.")
        if checkout_id not in self.statuses:
            raise CheckoutNotFound("The fake payment service never opened this checkout.")
        return self.statuses[checkout_id]

    async def create_refund(self, request: RefundRequest) -> RefundAnswer:
        """Taken and answered with `refund_state`; or failing with `refund_error`."""
        if self.refund_error is not None:
            if self.takes_failed_sends and not self._took(request.refund_id):
                self.refunds.append(request)
            await self._meanwhile()
            raise self.refund_error
        self.refunds.append(request)
        await self._meanwhile()
        return self._refund_answer(request.refund_id)

    async def get_refund(self, refund_id: str) -> RefundAnswer:
        """A refund this fake took, as `refund_state` says now, UnknownRefund for one it never
        took; or failing with `refund_read_error`."""
        await self._meanwhile()
        if self.refund_read_error is not None:
            raise self.refund_read_error
        if not self._took(refund_id):
            raise UnknownRefund("The fake never took this refund.", REFUND_NOT_FOUND)
        return self._refund_answer(refund_id)

    def _took(self, refund_id: str) -> bool:
        return any(r.refund_id == refund_id for r in self.refunds)

    async def _meanwhile(self) -> None:
        while self.refund_meanwhile:
            await self.refund_meanwhile.pop(0)()

    def _refund_answer(self, refund_id: str) -> RefundAnswer:
        [request] = [r for r in self.refunds if r.refund_id == refund_id]
        failure = "refund_declined" if self.refund_state is RefundState.FAILED else None
        refunded = request.amount if self.refunded_amount is None else self.refunded_amount
        return RefundAnswer(refund_id, self.refund_state, refunded, failure)

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """A checkout whose id names the reservation; the same one for a repeat."""
        self.asked.append(request)
        for action in self.meanwhile:
            await action()
        if self.fail_with is not None:
            raise self.fail_with("The fake payment service was told to fail.")
        checkout_id = f"chk-{request.reservation_id}"
        return Checkout(checkout_id, f"https://pay.example/{checkout_id}", "requires_payment")
