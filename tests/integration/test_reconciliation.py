"""Reconciliation on real Postgres, the real server and the payment service fake over HTTP:
a lost callback never loses a paid seat (SPEC §9)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
import pytest
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.conftest import PaymentService
from tests.integration.flows import (
    configure_event,
    end_hold,
    hold,
    paid_tier,
    sql,
    start,
    status_of,
)
from tests.rich_errors import rich_error
from ticketing_service.domain.reconciliation import CheckoutAnswer, Step
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.reconciliation import reconcile_due

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub


async def reconcile(stub: Stub, reservation_id: str) -> pb.ReconcileReservationResponse:
    request = pb.ReconcileReservationRequest(reservation_id=reservation_id)
    return await stub.ReconcileReservation(request)


def follow_up_now(database_url: str, reservation_id: str) -> None:
    """Bring a follow-up's time to now, as if its back-off had passed."""
    sql(
        database_url,
        "UPDATE reservations SET next_reconcile_time = now() WHERE reservation_id = $1",
        reservation_id,
    )


async def sold_out(stub: Stub, user_id: str) -> bool:
    try:
        await start(stub, user_id)
    except grpc.aio.AioRpcError as error:
        return rich_error(error).reason == "SOLD_OUT"
    return False


async def test_a_paid_checkout_whose_callback_was_lost_is_confirmed_when_asked(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    payment_service.state.mark_paid(held.checkout_id, payment_id="pay-lost-callback")

    found = await reconcile(stub, held.reservation_id)

    assert found.checkout_status == pb.CHECKOUT_STATUS_PAID
    assert found.outcome == pb.CONFIRM_PAYMENT_OUTCOME_CONFIRMED
    assert found.reservation.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
    assert found.reservation.payment_id == "pay-lost-callback"
    assert found.reservation.registration_id


async def test_a_hold_whose_payment_is_under_way_outlives_its_end_and_keeps_its_seat(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    held = await hold(stub, "payer")
    payment_service.state.mark_payment_pending(held.checkout_id)
    end_hold(database_url, held.reservation_id)

    [kept] = await reconcile_due(deps)

    assert (kept.answer, kept.step) == (CheckoutAnswer.PAYMENT_PENDING, Step.KEEP_HOLD)
    assert status_of(database_url, held.reservation_id) == "pending_payment"
    assert await sold_out(stub, "another-buyer")
    payment_service.state.mark_paid(held.checkout_id)
    found = await reconcile(stub, held.reservation_id)
    assert found.outcome == pb.CONFIRM_PAYMENT_OUTCOME_CONFIRMED


async def test_an_unpaid_checkout_at_its_hold_end_expires_and_frees_its_seat(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    held = await hold(stub, "payer")
    end_hold(database_url, held.reservation_id)

    [ended] = await reconcile_due(deps)

    assert (ended.answer, ended.step) == (CheckoutAnswer.REQUIRES_PAYMENT, Step.EXPIRE)
    assert status_of(database_url, held.reservation_id) == "expired"
    assert (
        await hold(stub, "next-buyer")
    ).status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    assert sql(
        database_url,
        "SELECT next_reconcile_time FROM reservations WHERE reservation_id = $1",
        held.reservation_id,
    ) == [(None,)]


async def test_a_payment_found_after_an_outage_is_confirmed_late(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    end_hold(database_url, held.reservation_id)
    payment_service.state.faults["get_checkout"] = "error_503"

    [ended] = await reconcile_due(deps)

    assert (ended.answer, ended.step) == (CheckoutAnswer.UNREACHABLE, Step.EXPIRE_AND_FOLLOW_UP)
    assert status_of(database_url, held.reservation_id) == "expired"
    payment_service.state.faults.clear()
    payment_service.state.mark_paid(held.checkout_id)
    assert await reconcile_due(deps) == []  # backing off
    follow_up_now(database_url, held.reservation_id)
    [found] = await reconcile_due(deps)
    assert (found.step, found.reservation.status.value) == (Step.CONFIRM, "confirmed")
    assert sql(database_url, "SELECT count(*) FROM registrations") == [(1,)]


async def test_a_hanging_payment_service_cannot_keep_a_hold_from_ending(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    end_hold(database_url, held.reservation_id)
    payment_service.state.faults["get_checkout"] = "hang"

    # The client's timeout (1 s here) bounds the question; this bound only keeps a broken run
    # from hanging the suite.
    async with asyncio.timeout(30):
        [ended] = await reconcile_due(deps)

    assert (ended.answer, ended.step) == (CheckoutAnswer.UNREACHABLE, Step.EXPIRE_AND_FOLLOW_UP)
    assert status_of(database_url, held.reservation_id) == "expired"


async def test_a_cancelled_hold_is_followed_up_and_a_payment_made_before_is_confirmed(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    payment_service.state.mark_paid(held.checkout_id)  # paid in another tab, then cancelled
    await stub.CancelReservation(
        pb.CancelReservationRequest(reservation_id=held.reservation_id, user_id="payer")
    )

    [found] = await reconcile_due(deps)

    assert (found.step, found.reservation.status.value) == (Step.CONFIRM, "confirmed")


async def test_reconciling_a_reservation_without_a_checkout_asks_nothing(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    payment_service.state.faults["create_checkout"] = "error_503"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start(stub, "payer")
    assert rich_error(caught.value).reason == "PAYMENT_SERVICE_UNAVAILABLE"
    reservation_id = payment_service.state.requests[0].body["reservationId"]  # type: ignore[index]  # a JSON object

    found = await reconcile(stub, reservation_id)

    assert found.checkout_status == pb.CHECKOUT_STATUS_UNSPECIFIED
    assert found.reservation.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
