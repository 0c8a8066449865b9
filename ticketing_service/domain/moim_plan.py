"""The plan import-moim makes for one event of the original implementation, as plain values.

`moim_import.plan_event` decides it; an adapter writes it in one transaction.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ticketing_service.domain.reservations import Reservation, ReservationStatus
from ticketing_service.domain.settings import Settings


class ProblemKind(enum.StrEnum):
    """Why a row of the source could not be brought in as it stands."""

    NO_SETTINGS = "no_settings"
    # Brought in with the first MAX_TITLE_LENGTH characters of its title.
    TITLE_TOO_LONG = "title_too_long"
    # Deleted in Moim, its settings enabled there: brought in disabled.
    DELETED_EVENT = "deleted_event"
    UNUSABLE_SETTINGS = "unusable_settings"
    PAYMENT_MISSING = "payment_missing"
    # Paid, but not the reservation's amount or currency: no seat and no payment brought in.
    PAYMENT_DIFFERS = "payment_differs"
    EXTRA_PAYMENTS = "extra_payments"
    PAID_NOT_ACCEPTED = "paid_not_accepted"
    PAID_NOT_CONFIRMED = "paid_not_confirmed"
    SECOND_PAID_RESERVATION = "second_paid_reservation"
    REGISTERED_IN_SERVICE = "registered_in_service"
    EXTRA_HOLDS = "extra_holds"
    HOLD_WITHOUT_CHECKOUT = "hold_without_checkout"
    HOLD_OF_REGISTERED_USER = "hold_of_registered_user"
    HOLD_OVER_CAPACITY = "hold_over_capacity"
    TIERLESS_RSVP = "tierless_rsvp"
    UNKNOWN_TIER = "unknown_tier"
    UNUSABLE_RESERVATION = "unusable_reservation"
    UNREADABLE_ANSWERS = "unreadable_answers"
    # Paid, but its payment has no provider payment id: nothing could confirm or refund it.
    PAYMENT_WITHOUT_ID = "payment_without_id"
    # Paid by a payment that paid another reservation first.
    PAYMENT_OF_ANOTHER = "payment_of_another"
    # Brought in without its answers: more of them than a reservation here keeps.
    ANSWERS_OVER_LIMITS = "answers_over_limits"
    # Settled in Moim, but the service keeps the reservation in another state.
    KEPT_OTHERWISE = "kept_otherwise"
    # A status the original never wrote (e.g. upper case): its row is left as it is.
    UNKNOWN_STATUS = "unknown_status"
    # A live hold ending later than the service's own would: brought in ending then.
    HOLD_CUT_SHORT = "hold_cut_short"


@dataclass(frozen=True, slots=True)
class Problem:
    """A row that could not be brought in as it stands: which one, and what was done instead."""

    kind: ProblemKind
    subject: str
    detail: str


@dataclass(frozen=True, slots=True)
class ServiceRegistration:
    """A registration the service already keeps at the event (imported before, or its own);
    a cancelled one (given up) holds no seat, but keeps its id."""

    registration_id: str
    reservation_id: str
    user_id: str
    tier_id: str
    accepted: bool = True


@dataclass(frozen=True, slots=True)
class ServiceHold:
    """A live hold the service keeps at the event (its own, or one imported before)."""

    reservation_id: str
    user_id: str
    tier_id: str


@dataclass(frozen=True, slots=True)
class ServiceReservation:
    """A reservation the service keeps at the event, in any state."""

    reservation_id: str
    user_id: str
    tier_id: str
    # A hold that ended unpaid (expired or cancelled): it never seated its user here.
    ended_unpaid: bool = False


@dataclass(frozen=True, slots=True)
class ImportedPayment:
    """A payment row to bring in: `paid` for a settled reservation, else `requires_payment`."""

    payment_row_id: str
    checkout_id: str
    status: str
    provider: str
    amount: int
    currency_code: str
    provider_payment_id: str | None
    tx_id: str | None
    paid_time: datetime | None
    raw_event: bytes | None
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True)
class ImportedReservation:
    """A reservation to bring in with its payment row (and registration, if it has an id)."""

    reservation: Reservation
    payment: ImportedPayment
    update_time: datetime
    # A full refund of its payment is owed when it is brought in (paid_unfulfilled), as the
    # service owes one for its own with TICKETING_AUTO_REFUND on.
    refund_owed: bool = False
    # Reconciliation asks the payment service about its checkout at once, then follows it up
    # as it follows up the service's own ended holds (an ended hold Moim may have refused the
    # payment of: its callback was answered 409 and is never sent again).
    follow_up: bool = False


@dataclass(frozen=True, slots=True)
class EventPlan:
    """Everything to bring in for one event, and the rows that could not be mapped."""

    event_id: str
    title: str
    # None: nothing is brought in for the event (see `problems`).
    settings: Settings | None
    # tier id -> accepted RSVPs with no registration here: seats Moim already gave away.
    external_seats: Mapping[str, int] = field(default_factory=dict)
    # confirmed (with registration id) and paid_unfulfilled reservations, with paid payments.
    settled: tuple[ImportedReservation, ...] = ()
    # pending_payment holds (live) and ended ones, with requires_payment payments.
    holds: tuple[ImportedReservation, ...] = ()
    problems: tuple[Problem, ...] = ()

    def count(self, status: ReservationStatus) -> int:
        """How many planned reservations have this status."""
        planned = (*self.settled, *self.holds)
        return sum(1 for i in planned if i.reservation.status is status)
