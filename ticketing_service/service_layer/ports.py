"""The ports the use cases need: a unit of work over the repositories of the service's state."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Literal, Protocol, Self

from ticketing_service.domain.events import RegistrationEvent, RegistrationEventType
from ticketing_service.domain.refunds import (
    EventCancellation,
    Refund,
    RefundReason,
    RefundStatus,
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
from ticketing_service.service_layer.checkouts import Checkout


class SettingsRepository(Protocol):
    """Ticketing settings and tiers of events."""

    async def lock_event(self, event_id: str) -> None:
        """Serialize settings updates of one event until the transaction ends."""
        ...

    async def get(self, event_id: str) -> Settings | None:
        """The stored settings with their live (not deleted) tiers, or None."""
        ...

    async def lock_tiers_in_use(self, event_id: str, tier_ids: Collection[str]) -> set[str]:
        """Lock every tier of the event, then return those of `tier_ids` with a live hold or an
        accepted registration."""
        ...

    async def save(self, settings: Settings, deleted_tier_ids: Sequence[str]) -> Settings:
        """Store the settings and tiers, delete the given tiers; return what is now stored."""
        ...


class HoldRepository(Protocol):
    """Seat holds: a user's attempts, a tier's seats, holds made, read and released."""

    async def lock_user(self, event_id: str, user_id: str) -> None:
        """Serialize registration attempts of one user at one event until the transaction ends."""
        ...

    async def registration_id_of(self, event_id: str, user_id: str) -> str | None:
        """The user's accepted registration at the event, if any."""
        ...

    async def lock_pending_of(self, event_id: str, user_id: str) -> LockedReservation | None:
        """Lock and return the user's pending_payment reservation at the event, if any."""
        ...

    async def lock(
        self, reservation_id: str, payment_id: str | None = None
    ) -> LockedReservation | None:
        """Lock a reservation's row for the rest of the transaction and read it; with the
        payment being confirmed, whether it already paid another reservation."""
        ...

    async def all_seats_taken(self, event_id: str, tier_id: str) -> bool:
        """Whether live holds and registrations fill the tier now, read without waiting on its
        lock; never true of a tier `lock_tier_seats` would find a free seat in at that moment."""
        ...

    async def lock_tier_seats(self, event_id: str, tier_id: str) -> TierSeats:
        """Lock the tier and count its seats taken: accepted registrations plus live holds."""
        ...

    async def insert(self, reservation: Reservation, hold_seconds: float) -> Reservation:
        """Insert a pending hold expiring `hold_seconds` from the database's now."""
        ...

    async def attach_checkout(self, reservation_id: str, checkout: Checkout) -> Reservation | None:
        """Store a pending hold's checkout and its `requires_payment` payment row; None (nothing
        written) when the hold is no longer pending."""
        ...

    async def release_hold(
        self, reservation_id: str, status: ReservationStatus
    ) -> Reservation | None:
        """Move a pending_payment reservation to `status`; None when it was no longer pending."""
        ...

    async def get(self, reservation_id: str) -> Reservation | None:
        """A reservation by id, with its registration id once it has one."""
        ...

    async def latest_of(self, event_id: str, user_id: str) -> Reservation | None:
        """The user's most recently made reservation for the event, with its registration id."""
        ...


class PaymentRepository(Protocol):
    """Settling reservations with payments, the webhook inbox, mismatched payments."""

    async def delivery_outcome(self, delivery: Delivery) -> DeliveryRecord | None:
        """What the first delivery with this scheme and id was about, if one was seen."""
        ...

    async def record_delivery(self, claim: PaymentClaim, outcome: ConfirmOutcome) -> None:
        """Record the claim's delivery and outcome, unless its id was recorded already."""
        ...

    async def record_mismatch(self, claim: PaymentClaim, fields: Sequence[str]) -> bool:
        """Keep a mismatched payment and announce it on the feed; False if seen before."""
        ...

    async def spoken_for(self, payment_id: str) -> bool:
        """Whether the payment settled a reservation or is owed back (a refund not failed)."""
        ...

    async def accept(self, locked: LockedReservation, claim: PaymentClaim) -> Reservation | None:
        """Give the user a seat: registration, payment, confirmed reservation.

        None when the user already holds a registration at the event (nothing written).
        """
        ...

    async def mark_paid_unfulfilled(self, claim: PaymentClaim) -> Reservation:
        """Record the payment and mark the reservation paid_unfulfilled: a refund is due."""
        ...


# What is kept only for a while besides the feed's events, by table: webhook deliveries,
# mismatched payments' records, removed tiers.
PrunedRecords = Literal["webhook_deliveries", "payment_mismatches", "tiers"]


class SweepRepository(Protocol):
    """The sweeper's batches: overdue holds expired, confirmed seats folded."""

    async def expire_overdue(self, batch_size: int) -> int:
        """Mark up to `batch_size` overdue holds without a checkout expired (reconciliation asks
        about the others first), skipping locked rows; return how many."""
        ...

    async def fold_confirmed_seats(self, batch_size: int) -> int:
        """Add up to `batch_size` confirmed seats to their tiers' accepted counts."""
        ...

    async def prune_records_before(self, kind: PrunedRecords, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` records of `kind` from before `cutoff` (a removed tier only
        when no reservation refers to it); return how many."""
        ...


@dataclass(frozen=True, slots=True)
class ReconcileCandidate:
    """A reservation whose checkout is to be asked about, with what reconciliation knows."""

    reservation: Reservation
    hold_extended: bool
    attempts: int


class ReconciliationRepository(Protocol):
    """Which checkouts are due to be asked about, and what asking learnt (SPEC §9)."""

    async def claim_due(
        self, ask_after: timedelta, lease: timedelta, limit: int
    ) -> list[ReconcileCandidate]:
        """Lease up to `limit` due reservations (live holds older than `ask_after` never asked,
        holds past their end, follow-ups due), skipping rows leased or locked elsewhere."""
        ...

    async def candidate(self, reservation_id: str) -> ReconcileCandidate | None:
        """One reservation with what reconciliation knows of it."""
        ...

    async def unsettled_since(self, since: timedelta) -> list[ReconcileCandidate]:
        """Reservations with a checkout made in the last `since` and no payment settled."""
        ...

    async def keep_hold(self, reservation_id: str, grace: timedelta) -> Reservation | None:
        """Extend a pending hold's end by `grace`, once; None if it was not pending."""
        ...

    async def asked(
        self, reservation_id: str, follow_up_after: timedelta | None, attempts: int
    ) -> None:
        """Record that it was asked now, how long until it is asked again (None: never), and
        how many follow-ups were made; its lease ends."""
        ...

    async def awaiting_follow_up(self) -> int:
        """How many reservations are still to be asked about again."""
        ...


@dataclass(frozen=True, slots=True)
class OwedRefund:
    """A refund to record as owed (requested); the amount is in minor units."""

    reservation_id: str
    payment_id: str
    checkout_id: str
    amount: int
    currency_code: str
    reason: RefundReason
    request_id: str | None = None
    release_seat: bool = False


@dataclass(frozen=True, slots=True)
class RefundChange:
    """What a try of a refund learnt: its status now, its tries so far, when to try again
    (None: never, it is settled), why it failed, and the payment service's id of it."""

    status: RefundStatus
    attempts: int
    retry_in: timedelta | None
    failure_code: str | None = None
    provider_refund_id: str | None = None


class RefundRepository(Protocol):
    """The refund ledger: money owed back, and what sending it learnt (SPEC §10)."""

    async def owe(self, refund: OwedRefund) -> Refund:
        """Record a refund as requested, due to be sent now."""
        ...

    async def of_reservation(self, reservation_id: str) -> list[Refund]:
        """A reservation's refunds, oldest first."""
        ...

    async def by_request(self, reservation_id: str, request_id: str) -> Refund | None:
        """The refund a RefundReservation with this request id made, if any."""
        ...

    async def get(self, refund_id: str) -> Refund | None:
        """A refund by id."""
        ...

    async def claim_due(self, lease: timedelta, limit: int) -> list[Refund]:
        """Lease up to `limit` refunds due to be sent or followed, skipping rows leased or
        locked elsewhere, so no two replicas send one refund at once."""
        ...

    async def record(self, read: Refund, change: RefundChange) -> Refund | None:
        """Record a try of a refund if it is still as it was `read` (None: another try was
        recorded meanwhile, and this stale one is dropped); one that settles (a status it did
        not have) is announced on the feed, and a success adds to `refunded_amount`."""
        ...


class CancellationRepository(Protocol):
    """Registrations given up, and events cancelled in batches."""

    async def cancel_registration(self, reservation_id: str) -> Reservation:
        """Cancel a locked confirmed reservation's registration and give its seat back."""
        ...

    async def cancel_event(self, event_id: str, request_id: str | None) -> None:
        """Mark the event cancelled (unless it is already), after locking its tiers: once this
        commits, no seat of it can be counted as free."""
        ...

    async def event_cancelled(self, event_id: str, tier_id: str) -> bool:
        """Lock the tier, then read whether its event is cancelled: CancelEvent takes every
        tier of the event before it marks it, so the answer holds until the commit."""
        ...

    async def progress(self, event_id: str) -> EventCancellation | None:
        """How far the event's cancellation is; None when it was not cancelled."""
        ...

    async def next_batch(self, limit: int) -> tuple[str, list[LockedReservation]] | None:
        """An event being cancelled and up to `limit` of its live holds and confirmed
        reservations, locked (rows locked elsewhere are left for later); None when no event
        is being cancelled."""
        ...

    async def finish(self, event_id: str, cancelled: int) -> bool:
        """Count `cancelled` holds and registrations as done, and mark the cancellation done
        when nothing is left to cancel; whether it is done."""
        ...


class EventsRepository(Protocol):
    """The registration event feed."""

    async def sequence_pending(self, limit: int) -> int:
        """Number up to `limit` committed events that have no number yet; return how many."""
        ...

    async def list_after(
        self, after_sequence: int, limit: int, max_bytes: int
    ) -> tuple[list[RegistrationEvent], bool]:
        """Numbered events after `after_sequence` in order, and whether more may follow.

        At most `limit` of them and about `max_bytes` in all, but always the first.
        """
        ...

    async def retained_range(self) -> tuple[int | None, int]:
        """The lowest number still kept (None when none is) and the last number given."""
        ...

    async def first_kept_after(self, cutoff: datetime) -> int | None:
        """The lowest number of an event created at or after `cutoff` (None: none is)."""
        ...

    async def prune_before(self, cutoff: datetime, below: int | None, limit: int) -> int:
        """Delete up to `limit` numbered events created before `cutoff` and numbered below
        `below` (None: any number), the lowest numbers first; return how many."""
        ...


class EventSignal(Protocol):
    """Tells watchers that new events may have been numbered (by any replica)."""

    def generation(self) -> int:
        """A counter that grows on every signal."""
        ...

    async def wait_beyond(self, generation: int, timeout: float) -> None:  # noqa: ASYNC109  # a bounded wait is the contract
        """Return once the counter passed `generation`, or after `timeout` seconds."""
        ...


@dataclass(frozen=True, slots=True)
class Committed:
    """What one committed transaction did: the feed events it appended, by type, and whether
    it settled a payment that came after its hold stopped counting."""

    events: Mapping[RegistrationEventType, int]
    late_payment: bool = False


# Told of every commit (the composition root wakes the event sequencer and counts metrics).
AfterCommit = Callable[[Committed], None]


class UnitOfWork(Protocol):
    """One database transaction; it rolls back on exit unless `commit()` was called."""

    # Set by a use case that settles a payment after its hold stopped counting: reported with
    # the committed events, since no event type says it.
    late_payment: bool

    @property
    def settings(self) -> SettingsRepository:
        """Ticketing settings and tiers."""
        ...

    @property
    def holds(self) -> HoldRepository:
        """Seat holds."""
        ...

    @property
    def payments(self) -> PaymentRepository:
        """Payments settling reservations, and the webhook inbox."""
        ...

    @property
    def sweeps(self) -> SweepRepository:
        """The sweeper's batches."""
        ...

    @property
    def reconciliation(self) -> ReconciliationRepository:
        """Which checkouts to ask about, and what was learnt."""
        ...

    @property
    def refunds(self) -> RefundRepository:
        """The refund ledger."""
        ...

    @property
    def cancellations(self) -> CancellationRepository:
        """Registrations given up and events cancelled."""
        ...

    @property
    def events(self) -> EventsRepository:
        """The registration event feed."""
        ...

    async def __aenter__(self) -> Self:
        """Begin the transaction."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back what was not committed and release the connection."""
        ...

    def read_one_snapshot(self) -> None:
        """Have every read of this unit of work see the database as of its first read, for a
        use case that only reads (called before any read; it may write nothing after)."""
        ...

    async def commit(self) -> None:
        """Make the transaction's changes durable."""
        ...


class UnitOfWorkFactory(Protocol):
    """Makes a fresh unit of work for each use case."""

    def __call__(self) -> UnitOfWork:
        """A new, not yet entered, unit of work."""
        ...
