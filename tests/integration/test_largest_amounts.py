"""The largest amount the API takes (2^53 - 1 minor units) through every path that gives money
back: owed, sent, recorded and announced to the unit.

A refund over 2^31 - 1 was sent to the payment service, which paid it back, and never recorded:
the statement that adds it to `refunded_amount` read its amount as a 32-bit integer and failed,
so the refund stayed `requested`, was sent again at every lease, and was never announced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from moim.ticketing.v1 import refund_pb2, registration_event_pb2, reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.conftest import PaymentService
from tests.integration.flows import EVENT, hold, payment_for
from tests.integration.test_refunds import (
    SUCCEEDED,
    configure,
    feed_event,
    paid_seat,
    refund_request,
    reservation,
)
from ticketing_service.bootstrap import Service, cancel_events
from ticketing_service.domain.money import MAX_AMOUNT
from ticketing_service.service_layer.refund_worker import send_due_refunds

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

REFUND_SUCCEEDED = registration_event_pb2.REGISTRATION_EVENT_TYPE_REFUND_SUCCEEDED

# Owes a refund of a payment of MAX_AMOUNT; returns the reservation whose refund it is.
Owe = Callable[["Stub", Service, PaymentService], Awaitable[str]]


async def organizer_refunds_all(stub: Stub, service: Service, payments: PaymentService) -> str:
    seat = await paid_seat(stub, payments, "whale")
    await stub.RefundReservation(
        pb.RefundReservationRequest(
            reservation_id=seat.reservation_id,
            reason=refund_pb2.REFUND_REASON_ORGANIZER,
            request_id="all-of-it",
        )
    )
    return seat.reservation_id


async def user_gives_up_the_seat(stub: Stub, service: Service, payments: PaymentService) -> str:
    seat = await paid_seat(stub, payments, "whale")
    await stub.CancelRegistration(
        pb.CancelRegistrationRequest(reservation_id=seat.reservation_id, user_id="whale")
    )
    return seat.reservation_id


async def organizer_cancels_the_event(
    stub: Stub, service: Service, payments: PaymentService
) -> str:
    seat = await paid_seat(stub, payments, "whale")
    await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT))
    await cancel_events(service.deps)
    return seat.reservation_id


async def payment_finds_no_seat(stub: Stub, service: Service, payments: PaymentService) -> str:
    live = await hold(stub, "whale")
    await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT))
    request = payment_for(live)
    payments.state.mark_paid(live.checkout_id, payment_id=request.payment_id)
    answer = await stub.ConfirmPayment(request)
    assert answer.outcome == pb.CONFIRM_PAYMENT_OUTCOME_PAID_UNFULFILLED
    return live.reservation_id


@pytest.mark.parametrize(
    ("owe", "refunded"),
    [
        (organizer_refunds_all, MAX_AMOUNT),
        # 100 hours before the start the policy gives 70 %: floor(MAX_AMOUNT * 70 / 100).
        (user_gives_up_the_seat, 6_305_039_478_318_693),
        (organizer_cancels_the_event, MAX_AMOUNT),
        (payment_finds_no_seat, MAX_AMOUNT),
    ],
)
async def test_a_refund_of_the_largest_payment_is_recorded_and_announced_to_the_unit(
    stub: Stub, service: Service, payment_service: PaymentService, owe: Owe, refunded: int
) -> None:
    await configure(stub, price=MAX_AMOUNT, starts_in=timedelta(hours=100))
    reservation_id = await owe(stub, service, payment_service)

    await send_due_refunds(service.deps)

    after = await reservation(stub, reservation_id)
    [refund] = after.refunds
    assert (refund.amount, refund.state) == (refunded, SUCCEEDED)
    assert after.refunded_amount == refunded
    announced = await feed_event(stub, REFUND_SUCCEEDED)
    assert (announced.refund.refund_id, announced.refund.amount) == (refund.refund_id, refunded)
    assert announced.reservation.refunded_amount == refunded


async def test_partial_refunds_of_the_largest_payment_add_up_to_it_exactly(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub, price=MAX_AMOUNT)
    seat = await paid_seat(stub, payment_service, "whale")

    for request_id, amount in (("most", MAX_AMOUNT - 1), ("rest", 0)):
        await stub.RefundReservation(refund_request(seat, amount, request_id))
    await send_due_refunds(service.deps)

    after = await reservation(stub, seat.reservation_id)
    assert sorted(r.amount for r in after.refunds) == [1, MAX_AMOUNT - 1]
    assert {r.state for r in after.refunds} == {SUCCEEDED}
    assert after.refunded_amount == MAX_AMOUNT
    assert after.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
