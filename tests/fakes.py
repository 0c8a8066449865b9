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
from ticketing_service.domain.reservations import (
    ConfirmOutcome,
    Delivery,
    DeliveryRecord,
    LockedReservation,
    PaymentClaim,
    Reservation,
    ReservationStatus,
    TierSeats,
)
from ticketing_service.domain.settings import Settings
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutRequest,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.ports import Committed

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
        """Store the settings; removed tiers become tombstones."""
        saved = replace(settings, update_time=self._store.now)
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
        return replace(reservation, registration_id=found[0] if found and mine else None)

    def _locked(self, reservation: Reservation) -> LockedReservation:
        found = self._store.registrations.get((reservation.event_id, reservation.user_id))
        elsewhere = found is not None and found[1] != reservation.reservation_id
        return LockedReservation(self._with_registration(reservation), self._store.now, elsewhere)

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

    async def lock_tier_seats(self, event_id: str, tier_id: str) -> TierSeats:
        """Capacity and seats taken: accepted registrations plus live holds."""
        settings = self._store.settings.get(event_id)
        tier = settings.tier(tier_id) if settings else None
        if tier is None:
            raise TierNotFound("The event has no such tier.", tierId=tier_id)
        deleted = (event_id, tier_id) in self._store.deleted_tiers
        if tier.capacity is None:
            return TierSeats(None, 0, deleted)
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
        return TierSeats(tier.capacity, len(registered) + len(held), deleted)

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
        if self._store.reservations[reservation_id].status is not ReservationStatus.PENDING_PAYMENT:
            return None
        released = self._put(replace(self._stored(reservation_id), status=status))
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

    async def lock(self, reservation_id: str) -> LockedReservation | None:
        """The reservation and the store's clock."""
        found = self._store.reservations.get(reservation_id)
        return None if found is None else self._locked(found)

    async def delivery_outcome(self, delivery: Delivery) -> DeliveryRecord | None:
        """The first delivery with this scheme and id."""
        return self._store.deliveries.get(delivery)

    async def record_delivery(self, claim: PaymentClaim, outcome: ConfirmOutcome) -> None:
        """The claim's delivery, unless its id was seen."""
        assert claim.delivery is not None
        record = DeliveryRecord(claim.reservation_id, claim.checkout_id, claim.payment_id, outcome)
        self._store.deliveries.setdefault(claim.delivery, record)

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
            if r.status is ReservationStatus.PENDING_PAYMENT and r.expire_time <= now
        ][:batch_size]
        for reservation_id in overdue:
            expired = self._put(
                replace(self._stored(reservation_id), status=ReservationStatus.EXPIRED)
            )
            self._append(RegistrationEventType.RESERVATION_EXPIRED, expired)
        return len(overdue)

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


class FakeEvents:
    """The EventsRepository port on a store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def sequence_pending(self) -> int:
        """Number the unnumbered events in the order they were appended."""
        store = self._store
        pending = [i for i, e in enumerate(store.events) if e.sequence == 0]
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

    async def prune_before(self, cutoff: datetime) -> int:
        """Numbered events before `cutoff` deleted."""
        events = self._store.events
        kept = [e for e in events if not (e.sequence and e.create_time < cutoff)]
        self._store.events = kept
        return len(events) - len(kept)


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
        self.events = FakeEvents(self._work)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """End: whatever was not committed is dropped with the copy."""

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
    """The CheckoutGateway port: opens a checkout per reservation, or fails as told."""

    fail_with: type[PaymentServiceUnreachable | PaymentServiceRefused] | None = None
    asked: list[CheckoutRequest] = field(default_factory=list)
    # Run while the "payment service" is asked, e.g. to change the store meanwhile.
    meanwhile: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """A checkout whose id names the reservation; the same one for a repeat."""
        self.asked.append(request)
        for action in self.meanwhile:
            await action()
        if self.fail_with is not None:
            raise self.fail_with("The fake payment service was told to fail.")
        checkout_id = f"chk-{request.reservation_id}"
        return Checkout(checkout_id, f"https://pay.example/{checkout_id}", "requires_payment")
