"""What an answer of the payment service means for a reservation, at each point of its life."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.unit.domain.test_reservations import HELD, NOW
from ticketing_service.domain.reconciliation import (
    CheckoutAnswer,
    ReconcilePolicy,
    Step,
    keep_or_end,
    next_step,
)
from ticketing_service.domain.reservations import ReservationStatus, TierSeats

POLICY = ReconcilePolicy()
LIVE = NOW + timedelta(minutes=3)
ENDED = HELD.expire_time + timedelta(seconds=1)
A = CheckoutAnswer


@pytest.mark.parametrize(
    ("status", "answer", "at", "extended", "step"),
    [
        # paid is confirmed whatever became of the reservation
        ("pending_payment", A.PAID, LIVE, False, Step.CONFIRM),
        ("pending_payment", A.PAID, ENDED, False, Step.CONFIRM),
        ("expired", A.PAID, ENDED, False, Step.CONFIRM),
        ("cancelled", A.PAID, LIVE, False, Step.CONFIRM),
        # a live hold asked early waits for its end
        ("pending_payment", A.PAYMENT_PENDING, LIVE, False, Step.WAIT),
        ("pending_payment", A.UNREACHABLE, LIVE, False, Step.WAIT),
        # a hold at its end
        ("pending_payment", A.PAYMENT_PENDING, ENDED, False, Step.KEEP_HOLD),
        ("pending_payment", A.PAYMENT_PENDING, ENDED, True, Step.EXPIRE_AND_FOLLOW_UP),
        ("pending_payment", A.UNREACHABLE, ENDED, False, Step.EXPIRE_AND_FOLLOW_UP),
        ("pending_payment", A.REQUIRES_PAYMENT, ENDED, False, Step.EXPIRE_AND_FOLLOW_UP),
        ("pending_payment", A.CANCELLED, ENDED, False, Step.EXPIRE),
        ("pending_payment", A.EXPIRED, ENDED, False, Step.EXPIRE),
        ("pending_payment", A.NOT_FOUND, ENDED, False, Step.EXPIRE),
        # follow-ups of ended reservations
        ("expired", A.UNREACHABLE, ENDED, False, Step.FOLLOW_UP),
        ("expired", A.PAYMENT_PENDING, ENDED, False, Step.FOLLOW_UP),
        ("cancelled", A.REQUIRES_PAYMENT, LIVE, False, Step.FOLLOW_UP),  # still payable
        ("expired", A.REQUIRES_PAYMENT, ENDED + timedelta(minutes=5), False, Step.DONE),
        ("expired", A.NOT_FOUND, ENDED, False, Step.DONE),
        ("cancelled", A.CANCELLED, LIVE, False, Step.DONE),
        ("expired", A.UNREACHABLE, NOW + timedelta(hours=48), False, Step.DONE),  # the window
        # settled reservations need nothing
        ("confirmed", A.PAYMENT_PENDING, LIVE, False, Step.DONE),
        ("paid_unfulfilled", A.UNREACHABLE, ENDED, False, Step.DONE),
    ],
)
def test_the_next_step(
    status: str, answer: CheckoutAnswer, at: datetime, extended: bool, step: Step
) -> None:
    reservation = replace(HELD, status=ReservationStatus(status))
    assert next_step(reservation, answer, at, extended, POLICY) is step


def test_an_ended_reservation_is_followed_up_for_the_window_from_its_making() -> None:
    ended = replace(HELD, status=ReservationStatus.EXPIRED)
    last = HELD.create_time + POLICY.window
    assert POLICY.follows_up(ended, last - timedelta(seconds=1))
    assert not POLICY.follows_up(ended, last)


def test_follow_ups_back_off_from_a_minute_to_hourly() -> None:
    waits = [POLICY.follow_up_after(n) for n in range(8)]
    assert [int(w.total_seconds()) for w in waits] == [60, 120, 240, 480, 960, 1920, 3600, 3600]


@pytest.mark.parametrize(
    ("seats", "step"),
    [
        (TierSeats(capacity=2, taken=1), Step.KEEP_HOLD),
        (TierSeats(capacity=None, taken=0), Step.KEEP_HOLD),
        # the seat was taken after the hold's end: keeping it would sell that seat twice
        (TierSeats(capacity=1, taken=1), Step.EXPIRE_AND_FOLLOW_UP),
        (TierSeats(capacity=5, taken=1, deleted=True), Step.EXPIRE_AND_FOLLOW_UP),
        (TierSeats(capacity=5, taken=1, event_cancelled=True), Step.EXPIRE_AND_FOLLOW_UP),
    ],
)
def test_a_payment_under_way_keeps_an_ended_hold_only_while_its_tier_has_a_seat(
    seats: TierSeats, step: Step
) -> None:
    assert keep_or_end(seats) is step
