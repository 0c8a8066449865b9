"""CancelRegistration, RefundReservation, CancelEvent and the automatic refunds, every branch, on
fakes of the ports."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.fakes import FakeDatabase
from tests.unit.service_layer.conftest import EVENT, PRICE, paid_event, registration
from tests.unit.service_layer.test_payment_handlers import hold, paying
from ticketing_service.domain import errors
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.refunds import RefundReason, RefundRule, RefundStatus
from ticketing_service.domain.reservations import (
    ConfirmOutcome,
    Delivery,
    DeliveryScheme,
    Reservation,
    ReservationStatus,
)
from ticketing_service.domain.settings import Tier
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.payment_handlers import confirm_payment
from ticketing_service.service_layer.refund_handlers import (
    RefundCommand,
    cancel_batch,
    cancel_event,
    cancel_registration,
    get_event_cancellation,
    refund_reservation,
)
from ticketing_service.service_layer.registration_handlers import (
    get_reservation,
    start_paid_registration,
)


async def seat(deps: Dependencies, database: FakeDatabase, user_id: str = "payer") -> Reservation:
    """A confirmed reservation of `user_id`."""
    held = await hold(deps, database, user_id)
    result = await confirm_payment(deps, paying(held))
    assert result.outcome is ConfirmOutcome.CONFIRMED
    return result.reservation


def starting_in(database: FakeDatabase, hours: float) -> None:
    """The event starts `hours` after the database's now."""
    database.store.settings[EVENT] = paid_event(
        event_start_time=database.store.now + timedelta(hours=hours)
    )


def refund(reservation: Reservation, amount: int = 0, **changes: object) -> RefundCommand:
    fields: dict[str, object] = {
        "reservation_id": reservation.reservation_id,
        "amount": amount,
        "reason": RefundReason.ORGANIZER,
        "release_seat": False,
        "request_id": "r-1",
    }
    return RefundCommand(**(fields | changes))  # type: ignore[arg-type]  # fields by name


# --- CancelRegistration ---


@pytest.mark.parametrize(
    ("hours", "refunded"),
    [(200, PRICE), (100, PRICE * 70 // 100), (30, PRICE // 2), (5, 0)],
)
async def test_giving_up_a_seat_owes_what_the_policy_gives_and_frees_the_seat(
    deps: Dependencies, database: FakeDatabase, hours: float, refunded: int
) -> None:
    confirmed = await seat(deps, database, "giver")
    starting_in(database, hours)

    result = await cancel_registration(deps, confirmed.reservation_id, "giver", "c-1")

    assert result.reservation.status is ReservationStatus.REGISTRATION_CANCELLED
    assert [r.amount for r in result.reservation.refunds] == ([refunded] if refunded else [])
    assert (result.refund is None) == (refunded == 0)
    other = await start_paid_registration(deps, registration("taker"))
    assert other.reservation is not None  # the seat is on sale again (capacity 2, one held)


async def test_without_a_start_time_a_seat_given_up_is_refunded_in_full(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)

    result = await cancel_registration(deps, confirmed.reservation_id, "payer", None)

    assert result.refund is not None
    assert (result.refund.amount, result.refund.reason) == (PRICE, RefundReason.CANCELLATION)


async def test_a_cancellation_the_policy_gives_one_minor_unit_for_owes_it(
    deps: Dependencies, database: FakeDatabase
) -> None:
    database.store.settings[EVENT] = paid_event(
        Tier("vip", "VIP", 100, capacity=2),
        event_start_time=database.store.now + timedelta(hours=1),
        refund_policy=(RefundRule(0, 1),),
    )
    confirmed = await seat(deps, database)

    result = await cancel_registration(deps, confirmed.reservation_id, "payer", None)

    assert result.refund is not None
    assert (result.refund.amount, result.refund.reason) == (1, RefundReason.CANCELLATION)


async def test_a_cancellation_refunds_at_most_what_is_left_after_earlier_refunds(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    await refund_reservation(deps, refund(confirmed, PRICE - 1000))

    result = await cancel_registration(deps, confirmed.reservation_id, "payer", None)

    assert result.refund is not None
    assert result.refund.amount == 1000


async def test_giving_up_a_seat_again_answers_the_same_and_owes_nothing_more(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    first = await cancel_registration(deps, confirmed.reservation_id, "payer", "c-1")

    again = await cancel_registration(deps, confirmed.reservation_id, "payer", "c-2")

    assert again.refund == first.refund
    assert len(again.reservation.refunds) == 1
    assert database.store.events[-1].type is RegistrationEventType.REGISTRATION_CANCELLED


async def test_giving_up_a_seat_with_the_request_id_of_a_refund_is_refused(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    await refund_reservation(deps, refund(confirmed, 5000, request_id="press-1"))

    with pytest.raises(errors.InvalidArgument) as raised:
        await cancel_registration(deps, confirmed.reservation_id, "payer", "press-1")

    assert [v.field for v in raised.value.violations] == ["request_id"]
    kept = await get_reservation(deps, confirmed.reservation_id)
    assert kept.status is ReservationStatus.CONFIRMED
    assert [r.amount for r in kept.refunds] == [5000]


async def test_only_the_owner_gives_up_a_seat(deps: Dependencies, database: FakeDatabase) -> None:
    confirmed = await seat(deps, database)

    with pytest.raises(errors.NotReservationOwner):
        await cancel_registration(deps, confirmed.reservation_id, "someone-else", None)


async def test_a_hold_has_no_seat_to_give_up(deps: Dependencies, database: FakeDatabase) -> None:
    held = await hold(deps, database)

    with pytest.raises(errors.RegistrationNotCancellable):
        await cancel_registration(deps, held.reservation_id, "payer", None)


async def test_giving_up_an_unknown_reservation_is_not_found(deps: Dependencies) -> None:
    with pytest.raises(errors.ReservationNotFound):
        await cancel_registration(deps, "6f1c8a52-4f7e-4a57-9d0f-4f1f9d3c2b11", "u", None)


# --- RefundReservation ---


async def test_an_organizer_refunds_part_then_the_rest_and_no_more(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)

    part = await refund_reservation(deps, refund(confirmed, 10000, request_id="a"))
    rest = await refund_reservation(deps, refund(confirmed, 0, request_id="b"))
    with pytest.raises(errors.RefundExceedsPaid):
        await refund_reservation(deps, refund(confirmed, 1, request_id="c"))

    assert part.refund is not None
    assert rest.refund is not None
    assert (part.refund.amount, rest.refund.amount) == (10000, PRICE - 10000)
    assert rest.reservation.status is ReservationStatus.CONFIRMED


async def test_a_refund_asking_more_than_was_paid_is_refused(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)

    with pytest.raises(errors.RefundExceedsPaid):
        await refund_reservation(deps, refund(confirmed, PRICE + 1))


async def test_a_failed_refund_no_longer_counts_against_the_payment(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    first = await refund_reservation(deps, refund(confirmed, request_id="a"))
    assert first.refund is not None
    failed = replace(first.refund, status=RefundStatus.FAILED)
    database.store.refunds[first.refund.refund_id] = failed

    again = await refund_reservation(deps, refund(confirmed, request_id="b"))

    assert again.refund is not None
    assert again.refund.amount == PRICE


async def test_a_refund_repeated_with_its_request_id_answers_the_first(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    first = await refund_reservation(deps, refund(confirmed, 5000))

    again = await refund_reservation(deps, refund(confirmed, 5000))

    assert again.refund == first.refund
    assert len(again.reservation.refunds) == 1


async def test_a_request_id_reused_for_another_refund_is_refused(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    await refund_reservation(deps, refund(confirmed, 5000))

    with pytest.raises(errors.InvalidArgument) as raised:
        await refund_reservation(deps, refund(confirmed, 6000))

    assert [v.field for v in raised.value.violations] == ["request_id"]


async def test_a_request_id_reused_to_release_the_seat_is_refused_and_the_seat_kept(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    await refund_reservation(deps, refund(confirmed, 5000))

    with pytest.raises(errors.InvalidArgument) as raised:
        await refund_reservation(deps, refund(confirmed, 5000, release_seat=True))

    assert [v.field for v in raised.value.violations] == ["request_id"]
    kept = await get_reservation(deps, confirmed.reservation_id)
    assert kept.status is ReservationStatus.CONFIRMED


# Listed, not read from REQUESTABLE_REASONS: the test must fail when one goes missing there.
@pytest.mark.parametrize(
    "reason",
    [
        RefundReason.ORGANIZER,
        RefundReason.GOODWILL,
        RefundReason.PAID_UNFULFILLED,
        RefundReason.DUPLICATE,
    ],
)
async def test_an_organizer_may_give_each_requestable_reason(
    deps: Dependencies, database: FakeDatabase, reason: RefundReason
) -> None:
    confirmed = await seat(deps, database)

    result = await refund_reservation(deps, refund(confirmed, 1000, reason=reason))

    assert result.refund is not None
    assert (result.refund.amount, result.refund.reason) == (1000, reason)


async def test_an_organizer_refunds_the_rest_of_a_seat_given_up_for_half(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    starting_in(database, 30)  # the policy gives 50 %
    await cancel_registration(deps, confirmed.reservation_id, "payer", None)

    rest = await refund_reservation(deps, refund(confirmed, 0))

    assert rest.refund is not None
    assert rest.refund.amount == PRICE - PRICE // 2
    assert sum(r.amount for r in rest.reservation.refunds) == PRICE


@pytest.mark.parametrize(
    "reason", [RefundReason.CANCELLATION, RefundReason.MISMATCH, RefundReason.EVENT_CANCELLED]
)
async def test_the_service_s_own_reasons_cannot_be_asked_for(
    deps: Dependencies, database: FakeDatabase, reason: RefundReason
) -> None:
    confirmed = await seat(deps, database)

    with pytest.raises(errors.InvalidArgument):
        await refund_reservation(deps, refund(confirmed, reason=reason))


async def test_a_reservation_without_a_payment_cannot_be_refunded(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)

    with pytest.raises(errors.RegistrationNotCancellable):
        await refund_reservation(deps, refund(held))


async def test_a_refund_that_releases_the_seat_cancels_the_registration(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)

    result = await refund_reservation(deps, refund(confirmed, release_seat=True))

    assert result.reservation.status is ReservationStatus.REGISTRATION_CANCELLED
    assert result.refund is not None
    assert result.refund.release_seat


async def test_releasing_the_seat_of_a_reservation_without_one_only_refunds(
    deps: Dependencies, database: FakeDatabase
) -> None:
    unfulfilled = await paid_unfulfilled(deps, database, auto_refund=False)

    result = await refund_reservation(
        deps, refund(unfulfilled, reason=RefundReason.PAID_UNFULFILLED, release_seat=True)
    )

    assert result.reservation.status is ReservationStatus.PAID_UNFULFILLED
    assert result.refund is not None
    assert result.refund.amount == PRICE


# --- owed by themselves ---


async def paid_unfulfilled(
    deps: Dependencies, database: FakeDatabase, *, auto_refund: bool = True
) -> Reservation:
    """A late payment that found no free seat (the tier has one seat, taken meanwhile)."""
    database.store.settings[EVENT] = paid_event(Tier("vip", "VIP", PRICE, capacity=1))
    late = await hold(deps, database, "late")
    database.store.now += timedelta(hours=1)  # the hold ended
    await seat(deps, database, "on-time")
    deps = replace(deps, auto_refund=auto_refund)
    result = await confirm_payment(deps, paying(late))
    assert result.outcome is ConfirmOutcome.PAID_UNFULFILLED
    return result.reservation


async def test_the_answer_of_a_payment_without_a_seat_names_the_refund_it_owes(
    deps: Dependencies, database: FakeDatabase
) -> None:
    answered = await paid_unfulfilled(deps, database)

    assert [r.reason for r in answered.refunds] == [RefundReason.PAID_UNFULFILLED]


async def test_a_paid_unfulfilled_payment_is_owed_back_in_full(
    deps: Dependencies, database: FakeDatabase
) -> None:
    unfulfilled = await paid_unfulfilled(deps, database)

    found = await get_reservation(deps, unfulfilled.reservation_id)

    [owed] = found.refunds
    assert (owed.amount, owed.reason, owed.status) == (
        PRICE,
        RefundReason.PAID_UNFULFILLED,
        RefundStatus.REQUESTED,
    )
    assert owed.payment_id == "pay-late"


async def test_with_auto_refund_off_nothing_is_owed_by_itself(
    deps: Dependencies, database: FakeDatabase
) -> None:
    unfulfilled = await paid_unfulfilled(deps, database, auto_refund=False)

    assert (await get_reservation(deps, unfulfilled.reservation_id)).refunds == ()


async def test_a_mismatched_payment_is_owed_back_as_it_was_paid(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, amount=100, payment_id="odd"))

    [owed] = (await get_reservation(deps, held.reservation_id)).refunds
    assert (owed.amount, owed.payment_id, owed.reason) == (100, "odd", RefundReason.MISMATCH)


async def test_a_second_payment_of_a_settled_reservation_is_owed_back_as_a_duplicate(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(confirmed, payment_id="pay-twice"))

    refunds = (await get_reservation(deps, confirmed.reservation_id)).refunds
    assert [(r.payment_id, r.reason) for r in refunds] == [("pay-twice", RefundReason.DUPLICATE)]


async def test_the_settled_payment_reported_with_other_values_is_never_refunded_by_itself(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(confirmed, amount=1, delivery=None))

    assert (await get_reservation(deps, confirmed.reservation_id)).refunds == ()


async def test_the_settled_payment_reported_twice_with_other_amounts_keeps_the_seat_unrefunded(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)

    for amount in (1, PRICE + 1):  # the second report is no top-up: the payment has its seat
        with pytest.raises(errors.PaymentMismatch):
            await confirm_payment(deps, paying(confirmed, amount=amount, delivery=None))

    after = await get_reservation(deps, confirmed.reservation_id)
    assert (after.status, after.refunds) == (ReservationStatus.CONFIRMED, ())


async def test_a_mismatched_payment_of_one_minor_unit_is_owed_back(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, amount=1, payment_id="odd"))

    refunds = (await get_reservation(deps, held.reservation_id)).refunds
    assert [(r.amount, r.reason) for r in refunds] == [(1, RefundReason.MISMATCH)]


async def test_with_auto_refund_off_a_mismatched_payment_is_not_owed_back(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    manual = replace(deps, auto_refund=False)

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(manual, paying(held, amount=100, payment_id="odd"))

    assert (await get_reservation(deps, held.reservation_id)).refunds == ()


async def test_a_seat_given_up_stays_given_up_when_its_payment_is_reported_again(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database)
    given_up = await cancel_registration(deps, confirmed.reservation_id, "payer", None)
    again = Delivery(DeliveryScheme.STANDARD_WEBHOOKS, "msg-after-cancel")

    result = await confirm_payment(deps, paying(confirmed, delivery=again))

    # Answered from what is stored: no second registration, and the refund is still owed.
    assert result.reservation.status is ReservationStatus.REGISTRATION_CANCELLED
    assert (EVENT, "payer") not in database.store.registrations
    after = await get_reservation(deps, confirmed.reservation_id)
    assert after.status is ReservationStatus.REGISTRATION_CANCELLED
    assert after.refunds == given_up.reservation.refunds != ()


async def test_a_paid_unfulfilled_payment_reported_again_once_a_seat_frees_gets_no_seat(
    deps: Dependencies, database: FakeDatabase
) -> None:
    unfulfilled = await paid_unfulfilled(deps, database)
    _, on_time = database.store.registrations[(EVENT, "on-time")]
    await cancel_registration(deps, on_time, "on-time", None)  # the tier's one seat is free
    again = Delivery(DeliveryScheme.STANDARD_WEBHOOKS, "msg-after-seat-freed")

    result = await confirm_payment(deps, paying(unfulfilled, delivery=again))

    assert result.outcome is ConfirmOutcome.PAID_UNFULFILLED
    assert result.reservation.status is ReservationStatus.PAID_UNFULFILLED
    assert (EVENT, "late") not in database.store.registrations


# --- CancelEvent ---


async def test_cancelling_an_event_stops_sales_at_once(
    deps: Dependencies, database: FakeDatabase
) -> None:
    await seat(deps, database)

    started = await cancel_event(deps, EVENT, "c-1")

    assert (started.done, started.reservations_total) == (False, 1)
    with pytest.raises(errors.EventCancelled):
        await start_paid_registration(deps, registration("latecomer"))


async def test_the_cancellation_cancels_holds_and_registrations_in_batches_with_full_refunds(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database, "guest")
    held = await hold(deps, database, "undecided")
    await cancel_event(deps, EVENT, None)

    first = await cancel_batch(deps, 1)
    second = await cancel_batch(deps, 1)
    nothing = await cancel_batch(deps, 1)
    progress = await get_event_cancellation(deps, EVENT)

    assert (first, second, nothing) == (1, 1, 0)
    assert (progress.done, progress.reservations_done, progress.refunds_pending) == (True, 2, 1)
    guest = await get_reservation(deps, confirmed.reservation_id)
    assert guest.status is ReservationStatus.REGISTRATION_CANCELLED
    assert [(r.amount, r.reason) for r in guest.refunds] == [(PRICE, RefundReason.EVENT_CANCELLED)]
    assert (await get_reservation(deps, held.reservation_id)).status is (
        ReservationStatus.CANCELLED
    )


async def test_cancelling_an_unknown_event_is_not_found(deps: Dependencies) -> None:
    with pytest.raises(errors.EventNotFound):
        await cancel_event(deps, "no-such-event", None)


async def test_the_cancellation_of_an_unknown_event_is_an_unknown_event(deps: Dependencies) -> None:
    with pytest.raises(errors.EventNotFound):
        await get_event_cancellation(deps, "no-such-event")


async def test_the_cancellation_of_an_event_never_cancelled_is_not_found(
    deps: Dependencies, database: FakeDatabase
) -> None:
    database.store.settings[EVENT] = paid_event()

    with pytest.raises(errors.EventNotCancelled):
        await get_event_cancellation(deps, EVENT)


@pytest.mark.parametrize(
    "changes",
    [{"provider": "PortOne"}, {"checkout_id": "another-checkout"}],
    ids=["provider", "checkout"],
)
async def test_a_payment_not_reported_as_taken_for_this_checkout_is_not_refunded_by_itself(
    deps: Dependencies, database: FakeDatabase, changes: dict[str, object]
) -> None:
    held = await hold(deps, database)

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, **changes))

    assert (await get_reservation(deps, held.reservation_id)).refunds == ()


async def test_a_payment_owed_back_never_settles_the_reservation_nor_is_owed_twice(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, amount=PRICE - 1, delivery=None))

    for amount in (PRICE, PRICE, PRICE - 5):  # reported as it was, again, then for less
        with pytest.raises(errors.PaymentMismatch):
            await confirm_payment(deps, paying(held, amount=amount, delivery=None))

    after = await get_reservation(deps, held.reservation_id)
    assert after.status is ReservationStatus.PENDING_PAYMENT
    # Its refunds return what it was reported to be at most, once: all of it, no more.
    assert [(r.amount, r.reason) for r in after.refunds] == [
        (PRICE - 1, RefundReason.MISMATCH),
        (1, RefundReason.MISMATCH),
    ]


@pytest.mark.parametrize(
    ("later", "owed"),
    [
        ({"currency_code": "USD"}, [PRICE - 1]),  # another currency: an operator looks
        ({"checkout_id": "chk-elsewhere"}, [PRICE - 1]),  # another checkout's payment
    ],
)
async def test_a_payment_owed_back_reported_again_otherwise_owes_nothing_more(
    deps: Dependencies, database: FakeDatabase, later: dict[str, str], owed: list[int]
) -> None:
    held = await hold(deps, database)
    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, amount=PRICE - 1, delivery=None))

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, amount=PRICE + 10, delivery=None, **later))

    refunds = (await get_reservation(deps, held.reservation_id)).refunds
    assert [r.amount for r in refunds] == owed


async def test_a_payment_that_settled_another_reservation_is_never_refunded_under_this_one(
    deps: Dependencies, database: FakeDatabase
) -> None:
    confirmed = await seat(deps, database, "payer")
    other = await hold(deps, database, "other")
    assert confirmed.payment_id is not None

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(
            deps, paying(other, amount=PRICE + 1, payment_id=confirmed.payment_id, delivery=None)
        )

    assert (await get_reservation(deps, other.reservation_id)).refunds == ()


async def test_a_seat_given_up_after_the_event_was_cancelled_gets_its_full_refund(
    deps: Dependencies, database: FakeDatabase
) -> None:
    mine = await seat(deps, database)
    starting_in(database, 5)  # the policy gives nothing
    await cancel_event(deps, EVENT, None)

    result = await cancel_registration(deps, mine.reservation_id, "payer", None)

    assert result.refund is not None
    assert (result.refund.amount, result.refund.reason) == (PRICE, RefundReason.EVENT_CANCELLED)
    progress = await get_event_cancellation(deps, EVENT)
    assert (progress.done, progress.reservations_done) == (True, 1)


async def test_giving_up_a_seat_again_after_the_event_was_cancelled_answers_the_same_refund(
    deps: Dependencies, database: FakeDatabase
) -> None:
    mine = await seat(deps, database)
    await cancel_event(deps, EVENT, None)
    first = await cancel_registration(deps, mine.reservation_id, "payer", "c-1")

    again = await cancel_registration(deps, mine.reservation_id, "payer", "c-1")

    assert first.refund is not None
    assert again.refund == first.refund
    assert len(again.reservation.refunds) == 1


async def test_a_seat_released_after_the_event_was_cancelled_counts_once_toward_it(
    deps: Dependencies, database: FakeDatabase
) -> None:
    mine = await seat(deps, database)
    await cancel_event(deps, EVENT, None)

    await refund_reservation(deps, refund(mine, 1000, release_seat=True))

    progress = await get_event_cancellation(deps, EVENT)
    assert (progress.done, progress.reservations_done, progress.reservations_total) == (
        True,
        1,
        1,
    )


@pytest.mark.parametrize(("asked", "rest"), [(1000, [PRICE - 1000]), (0, [])])
async def test_a_seat_released_after_the_event_was_cancelled_owes_the_rest_of_its_payment(
    deps: Dependencies, database: FakeDatabase, asked: int, rest: list[int]
) -> None:
    mine = await seat(deps, database)
    await cancel_event(deps, EVENT, None)

    await refund_reservation(deps, refund(mine, asked, release_seat=True))

    refunds = (await get_reservation(deps, mine.reservation_id)).refunds
    cancelled = [r.amount for r in refunds if r.reason is RefundReason.EVENT_CANCELLED]
    assert cancelled == rest
    assert sum(r.amount for r in refunds) == PRICE


async def test_a_live_hold_paid_after_the_event_was_cancelled_gets_no_seat(
    deps: Dependencies, database: FakeDatabase
) -> None:
    held = await hold(deps, database)
    await cancel_event(deps, EVENT, None)

    result = await confirm_payment(deps, paying(held))

    assert result.outcome is ConfirmOutcome.PAID_UNFULFILLED
    assert [r.reason for r in result.reservation.refunds] == [RefundReason.PAID_UNFULFILLED]
    progress = await get_event_cancellation(deps, EVENT)
    assert (progress.done, progress.reservations_done) == (True, 1)
