"""Reservations (seat holds), payments claimed against them, and what confirming one means."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ticketing_service.domain.refunds import Refund


class ReservationStatus(enum.StrEnum):
    """Where a reservation is in its life."""

    PENDING_PAYMENT = "pending_payment"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    PAID_UNFULFILLED = "paid_unfulfilled"
    # The user had a seat and gave it up, or an organizer released it; the seat is back on sale.
    REGISTRATION_CANCELLED = "registration_cancelled"


class ConfirmOutcome(enum.StrEnum):
    """What ConfirmPayment did."""

    CONFIRMED = "CONFIRMED"
    ALREADY_CONFIRMED = "ALREADY_CONFIRMED"
    PAID_UNFULFILLED = "PAID_UNFULFILLED"


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer to a registration question."""

    question_id: str
    answer: str


# What a reservation keeps of its user's answers, however they come in (StartPaidRegistration,
# import-moim). The answers travel in every event of the reservation on the feed, whose pages
# must fit a default client's message limit, so they must stay small.
MAX_ANSWERS = 50
MAX_ANSWER_LENGTH = 4000  # characters of one answer
MAX_ANSWERS_BYTES = 16 * 1024  # all of them together, question ids included, in UTF-8
# Ids from outside (a checkout's, a payment's, a delivery's) as ConfirmPayment takes them.
MAX_ID_LENGTH = 128


def is_usable_id(value: str) -> bool:
    """Whether an id from outside can be kept and confirmed here: printable (no NUL, no lone
    surrogate) and at most MAX_ID_LENGTH characters."""
    return 0 < len(value) <= MAX_ID_LENGTH and value.isprintable()


def drop_blank_answers(answers: Iterable[Answer]) -> tuple[Answer, ...]:
    """The answers worth keeping: a blank answer says nothing."""
    return tuple(a for a in answers if a.answer.strip())


def answers_size(answers: Iterable[Answer]) -> int:
    """The bytes of the answers in UTF-8, question ids included."""
    return sum(len(a.question_id.encode()) + len(a.answer.encode()) for a in answers)


def answers_over_limits(answers: tuple[Answer, ...]) -> str | None:
    """Which limit the answers are over, in numbers; None when a reservation may keep them."""
    if len(answers) > MAX_ANSWERS:
        return f"{len(answers)} answers (at most {MAX_ANSWERS})"
    longest = max((len(a.answer) for a in answers), default=0)
    if longest > MAX_ANSWER_LENGTH:
        return f"an answer of {longest} characters (at most {MAX_ANSWER_LENGTH})"
    size = answers_size(answers)
    if size > MAX_ANSWERS_BYTES:
        return f"{size} bytes of answers (at most {MAX_ANSWERS_BYTES}, question ids included)"
    return None


def return_urls(public_base_url: str, event_id: str) -> tuple[str, str]:
    """Where the checkout sends the user back by default: Moim's register page of the event,
    (on success, on cancel)."""
    register_url = f"{public_base_url}/events/{event_id}/register"
    return f"{register_url}?payment=success", f"{register_url}?payment=cancel"


@dataclass(frozen=True, slots=True)
class Reservation:
    """A seat hold for one user in one paid tier, with the price snapshotted when it was made."""

    reservation_id: str
    event_id: str
    tier_id: str
    user_id: str
    status: ReservationStatus
    amount: int
    currency_code: str
    provider: str
    provider_account_id: str | None
    answers: tuple[Answer, ...]
    customer_name: str | None
    customer_email: str | None
    success_url: str
    cancel_url: str
    create_time: datetime
    expire_time: datetime
    checkout_id: str | None = None
    checkout_url: str | None = None
    paid_time: datetime | None = None
    registration_id: str | None = None
    # The provider's id of the payment that settled the reservation (confirmed or unfulfilled).
    payment_id: str | None = None
    # What was refunded of its payments (refunds that succeeded), in minor units.
    refunded_amount: int = 0
    # Its refunds, oldest first, where they were read (not on feed events).
    refunds: tuple[Refund, ...] = ()

    def refunds_of_payment(self) -> list[Refund]:
        """The refunds of the payment that settled the reservation (not of mismatched ones)."""
        return [r for r in self.refunds if r.payment_id == self.payment_id]

    def holds_seat_at(self, now: datetime) -> bool:
        """Pending payment and inside its hold: the seat is counted as taken."""
        return self.status is ReservationStatus.PENDING_PAYMENT and now < self.expire_time


class DeliveryScheme(enum.StrEnum):
    """Who numbered a delivery id: ids are unique only within their scheme."""

    DIRECT = "direct"  # a ConfirmPayment call that did not come through the shim
    MOIM_HMAC = "moim_hmac"
    STANDARD_WEBHOOKS = "standard_webhooks"
    RECONCILE = "reconcile"  # the service asked the payment service itself


@dataclass(frozen=True, slots=True)
class Delivery:
    """A webhook delivery: its scheme and the sender's id for it."""

    scheme: DeliveryScheme
    delivery_id: str


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """What the first delivery with an id was about, and what it did."""

    reservation_id: str
    checkout_id: str | None
    payment_id: str | None
    outcome: ConfirmOutcome


@dataclass(frozen=True, slots=True)
class PaymentClaim:
    """A payment the payment service says was made for a reservation; amounts in minor units."""

    reservation_id: str
    checkout_id: str
    payment_id: str
    tx_id: str | None
    provider: str
    amount: int
    currency_code: str
    paid_time: datetime | None
    delivery: Delivery | None
    raw_event: bytes | None

    def is_repeat_of(self, record: DeliveryRecord) -> bool:
        """Whether a delivery seen before with this id was this same payment.

        Senders reuse ids by mistake (and two schemes may number alike): an id seen for another
        reservation, checkout or payment is not a repeat, so it never answers with that other
        payment's result.
        """
        return (record.reservation_id, record.checkout_id, record.payment_id) == (
            self.reservation_id,
            self.checkout_id,
            self.payment_id,
        )


@dataclass(frozen=True, slots=True)
class LockedReservation:
    """A reservation read under its row lock, with the database's clock once the lock was granted.

    `now` is taken after the lock was granted, never when the transaction began: a confirmation
    that waited for the lock past the hold's end must see the hold as ended, as every buyer who
    counted seats meanwhile did.
    """

    reservation: Reservation
    now: datetime
    # The user already has a seat at the event through another of their reservations.
    user_registered: bool = False
    # Payments of this reservation owed back (by refunds not failed): none may settle it.
    owed_back: frozenset[str] = frozenset()
    # The organizer cancelled the event (CancelEvent): nothing more is sold.
    event_cancelled: bool = False
    # The payment being confirmed already paid another reservation: it pays no second one.
    paid_elsewhere: bool = False

    @property
    def is_late(self) -> bool:
        """Whether a payment now comes after the hold stopped keeping its seat."""
        return not self.user_registered and not self.reservation.holds_seat_at(self.now)

    @property
    def needs_seat_count(self) -> bool:
        """Whether settling a payment now needs the tier's seats counted under its lock.

        Only a late payment of an event still on does: a live hold's seat was counted when the
        hold was made, so its confirmation takes no tier lock and confirmations of one tier run
        in parallel.
        """
        return self.is_late and not self.event_cancelled

    def settle(self, seats: TierSeats | None) -> ConfirmOutcome:
        """What a payment that matches this pending or released reservation gets.

        A seat: the one its live hold kept, or, for a late payment, a free one of the tier
        (`seats`, counted under the tier's lock). Otherwise the payment is recorded without a
        seat and a refund is due; so too when the user already holds a seat at the event, or
        when the event was cancelled, even for a live hold the cancellation has not reached yet
        (SPEC §10: nothing more is sold once CancelEvent answered).
        """
        if self.user_registered or self.event_cancelled:
            return ConfirmOutcome.PAID_UNFULFILLED
        if not self.needs_seat_count:
            return ConfirmOutcome.CONFIRMED
        if seats is None:
            raise ValueError("A late payment is settled only with the tier's seats counted.")
        return ConfirmOutcome.CONFIRMED if seats.has_free_seat else ConfirmOutcome.PAID_UNFULFILLED

    def repeat_outcome(self) -> ConfirmOutcome:
        """The answer to the payment that already settled this reservation, arriving again."""
        if self.reservation.registration_id is None:
            return ConfirmOutcome.PAID_UNFULFILLED
        return ConfirmOutcome.ALREADY_CONFIRMED


@dataclass(frozen=True, slots=True)
class TierSeats:
    """A tier's capacity (None: unlimited) and seats taken, read under the tier's lock."""

    capacity: int | None
    taken: int
    deleted: bool = False
    # The organizer cancelled the event (read after the tier's lock was granted).
    event_cancelled: bool = False

    @property
    def has_free_seat(self) -> bool:
        """A seat can be given: the event is on, the tier exists and is not full."""
        if self.event_cancelled or self.deleted:
            return False
        return self.capacity is None or self.taken < self.capacity


# A payment settled these: any other payment against them is a mismatch, never a second seat.
SETTLED_STATUSES = frozenset(
    {
        ReservationStatus.CONFIRMED,
        ReservationStatus.PAID_UNFULFILLED,
        ReservationStatus.REGISTRATION_CANCELLED,
    }
)


def payment_differences(locked: LockedReservation, claim: PaymentClaim) -> list[str]:
    """The fields in which a payment differs from the reservation it claims to pay for.

    A settled (confirmed or paid-unfulfilled) reservation accepts only a repeat of the payment
    that settled it; any other payment against it is a mismatch, never a second registration.
    A payment owed back is one too: reported first with another amount, then as it should have
    been, it would have had both its seat and its money back. So is a payment that already paid
    another reservation: one payment, one seat.
    """
    reservation = locked.reservation
    expected: dict[str, object] = {
        "checkout_id": reservation.checkout_id,
        "provider": reservation.provider,
        "amount": reservation.amount,
        "currency_code": reservation.currency_code,
    }
    given: dict[str, object] = {
        "checkout_id": claim.checkout_id,
        "provider": claim.provider,
        "amount": claim.amount,
        "currency_code": claim.currency_code,
    }
    if (
        reservation.status in SETTLED_STATUSES
        or claim.payment_id in locked.owed_back
        or locked.paid_elsewhere
    ):
        expected["payment_id"], given["payment_id"] = reservation.payment_id, claim.payment_id
    return [name for name in expected if expected[name] != given[name]]
