"""What a payment claim is compared with: its reservation, and a delivery seen before."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ticketing_service.domain.reservations import (
    ConfirmOutcome,
    Delivery,
    DeliveryRecord,
    DeliveryScheme,
    LockedReservation,
    PaymentClaim,
    Reservation,
    ReservationStatus,
    TierSeats,
    payment_differences,
)

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
HELD = Reservation(
    reservation_id="r-1",
    event_id="e",
    tier_id="t",
    user_id="u",
    status=ReservationStatus.PENDING_PAYMENT,
    amount=30000,
    currency_code="KRW",
    provider="portone",
    provider_account_id=None,
    answers=(),
    customer_name=None,
    customer_email=None,
    success_url="https://moim.example/s",
    cancel_url="https://moim.example/c",
    create_time=NOW,
    expire_time=NOW + timedelta(minutes=10),
    checkout_id="chk-1",
)
CLAIM = PaymentClaim(
    reservation_id="r-1",
    checkout_id="chk-1",
    payment_id="pay-1",
    tx_id=None,
    provider="portone",
    amount=30000,
    currency_code="KRW",
    paid_time=None,
    delivery=Delivery(DeliveryScheme.MOIM_HMAC, "X"),
    raw_event=None,
)
SEEN = DeliveryRecord("r-1", "chk-1", "pay-1", ConfirmOutcome.CONFIRMED)


def test_a_delivery_seen_for_the_same_payment_is_a_repeat() -> None:
    assert CLAIM.is_repeat_of(SEEN)


@pytest.mark.parametrize(
    "seen",
    [
        replace(SEEN, reservation_id="r-2"),
        replace(SEEN, checkout_id="chk-2"),
        replace(SEEN, payment_id="pay-2"),
        replace(SEEN, checkout_id=None, payment_id=None),  # recorded before ids were bound
    ],
)
def test_a_delivery_seen_for_another_reservation_checkout_or_payment_is_no_repeat(
    seen: DeliveryRecord,
) -> None:
    assert not CLAIM.is_repeat_of(seen)


def test_a_matching_payment_of_a_pending_hold_differs_in_nothing() -> None:
    assert payment_differences(LockedReservation(HELD, NOW), CLAIM) == []


def test_every_field_that_differs_is_named_in_order() -> None:
    claim = replace(CLAIM, checkout_id="chk-9", amount=1, currency_code="USD")
    assert payment_differences(LockedReservation(HELD, NOW), claim) == [
        "checkout_id",
        "amount",
        "currency_code",
    ]


def test_a_settled_reservation_takes_only_the_payment_that_settled_it() -> None:
    settled = replace(HELD, status=ReservationStatus.CONFIRMED, payment_id="pay-1")
    locked = LockedReservation(settled, NOW)
    assert payment_differences(locked, CLAIM) == []
    assert payment_differences(locked, replace(CLAIM, payment_id="pay-2")) == ["payment_id"]


def test_a_payment_that_paid_another_reservation_is_a_mismatch_here() -> None:
    locked = LockedReservation(HELD, NOW, paid_elsewhere=True)
    assert payment_differences(locked, CLAIM) == ["payment_id"]


@pytest.mark.parametrize(
    ("locked", "seats", "outcome"),
    [
        (LockedReservation(HELD, NOW), None, ConfirmOutcome.CONFIRMED),
        (LockedReservation(HELD, NOW + timedelta(minutes=10)), TierSeats(2, 1), "CONFIRMED"),
        (LockedReservation(HELD, NOW + timedelta(minutes=10)), TierSeats(2, 2), "PAID_UNFULFILLED"),
        (LockedReservation(HELD, NOW + timedelta(minutes=10)), TierSeats(None, 9), "CONFIRMED"),
        (
            LockedReservation(HELD, NOW + timedelta(minutes=10)),
            TierSeats(5, 0, deleted=True),
            "PAID_UNFULFILLED",
        ),
        (
            LockedReservation(HELD, NOW + timedelta(minutes=10)),
            TierSeats(5, 0, event_cancelled=True),
            "PAID_UNFULFILLED",
        ),
        (
            LockedReservation(replace(HELD, status=ReservationStatus.EXPIRED), NOW),
            TierSeats(1, 0),
            "CONFIRMED",
        ),
        (LockedReservation(HELD, NOW, user_registered=True), None, "PAID_UNFULFILLED"),
        (LockedReservation(HELD, NOW, event_cancelled=True), None, "PAID_UNFULFILLED"),
        (
            LockedReservation(HELD, NOW + timedelta(minutes=10), event_cancelled=True),
            None,
            "PAID_UNFULFILLED",
        ),
    ],
    ids=[
        "live hold",
        "late, a seat free",
        "late, full",
        "late, unlimited",
        "late, tier removed",
        "late, event cancelled",
        "expired, a seat free",
        "user registered elsewhere",
        "live hold, event cancelled",
        "late, event cancelled (read under the reservation lock)",
    ],
)
def test_settling_gives_the_held_or_a_free_seat_or_records_a_refund_due(
    locked: LockedReservation, seats: TierSeats | None, outcome: str
) -> None:
    assert locked.needs_seat_count is (seats is not None)
    assert locked.settle(seats) == outcome


def test_a_late_payment_is_never_settled_without_its_seat_count() -> None:
    with pytest.raises(ValueError, match="seats counted"):
        LockedReservation(HELD, NOW + timedelta(minutes=10)).settle(None)


def test_the_settling_payment_again_answers_already_confirmed_or_paid_unfulfilled() -> None:
    confirmed = replace(HELD, status=ReservationStatus.CONFIRMED, registration_id="g-1")
    unfulfilled = replace(HELD, status=ReservationStatus.PAID_UNFULFILLED)
    assert LockedReservation(confirmed, NOW).repeat_outcome() is ConfirmOutcome.ALREADY_CONFIRMED
    assert LockedReservation(unfulfilled, NOW).repeat_outcome() is ConfirmOutcome.PAID_UNFULFILLED
