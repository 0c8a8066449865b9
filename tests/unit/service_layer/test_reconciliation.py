"""Reconciliation on fakes: a lost callback's payment is found; holds end as the answers say."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.fakes import FakeCheckouts, FakeDatabase
from tests.unit.service_layer.conftest import EVENT, PRICE, later, paid_event, registration
from ticketing_service.domain import errors
from ticketing_service.domain.reconciliation import CheckoutAnswer, Step
from ticketing_service.domain.reservations import ConfirmOutcome, Reservation, ReservationStatus
from ticketing_service.domain.settings import Tier
from ticketing_service.service_layer.checkouts import CheckoutState, PaymentServiceUnreachable
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.reconciliation import (
    BATCH_SIZE,
    Reconciled,
    reconcile_due,
    reconcile_reservation,
    reconcile_since,
)
from ticketing_service.service_layer.registration_handlers import (
    cancel_reservation,
    start_paid_registration,
)


@pytest.fixture(autouse=True)
def one_seat(database: FakeDatabase) -> None:
    database.store.settings[EVENT] = paid_event(Tier("vip", "VIP", PRICE, capacity=1))


async def hold(deps: Dependencies, user_id: str = "payer") -> Reservation:
    started = await start_paid_registration(deps, registration(user_id))
    assert started.reservation is not None
    assert started.reservation.checkout_id is not None
    return started.reservation


def status(database: FakeDatabase, held: Reservation) -> ReservationStatus:
    return database.store.reservations[held.reservation_id].status


def paid(checkouts: FakeCheckouts, held: Reservation, payment_id: str = "pay-1") -> None:
    assert held.checkout_id is not None
    checkouts.pay(held.checkout_id, held.reservation_id, held.amount, payment_id)


async def ended_in_an_outage(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> tuple[Reservation, Reconciled]:
    """A hold past its end, ended by a pass that could not reach the payment service (which
    stays unreachable); the hold and what the pass did with it."""
    held = await hold(deps)
    later(database, 601)
    checkouts.fail_with = PaymentServiceUnreachable
    [ended] = await reconcile_due(deps)
    return held, ended


async def test_a_live_hold_paid_without_a_callback_is_confirmed_once_it_is_old_enough(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    paid(checkouts, held)
    assert await reconcile_due(deps) == []  # too young to be asked
    later(database, 121)

    [found] = await reconcile_due(deps)

    assert (found.answer, found.step, found.outcome) == (
        CheckoutAnswer.PAID,
        Step.CONFIRM,
        ConfirmOutcome.CONFIRMED,
    )
    assert found.reservation.payment_id == "pay-1"
    assert status(database, held) is ReservationStatus.CONFIRMED
    assert await reconcile_due(deps) == []  # settled: never asked again


async def test_one_pass_asks_about_every_hold_due_a_batch_at_a_time(
    deps: Dependencies, database: FakeDatabase
) -> None:
    first = await hold(deps, "first")
    later(database, 601)
    second = await hold(deps, "second")  # the seat, free since the first hold ended
    later(database, 601)

    done = await reconcile_due(deps, batch_size=1)

    assert {r.reservation.reservation_id for r in done} == {
        first.reservation_id,
        second.reservation_id,
    }
    assert await reconcile_due(deps, batch_size=1) == []


async def test_a_live_hold_not_paid_yet_is_asked_once_early_then_at_its_end(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    assert held.checkout_id is not None
    checkouts.set_status(held.checkout_id, held.reservation_id, CheckoutState.REQUIRES_PAYMENT)
    later(database, 121)
    [early] = await reconcile_due(deps)
    assert early.step is Step.WAIT
    later(database, 60)
    assert await reconcile_due(deps) == []
    later(database, 420)
    [at_end] = await reconcile_due(deps)
    assert at_end.step is Step.EXPIRE_AND_FOLLOW_UP  # still payable for a grace
    assert status(database, held) is ReservationStatus.EXPIRED
    later(database, 60)
    [followed] = await reconcile_due(deps)
    assert followed.step is Step.FOLLOW_UP
    later(database, 300)
    [last] = await reconcile_due(deps)
    assert last.step is Step.DONE  # no longer payable: never asked again
    later(database, 3600)
    assert await reconcile_due(deps) == []


async def test_a_payment_under_way_keeps_the_hold_and_its_seat_one_grace_longer(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    assert held.checkout_id is not None
    checkouts.set_status(held.checkout_id, held.reservation_id, CheckoutState.PAYMENT_PENDING)
    later(database, 601)

    [kept] = await reconcile_due(deps)

    assert kept.step is Step.KEEP_HOLD
    assert kept.reservation.expire_time == held.expire_time + timedelta(seconds=300)
    with pytest.raises(errors.SoldOut):
        await start_paid_registration(deps, registration("another-buyer"))
    later(database, 300)
    [ended] = await reconcile_due(deps)  # still pending after the grace: ended, followed up
    assert ended.step is Step.EXPIRE_AND_FOLLOW_UP
    paid(checkouts, held)
    later(database, 60)
    [late] = await reconcile_due(deps)
    assert (late.step, late.outcome) == (Step.CONFIRM, ConfirmOutcome.CONFIRMED)


async def test_a_payment_under_way_gets_no_grace_once_its_seat_was_sold_after_the_end(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    assert held.checkout_id is not None
    later(database, 601)
    other = await hold(deps, "another-buyer")  # the seat, free from the hold's end
    checkouts.set_status(held.checkout_id, held.reservation_id, CheckoutState.PAYMENT_PENDING)

    ended = [
        r for r in await reconcile_due(deps) if r.reservation.reservation_id == held.reservation_id
    ]

    assert [r.step for r in ended] == [Step.EXPIRE_AND_FOLLOW_UP]
    assert status(database, held) is ReservationStatus.EXPIRED
    assert status(database, other) is ReservationStatus.PENDING_PAYMENT
    paid(checkouts, held)
    later(database, 60)
    late = [
        r for r in await reconcile_due(deps) if r.reservation.reservation_id == held.reservation_id
    ]
    assert [(r.step, r.outcome) for r in late] == [(Step.CONFIRM, ConfirmOutcome.PAID_UNFULFILLED)]


async def test_a_hold_paid_in_another_amount_ends_at_its_end_and_is_not_asked_about_again(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    assert held.checkout_id is not None
    later(database, 601)
    checkouts.pay(held.checkout_id, held.reservation_id, held.amount - 1, "pay-short")

    [ended] = await reconcile_due(deps)

    assert (ended.answer, ended.step) == (CheckoutAnswer.PAID, Step.EXPIRE)
    assert status(database, held) is ReservationStatus.EXPIRED
    later(database, 60)
    assert await reconcile_due(deps) == []


async def test_reconcile_reservation_of_an_ended_hold_paid_in_another_amount_answers_it_expired(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    assert held.checkout_id is not None
    later(database, 601)
    checkouts.pay(held.checkout_id, held.reservation_id, held.amount - 1, "pay-short")

    found = await reconcile_reservation(deps, held.reservation_id)

    assert (found.step, found.reservation.status) == (Step.EXPIRE, ReservationStatus.EXPIRED)


async def test_a_live_hold_paid_in_another_amount_is_left_to_its_end(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    assert held.checkout_id is not None
    checkouts.pay(held.checkout_id, held.reservation_id, held.amount - 1, "pay-short")

    found = await reconcile_reservation(deps, held.reservation_id)

    assert (found.answer, found.step) == (CheckoutAnswer.PAID, Step.DONE)
    assert status(database, held) is ReservationStatus.PENDING_PAYMENT


async def test_an_outage_ends_the_hold_anyway_and_a_payment_found_later_is_confirmed_late(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held, ended = await ended_in_an_outage(deps, database, checkouts)
    assert (ended.answer, ended.step) == (CheckoutAnswer.UNREACHABLE, Step.EXPIRE_AND_FOLLOW_UP)
    assert status(database, held) is ReservationStatus.EXPIRED

    later(database, 30)
    assert await reconcile_due(deps) == []  # backing off: a minute first
    later(database, 31)
    [again] = await reconcile_due(deps)
    assert again.step is Step.FOLLOW_UP
    checkouts.fail_with = None
    paid(checkouts, held)
    later(database, 121)
    [found] = await reconcile_due(deps)

    assert (found.step, found.outcome) == (Step.CONFIRM, ConfirmOutcome.CONFIRMED)
    assert database.committed[-1].late_payment


async def test_follow_ups_left_unanswered_wait_twice_as_long_each_time(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    _, ended = await ended_in_an_outage(deps, database, checkouts)
    assert ended.step is Step.EXPIRE_AND_FOLLOW_UP

    for wait in (60, 120, 240):
        later(database, wait - 1)
        assert await reconcile_due(deps) == []
        later(database, 1)
        [followed] = await reconcile_due(deps)
        assert followed.step is Step.FOLLOW_UP


async def test_reconcile_since_asks_about_exactly_the_unsettled_checkouts_made_since(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    database.store.settings[EVENT] = paid_event(Tier("vip", "VIP", PRICE, capacity=None))
    await hold(deps, "too-old")
    later(database, 7200)
    settled = await hold(deps, "settled")
    paid(checkouts, settled)
    await reconcile_reservation(deps, settled.reservation_id)
    recent = [await hold(deps, f"recent-{n}") for n in range(BATCH_SIZE + 1)]  # two batches
    cancelled = await cancel_reservation(deps, recent[-1].reservation_id, recent[-1].user_id)

    done = await reconcile_since(deps, timedelta(hours=1))

    assert cancelled.status is ReservationStatus.CANCELLED  # unsettled: it may still be paid
    assert sorted(r.reservation.reservation_id for r in done) == sorted(
        r.reservation_id for r in recent
    )


async def test_a_payment_found_after_the_seat_was_sold_is_paid_unfulfilled(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held, _ = await ended_in_an_outage(deps, database, checkouts)
    checkouts.fail_with = None
    await hold(deps, "buyer")  # the seat the ended hold gave up
    paid(checkouts, held)
    later(database, 61)
    [found] = await reconcile_due(deps)
    assert found.outcome is ConfirmOutcome.PAID_UNFULFILLED


async def test_reconcile_reservation_asks_now_and_answers_what_it_found(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    paid(checkouts, held)
    found = await reconcile_reservation(deps, held.reservation_id)
    assert (found.answer, found.outcome) == (CheckoutAnswer.PAID, ConfirmOutcome.CONFIRMED)
    commits = len(database.committed)
    again = await reconcile_reservation(deps, held.reservation_id)
    # The same reconciliation delivery again: its first answer, and nothing written.
    assert again.outcome is ConfirmOutcome.CONFIRMED
    assert len(database.committed) == commits
    with pytest.raises(errors.ReservationNotFound):
        await reconcile_reservation(deps, "00000000-0000-4000-8000-000000000000")


async def test_an_answer_naming_another_reservation_is_not_acted_on(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    held = await hold(deps)
    assert held.checkout_id is not None
    checkouts.pay(held.checkout_id, "someone-elses-reservation", held.amount, "pay-1")
    found = await reconcile_reservation(deps, held.reservation_id)
    assert found.answer is CheckoutAnswer.UNREACHABLE
    assert status(database, held) is ReservationStatus.PENDING_PAYMENT
