"""RefreshRefund of a refund failed as `outcome_unknown`, through the real server, Postgres and
the payment stand-in: once the payment service can say, the record is what it says (SPEC §10)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import grpc
import httpx
from moim.ticketing.v1 import refund_pb2, registration_event_pb2, reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.conftest import PaymentService, service_config, serving
from tests.integration.flows import sql
from tests.integration.test_refunds import (
    back_off_over,
    configure,
    error_of,
    feed_event,
    paid_seat,
    refund_posts,
    refund_request,
    refunds_settle_later_through,
    reservation,
)
from ticketing_service.bootstrap import Service
from ticketing_service.entrypoints.dev.payment_state import RefundSettlement
from ticketing_service.service_layer.refund_worker import send_due_refunds

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

PRICE = 10000
SUCCEEDED = refund_pb2.REFUND_STATE_SUCCEEDED
PENDING = refund_pb2.REFUND_STATE_PENDING
FAILED = refund_pb2.REFUND_STATE_FAILED
REFUND_SUCCEEDED = registration_event_pb2.REGISTRATION_EVENT_TYPE_REFUND_SUCCEEDED
REFUND_FAILED = registration_event_pb2.REGISTRATION_EVENT_TYPE_REFUND_FAILED


@asynccontextmanager
async def failed_as_unknown(
    database_url: str, payment_service: PaymentService, settlement: RefundSettlement
) -> AsyncIterator[tuple[Stub, Service, reservation_pb2.Reservation, refund_pb2.Refund]]:
    """A paid seat's full refund, made by the payment service (settled as `settlement`) on its
    first send, whose every answer was lost while every read of it answered 503: failed as
    unknown at its last (second) attempt. The outage is then over."""
    config = service_config(database_url, payment_service.url, TICKETING_REFUND_MAX_ATTEMPTS="2")
    state = payment_service.state
    async with serving(config) as (stub, service):
        await configure(stub, price=PRICE)
        seat = await paid_seat(stub, payment_service, "payer")
        state.refund_settlement = settlement
        state.faults["create_refund"] = "late"  # made at once, answered after the timeout
        state.faults["get_refund"] = "error_503"
        await stub.RefundReservation(refund_request(seat, 0, "first"))
        await send_due_refunds(service.deps)
        back_off_over(database_url)
        await send_due_refunds(service.deps)
        [failed] = (await reservation(stub, seat.reservation_id)).refunds
        assert (failed.state, failed.failure_code) == (FAILED, "outcome_unknown")
        del state.faults["get_refund"]
        try:
            yield stub, service, seat, failed
        finally:
            state.release.set()  # the late answers the client gave up on


async def refreshed(stub: Stub, refund: refund_pb2.Refund) -> refund_pb2.Refund:
    answer = await stub.RefreshRefund(pb.RefreshRefundRequest(refund_id=refund.refund_id))
    return answer.refund


async def test_a_refund_failed_as_unknown_that_was_made_is_corrected_and_not_refunded_again(
    database_url: str, payment_service: PaymentService
) -> None:
    async with failed_as_unknown(database_url, payment_service, "succeed") as (
        stub,
        _,
        seat,
        failed,
    ):
        await feed_event(stub, REFUND_FAILED)
        corrected = await refreshed(stub, failed)
        after = await reservation(stub, seat.reservation_id)
        again = await error_of(stub.RefundReservation(refund_request(seat, 0, "again")))
        assert corrected.state == SUCCEEDED  # before waiting for its event on the feed
        announced = await feed_event(stub, REFUND_SUCCEEDED)

    assert (corrected.refund_id, corrected.state, corrected.failure_code) == (
        failed.refund_id,
        SUCCEEDED,
        "",
    )
    assert after.refunded_amount == PRICE
    assert [(r.state, r.amount) for r in after.refunds] == [(SUCCEEDED, PRICE)]
    assert announced.refund.refund_id == failed.refund_id
    assert announced.reservation.refunded_amount == PRICE
    assert again == (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_PAID")
    assert payment_service.state.created_per_key[f"refund:{failed.refund_id}"] == 1


async def test_a_refund_failed_as_unknown_that_the_payment_service_failed_keeps_its_code(
    database_url: str, payment_service: PaymentService
) -> None:
    async with failed_as_unknown(database_url, payment_service, "fail") as (stub, _, seat, failed):
        corrected = await refreshed(stub, failed)
        asked_again = await refreshed(stub, corrected)
        after = await reservation(stub, seat.reservation_id)
    events = sql(database_url, "SELECT type FROM registration_events WHERE type LIKE 'refund_%'")

    assert (corrected.state, corrected.failure_code) == (FAILED, "refund_declined")
    assert asked_again == corrected
    assert after.refunded_amount == 0
    assert events == [("refund_failed",)]  # one refund failed once: announced once


async def test_a_refund_failed_as_unknown_still_being_made_is_followed_until_it_settles(
    database_url: str, payment_service: PaymentService
) -> None:
    state = payment_service.state
    async with failed_as_unknown(database_url, payment_service, "pending") as running:
        stub, service, seat, failed = running
        followed = await refreshed(stub, failed)
        again = await error_of(stub.RefundReservation(refund_request(seat, 0, "again")))
        state.settle_refund(failed.refund_id)
        back_off_over(database_url)
        await send_due_refunds(service.deps)
        after = await reservation(stub, seat.reservation_id)

    assert (followed.state, followed.failure_code) == (PENDING, "")
    assert again == (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_PAID")
    assert [r.state for r in after.refunds] == [SUCCEEDED]
    assert after.refunded_amount == PRICE
    assert refund_posts(payment_service) == 2  # the two sends that lost their answers


async def test_a_refund_failed_as_unknown_stays_so_while_the_payment_service_is_still_down(
    database_url: str, payment_service: PaymentService
) -> None:
    state = payment_service.state
    async with failed_as_unknown(database_url, payment_service, "succeed") as (stub, _, _, failed):
        state.faults["get_refund"] = "error_503"
        during = await refreshed(stub, failed)

    assert during == failed


async def test_a_refund_callback_after_a_refund_failed_as_unknown_corrects_it(
    stub: Stub,
    service: Service,
    shim: httpx.AsyncClient,
    payment_service: PaymentService,
    database_url: str,
) -> None:
    await configure(stub, price=PRICE)
    seat = await paid_seat(stub, payment_service, "payer")
    state = payment_service.state
    refunds_settle_later_through(shim, payment_service, seat)
    state.faults["create_refund"] = "late"
    state.faults["get_refund"] = "error_503"
    made = await stub.RefundReservation(refund_request(seat, 0, "first"))
    sql(database_url, "UPDATE refunds SET attempts = 9")  # the next send is the last (of 10)
    await send_due_refunds(service.deps)
    failed = await reservation(stub, seat.reservation_id)
    del state.faults["get_refund"]

    state.settle_refund(made.refund.refund_id)  # the payment service calls back; nobody polls
    await state.drain_callbacks()
    after = await reservation(stub, seat.reservation_id)
    state.release.set()

    assert [(r.state, r.failure_code) for r in failed.refunds] == [(FAILED, "outcome_unknown")]
    [sent] = state.sent_callbacks
    assert (sent.payload["type"], sent.status_code) == ("ticket_payment.refunded", 200)
    assert [(r.state, r.failure_code) for r in after.refunds] == [(SUCCEEDED, "")]
    assert after.refunded_amount == PRICE
