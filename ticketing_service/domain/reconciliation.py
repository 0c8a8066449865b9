"""Reconciliation: what to do with a reservation once the payment service says where its checkout
stands, so that a payment whose callback was lost still ends in a seat (or a refund).

The payment service delivers each callback once; when it is lost, the service asks
(`GET /v1/ticket-checkouts/{id}`) instead: a live hold early on, a hold at its end before it is
expired, and, for a while, reservations that ended while the answer was not yet final.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from ticketing_service.domain.reservations import Reservation, ReservationStatus, TierSeats


class CheckoutAnswer(enum.StrEnum):
    """What asking the payment service about a checkout gave."""

    REQUIRES_PAYMENT = "requires_payment"
    PAYMENT_PENDING = "payment_pending"  # the user is paying right now
    PAID = "paid"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    NOT_FOUND = "not_found"  # the payment service never opened it: never paid
    UNREACHABLE = "unreachable"  # no answer now (timeout, 5xx, ...)


class Step(enum.StrEnum):
    """What reconciliation does with a reservation after asking."""

    CONFIRM = "confirm"  # settle the payment as its callback would have
    KEEP_HOLD = "keep_hold"  # a payment is under way: the hold and its seat last a grace longer
    EXPIRE = "expire"  # the hold ends: it was not paid and cannot be any more
    EXPIRE_AND_FOLLOW_UP = "expire_and_follow_up"  # the hold ends, but ask again later
    FOLLOW_UP = "follow_up"  # ask again later
    DONE = "done"  # nothing more to learn: stop asking
    WAIT = "wait"  # a live hold: nothing to do until its end


@dataclass(frozen=True, slots=True)
class ReconcilePolicy:
    """How reconciliation paces its questions (SPEC §9)."""

    # A payment that is under way at the hold's end keeps the hold (and its seat) this long.
    payment_grace: timedelta = timedelta(seconds=300)
    # A live hold this old is asked about once, so a payer does not wait for the hold's end.
    ask_after: timedelta = timedelta(seconds=120)
    # Follow-ups are asked this long after the last, doubling up to `max_backoff`.
    first_backoff: timedelta = timedelta(seconds=60)
    max_backoff: timedelta = timedelta(hours=1)
    # Reservations older than this are no longer asked about.
    window: timedelta = timedelta(hours=48)

    def follow_up_after(self, attempts: int) -> timedelta:
        """The wait before follow-up number `attempts + 1`."""
        return min(self.first_backoff * (1 << min(attempts, 32)), self.max_backoff)

    def follows_up(self, reservation: Reservation, now: datetime) -> bool:
        """Whether a reservation that ended with its checkout's answer open is still asked
        about at `now`: for `window` after it was made."""
        return now < reservation.create_time + self.window


def next_step(
    reservation: Reservation,
    answer: CheckoutAnswer,
    now: datetime,
    hold_extended: bool,
    policy: ReconcilePolicy,
) -> Step:
    """What the answer about `reservation`'s checkout means for it at `now`."""
    if answer is CheckoutAnswer.PAID:
        return Step.CONFIRM
    if reservation.status is ReservationStatus.PENDING_PAYMENT:
        return _for_hold(reservation, answer, now, hold_extended)
    if reservation.status in (ReservationStatus.EXPIRED, ReservationStatus.CANCELLED):
        return _for_follow_up(reservation, answer, now, policy)
    return Step.DONE  # settled: the payment is known


def _for_hold(
    reservation: Reservation, answer: CheckoutAnswer, now: datetime, hold_extended: bool
) -> Step:
    if reservation.holds_seat_at(now):
        return Step.WAIT
    if answer is CheckoutAnswer.PAYMENT_PENDING:
        # Once: a payment still pending after the grace is followed up after the hold ends.
        return Step.EXPIRE_AND_FOLLOW_UP if hold_extended else Step.KEEP_HOLD
    if answer is CheckoutAnswer.UNREACHABLE:
        # An outage must never keep a seat: the hold ends, the question stays open.
        return Step.EXPIRE_AND_FOLLOW_UP
    if answer is CheckoutAnswer.REQUIRES_PAYMENT:
        # Not paid yet, but payable until a grace past the hold's end: a payment started at
        # the last moment (or by a payment service whose clock is behind, or that ignores
        # `expiresAt`) and whose callback is lost is still found.
        return Step.EXPIRE_AND_FOLLOW_UP
    return Step.EXPIRE


def keep_or_end(seats: TierSeats) -> Step:
    """Whether a hold past its end, whose payment is under way, is kept (SPEC §9): only while
    its tier has a seat for it. Its seat was free from the hold's end until this count, and a
    buyer may have taken it; a hold kept then would sell that seat twice. Ended instead, its
    payment is followed up and meets the late-payment rule (a seat if one is free, else a
    refund)."""
    return Step.KEEP_HOLD if seats.has_free_seat else Step.EXPIRE_AND_FOLLOW_UP


def _for_follow_up(
    reservation: Reservation, answer: CheckoutAnswer, now: datetime, policy: ReconcilePolicy
) -> Step:
    if not policy.follows_up(reservation, now):
        return Step.DONE
    if answer in (CheckoutAnswer.PAYMENT_PENDING, CheckoutAnswer.UNREACHABLE):
        return Step.FOLLOW_UP
    # A checkout not yet paid can still be, until the payment service's expiry of it (the
    # hold's end, sent as `expiresAt`) and a payment started before then has completed.
    payable = now < reservation.expire_time + policy.payment_grace
    if answer is CheckoutAnswer.REQUIRES_PAYMENT and payable:
        return Step.FOLLOW_UP
    return Step.DONE
