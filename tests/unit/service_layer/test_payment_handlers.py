"""ConfirmPayment, every branch, on fakes of the ports."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.fakes import FakeDatabase
from tests.unit.service_layer.conftest import PRICE, later, paid_event, registration
from ticketing_service.domain import errors
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reservations import (
    ConfirmOutcome,
    Delivery,
    DeliveryScheme,
    PaymentClaim,
    Reservation,
    ReservationStatus,
)
from ticketing_service.domain.settings import Tier
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.payment_handlers import confirm_payment
from ticketing_service.service_layer.registration_handlers import start_paid_registration


async def hold(deps: Dependencies, database: FakeDatabase, user_id: str = "payer") -> Reservation:
    if "launch-party" not in database.store.settings:
        database.store.settings["launch-party"] = paid_event()
    started = await start_paid_registration(deps, registration(user_id))
    assert started.reservation is not None
    return started.reservation


def paying(held: Reservation, **changes: object) -> PaymentClaim:
    claim = PaymentClaim(
        reservation_id=held.reservation_id,
        checkout_id=held.checkout_id or "",
        payment_id=f"pay-{held.user_id}",
        tx_id="tx-1",
        provider="portone",
        amount=held.amount,
        currency_code=held.currency_code,
        paid_time=None,
        delivery=Delivery(DeliveryScheme.MOIM_HMAC, f"delivery-{held.user_id}"),
        raw_event=b"{}",
    )
    return replace(claim, **changes)  # type: ignore[arg-type]  # PaymentClaim fields by name


def events_of(database: FakeDatabase) -> list[RegistrationEventType]:
    return [e.type for e in database.store.events]


async def test_a_payment_inside_the_hold_confirms_it_without_counting_seats(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    result = await confirm_payment(deps, paying(held))
    assert result.outcome is ConfirmOutcome.CONFIRMED
    assert result.reservation.status is ReservationStatus.CONFIRMED
    assert result.reservation.registration_id is not None
    assert result.reservation.payment_id == "pay-payer"
    assert not database.committed[-1].late_payment


async def test_an_unknown_reservation_is_not_found_and_nothing_is_committed(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    claim = paying(held, reservation_id="00000000-0000-4000-8000-000000000000")
    with pytest.raises(errors.ReservationNotFound):
        await confirm_payment(deps, claim)
    assert len(database.committed) == 2  # the hold and its checkout only


async def test_the_same_delivery_again_answers_its_first_outcome_and_writes_nothing(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    await confirm_payment(deps, paying(held))
    commits = len(database.committed)
    again = await confirm_payment(deps, paying(held))
    assert again.outcome is ConfirmOutcome.CONFIRMED
    assert len(database.committed) == commits


async def test_an_id_seen_for_another_reservation_is_no_repeat(
    deps: Dependencies, database: FakeDatabase
) -> None:
    first, second = await hold(deps, database, "first"), await hold(deps, database, "second")
    reused = Delivery(DeliveryScheme.MOIM_HMAC, "X")
    await confirm_payment(deps, paying(first, delivery=reused))
    result = await confirm_payment(deps, paying(second, delivery=reused))
    assert (result.outcome, result.reservation.reservation_id) == (
        ConfirmOutcome.CONFIRMED,
        second.reservation_id,
    )


async def test_another_delivery_of_the_settling_payment_answers_already_confirmed(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    await confirm_payment(deps, paying(held))
    other = Delivery(DeliveryScheme.STANDARD_WEBHOOKS, "msg-2")
    again = await confirm_payment(deps, paying(held, delivery=other))
    assert again.outcome is ConfirmOutcome.ALREADY_CONFIRMED


async def test_a_mismatch_is_recorded_and_announced_once_and_fails(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    wrong = paying(held, amount=PRICE + 1, delivery=None)
    for _ in range(2):
        with pytest.raises(errors.PaymentMismatch):
            await confirm_payment(deps, wrong)
    assert events_of(database).count(RegistrationEventType.PAYMENT_MISMATCH) == 1
    [mismatch] = database.store.mismatches.values()
    assert mismatch.fields == ("amount",)
    assert (
        database.store.reservations[held.reservation_id].status is ReservationStatus.PENDING_PAYMENT
    )


async def test_a_second_payment_of_a_settled_reservation_is_a_mismatch(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    await confirm_payment(deps, paying(held))
    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, payment_id="pay-again", delivery=None))


async def test_a_payment_that_paid_another_reservation_pays_no_second_one(
    deps: Dependencies, database: FakeDatabase
) -> None:
    first, second = await hold(deps, database), await hold(deps, database, "another-payer")
    await confirm_payment(deps, paying(first, payment_id="pay-shared"))
    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(second, payment_id="pay-shared"))
    assert (
        database.store.reservations[second.reservation_id].status
        is ReservationStatus.PENDING_PAYMENT
    )
    assert [r.payment_id for r in database.store.refunds.values()] == []


async def test_a_late_payment_with_a_free_seat_is_confirmed_and_flagged_late(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    later(database, 601)
    result = await confirm_payment(deps, paying(held))
    assert result.outcome is ConfirmOutcome.CONFIRMED
    assert database.committed[-1].late_payment


async def test_a_late_payment_without_a_free_seat_is_paid_unfulfilled(
    deps: Dependencies, database: FakeDatabase
) -> None:
    database.store.settings["launch-party"] = paid_event(Tier("vip", "VIP", PRICE, capacity=1))
    held = await hold(deps, database)
    later(database, 601)
    await hold(deps, database, "buyer")  # takes the seat the lapsed hold gave up
    result = await confirm_payment(deps, paying(held))
    assert result.outcome is ConfirmOutcome.PAID_UNFULFILLED
    assert result.reservation.status is ReservationStatus.PAID_UNFULFILLED
    assert result.reservation.payment_id == "pay-payer"
    assert database.committed[-1].late_payment


async def test_a_payment_for_an_expired_reservation_finds_a_free_seat(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    later(database, 601)
    database.store.reservations[held.reservation_id] = replace(
        database.store.reservations[held.reservation_id], status=ReservationStatus.EXPIRED
    )
    result = await confirm_payment(deps, paying(held))
    assert result.outcome is ConfirmOutcome.CONFIRMED


async def test_a_user_already_registered_through_another_reservation_is_paid_unfulfilled(
    deps: Dependencies, database: FakeDatabase
) -> None:
    first = await hold(deps, database)
    later(database, 601)
    second = await hold(deps, database)  # the lapsed hold is expired and a new one made
    await confirm_payment(deps, paying(second))
    result = await confirm_payment(deps, paying(first, payment_id="pay-first"))
    assert result.outcome is ConfirmOutcome.PAID_UNFULFILLED
    assert not database.committed[-1].late_payment  # no seat was looked for


async def test_a_repeat_of_a_paid_unfulfilled_payment_answers_paid_unfulfilled(
    deps: Dependencies, database: FakeDatabase
) -> None:
    database.store.settings["launch-party"] = paid_event(Tier("vip", "VIP", PRICE, capacity=1))
    held = await hold(deps, database)
    later(database, 601)
    await hold(deps, database, "buyer")
    await confirm_payment(deps, paying(held))
    again = await confirm_payment(deps, paying(held, delivery=None))
    assert again.outcome is ConfirmOutcome.PAID_UNFULFILLED
