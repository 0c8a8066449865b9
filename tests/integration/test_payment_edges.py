"""The edges of paying, on the real server and Postgres: what must never swallow or invent money.

A mismatched payment is announced on the feed once; a settled reservation names the payment
that settled it; a signed time from before 1970 is refused; a hold released while its checkout
was opened gets no URL to pay at; only the races the service expects are retried.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from moim.ticketing.v1 import registration_event_pb2 as events_pb2
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.conftest import PaymentService
from tests.integration.flows import EVENT, configure_event, hold, payment_for, sql, start
from tests.rich_errors import rich_error
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.events_handlers import sequence_events

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

MISMATCH = events_pb2.REGISTRATION_EVENT_TYPE_PAYMENT_MISMATCH


async def failure(call: object) -> tuple[grpc.StatusCode, str]:
    """The code and reason of a call expected to fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]  # a grpc.aio call is awaitable
    error = rich_error(caught.value)
    return error.code, error.reason


async def feed(stub: Stub, deps: Dependencies) -> list[events_pb2.RegistrationEvent]:
    await sequence_events(deps)
    page = await stub.ListRegistrationEvents(pb.ListRegistrationEventsRequest(page_size=1000))
    return list(page.events)


# A payment mismatch is announced once, with what differed


async def test_a_mismatched_payment_is_announced_on_the_feed_once_with_what_differed(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    wrong = payment_for(held, amount=held.amount - 1, currency_code="USD", delivery_id="d-1")

    first = await failure(stub.ConfirmPayment(wrong))
    retried = await failure(stub.ConfirmPayment(wrong))  # the sender retries a 409

    assert first == retried == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_MISMATCH")
    [event] = [e for e in await feed(stub, deps) if e.type == MISMATCH]
    assert event.reservation.reservation_id == held.reservation_id
    assert event.reservation.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    mismatch = event.payment_mismatch
    assert (mismatch.amount, mismatch.currency_code, mismatch.payment_id) == (
        held.amount - 1,
        "USD",
        wrong.payment_id,
    )
    assert list(mismatch.fields) == ["amount", "currency_code"]
    assert sql(database_url, "SELECT count(*) FROM payment_mismatches") == [(1,)]


async def test_a_second_payment_of_a_confirmed_reservation_is_announced_as_a_mismatch(
    stub: Stub, deps: Dependencies
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    await stub.ConfirmPayment(payment_for(held, payment_id="pay-1"))

    code, reason = await failure(stub.ConfirmPayment(payment_for(held, payment_id="pay-2")))

    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_MISMATCH")
    [event] = [e for e in await feed(stub, deps) if e.type == MISMATCH]
    assert (event.payment_mismatch.payment_id, list(event.payment_mismatch.fields)) == (
        "pay-2",
        ["payment_id"],
    )
    assert event.reservation.payment_id == "pay-1"


# One payment, one fate: a seat, or its money back; never both, never twice


async def reservation_of(stub: Stub, held: reservation_pb2.Reservation) -> Any:
    request = pb.GetReservationRequest(reservation_id=held.reservation_id)
    return (await stub.GetReservation(request)).reservation


async def refunds_of(stub: Stub, held: reservation_pb2.Reservation) -> list[tuple[str, int]]:
    return [(r.payment_id, r.amount) for r in (await reservation_of(stub, held)).refunds]


async def test_a_payment_whose_provider_alone_was_miswritten_is_not_refunded_and_may_settle(
    stub: Stub,
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    careless = payment_for(held, provider="PortOne", payment_id="pay-1")

    refused = await failure(stub.ConfirmPayment(careless))
    settled = await stub.ConfirmPayment(payment_for(held, payment_id="pay-1"))

    # Refunded before, the money went back while the correct report gave the seat.
    assert refused == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_MISMATCH")
    assert settled.outcome == pb.CONFIRM_PAYMENT_OUTCOME_CONFIRMED
    assert await refunds_of(stub, held) == []


async def test_a_payment_owed_back_for_its_amount_never_settles_the_reservation_after(
    stub: Stub,
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    await failure(stub.ConfirmPayment(payment_for(held, amount=held.amount - 1, payment_id="p")))

    again = await failure(stub.ConfirmPayment(payment_for(held, payment_id="p")))

    assert again == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_MISMATCH")
    pending = reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    assert (await reservation_of(stub, held)).status == pending
    # Its refunds return all it was then reported to be, once.
    assert await refunds_of(stub, held) == [("p", held.amount - 1), ("p", 1)]


async def test_another_reservations_payment_is_never_refunded_under_this_one(
    stub: Stub,
) -> None:
    await configure_event(stub)
    paid = await hold(stub, "user-1")
    await stub.ConfirmPayment(payment_for(paid, payment_id="pay-x"))
    other = await hold(stub, "user-2")

    # Another reservation's checkout and payment, as a careless sender might pair them.
    wrong = payment_for(other, checkout_id=paid.checkout_id, payment_id="pay-x")
    assert (await failure(stub.ConfirmPayment(wrong)))[1] == "PAYMENT_MISMATCH"
    # Its payment again, with this reservation's own checkout and another amount.
    own = payment_for(other, amount=other.amount + 1, payment_id="pay-x")
    assert (await failure(stub.ConfirmPayment(own)))[1] == "PAYMENT_MISMATCH"

    assert await refunds_of(stub, other) == []
    assert await refunds_of(stub, paid) == []


async def test_one_mismatched_payment_reported_for_two_reservations_is_owed_back_once(
    stub: Stub,
) -> None:
    await configure_event(stub)
    first, second = await hold(stub, "user-1"), await hold(stub, "user-2")

    for held in (first, second):
        wrong = payment_for(held, amount=held.amount + 5, payment_id="pay-once")
        assert (await failure(stub.ConfirmPayment(wrong)))[1] == "PAYMENT_MISMATCH"

    assert await refunds_of(stub, first) == [("pay-once", first.amount + 5)]
    assert await refunds_of(stub, second) == []


async def test_a_payment_that_paid_one_reservation_pays_no_second_one(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    first, second = await hold(stub, "user-1"), await hold(stub, "user-2")
    await stub.ConfirmPayment(payment_for(first, payment_id="pay-shared"))

    # The second reservation's own checkout and amount, with the first one's payment: as a
    # signed callback, then as the payment service answers reconciliation.
    reused = await failure(stub.ConfirmPayment(payment_for(second, payment_id="pay-shared")))
    payment_service.state.mark_paid(second.checkout_id, payment_id="pay-shared")
    asked = await stub.ReconcileReservation(
        pb.ReconcileReservationRequest(reservation_id=second.reservation_id)
    )

    # Both gave a second seat for one payment, and each seat's refund returned it again.
    assert reused == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_MISMATCH")
    assert asked.reservation.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    assert await refunds_of(stub, second) == []  # the payment is the first seat's
    paid = "SELECT reservation_id::text FROM payments WHERE provider_payment_id = $1"
    assert sql(database_url, paid + " AND status = 'paid'", "pay-shared") == [
        (first.reservation_id,)
    ]


# The payment that settled a reservation is named


async def test_a_settled_reservation_and_its_feed_event_name_the_payment_and_its_time(
    stub: Stub, deps: Dependencies
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    paid_time = Timestamp(seconds=1_714_534_200)
    confirmed = await stub.ConfirmPayment(payment_for(held, paid_time=paid_time))

    read = await stub.GetReservation(pb.GetReservationRequest(reservation_id=held.reservation_id))

    assert held.payment_id == ""
    for reservation in (confirmed.reservation, read.reservation):
        assert reservation.payment_id == f"pay-{held.reservation_id}"
        assert reservation.paid_time == paid_time
    [event] = [
        e
        for e in await feed(stub, deps)
        if e.type == events_pb2.REGISTRATION_EVENT_TYPE_RESERVATION_CONFIRMED
    ]
    assert (event.reservation.payment_id, event.reservation.paid_time) == (
        f"pay-{held.reservation_id}",
        paid_time,
    )


# Impossible times are refused, not retried


@pytest.mark.parametrize(
    "seconds",
    [-1, -62_135_596_800, 253_402_300_800],
    ids=["before 1970", "year 1", "after 9999"],
)
async def test_a_paid_time_outside_1970_to_9999_is_invalid_and_changes_nothing(
    stub: Stub, seconds: int
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    request = payment_for(held, paid_time=Timestamp(seconds=seconds))

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ConfirmPayment(request)

    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert error.fields == ["paid_time"]
    read = await stub.GetReservation(pb.GetReservationRequest(reservation_id=held.reservation_id))
    assert read.reservation.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT


# A hold released while its checkout was opened


async def test_a_hold_cancelled_while_its_checkout_was_opened_gets_no_url_to_pay_at(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    payment_service.state.faults["create_checkout"] = "held"
    starting = asyncio.ensure_future(failure(start(stub, "user-1")))
    async with asyncio.timeout(10):
        await payment_service.state.received.wait()
    [asked] = payment_service.state.requests
    assert isinstance(asked.body, dict)
    reservation_id = asked.body["reservationId"]
    cancel = pb.CancelReservationRequest(reservation_id=reservation_id, user_id="user-1")
    await stub.CancelReservation(cancel)
    payment_service.state.release.set()

    assert await starting == (grpc.StatusCode.ABORTED, "CONCURRENT_UPDATE")
    read = await stub.GetReservation(pb.GetReservationRequest(reservation_id=reservation_id))
    assert read.reservation.status == reservation_pb2.RESERVATION_STATUS_CANCELLED
    assert (read.reservation.checkout_id, read.reservation.checkout_url) == ("", "")
    assert sql(database_url, "SELECT count(*) FROM payments") == [(0,)]
    payment_service.state.faults.clear()
    retried = await hold(stub, "user-1")
    assert retried.reservation_id != reservation_id
    assert retried.checkout_url


# Only the races the service expects are retried


async def test_a_unique_violation_nobody_races_on_answers_internal_and_is_logged(
    stub: Stub, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    # A registration that already claims this reservation for someone else: a state no code
    # path makes, so the confirmation's insert meets a constraint no race explains.
    sql(
        database_url,
        "INSERT INTO registrations (registration_id, reservation_id, event_id, tier_id, user_id,"
        " status) VALUES ($1, $2, $3, 'vip', 'someone-else', 'accepted')",
        uuid.uuid4(),
        held.reservation_id,
        EVENT,
    )

    with caplog.at_level(logging.ERROR):
        code, _ = await failure(stub.ConfirmPayment(payment_for(held)))

    assert code == grpc.StatusCode.INTERNAL  # never ABORTED: a client would retry it forever
    assert any(r.getMessage() == "rpc failed unexpectedly" for r in caplog.records)
