"""The registration event feed: every outcome of a reservation, in one strictly ordered stream."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from ticketing_service.domain.refunds import Refund
from ticketing_service.domain.reservations import Reservation


class RegistrationEventType(enum.StrEnum):
    """What happened to a reservation."""

    RESERVATION_CREATED = "reservation_created"
    RESERVATION_CONFIRMED = "reservation_confirmed"
    RESERVATION_EXPIRED = "reservation_expired"
    RESERVATION_CANCELLED = "reservation_cancelled"
    RESERVATION_PAID_UNFULFILLED = "reservation_paid_unfulfilled"
    # A payment that did not match its reservation: nothing changed, but money may have been
    # taken, so the feed tells Moim (and a refund follows).
    PAYMENT_MISMATCH = "payment_mismatch"
    # A confirmed registration was cancelled: the seat is back on sale.
    REGISTRATION_CANCELLED = "registration_cancelled"
    # A refund settled, one way or the other (the event carries it).
    REFUND_SUCCEEDED = "refund_succeeded"
    REFUND_FAILED = "refund_failed"


@dataclass(frozen=True, slots=True)
class MismatchedPayment:
    """A payment that did not match its reservation, and the fields in which it differed."""

    checkout_id: str
    payment_id: str
    provider: str
    amount: int
    currency_code: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RegistrationEvent:
    """One entry of the feed: its position, what happened, and the reservation right after."""

    sequence: int
    type: RegistrationEventType
    reservation: Reservation
    create_time: datetime
    mismatch: MismatchedPayment | None = None
    refund: Refund | None = None
