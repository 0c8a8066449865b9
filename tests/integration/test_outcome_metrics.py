"""Outcome counters on the real server and Postgres: each committed change counted once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING

import grpc
import pytest
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.conftest import PaymentService
from tests.integration.flows import (
    configure_event,
    end_hold,
    hold,
    paid_tier,
    payment_for,
    start,
    status_of,
)
from ticketing_service.adapters.db.pool import Database
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork
from ticketing_service.bootstrap import wake_and_observe
from ticketing_service.entrypoints.grpc.server import start_server
from ticketing_service.entrypoints.observability.metered import metered_dependencies
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.reconciliation import reconcile_due

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub


@pytest.fixture
def metrics() -> TicketingMetrics:
    return TicketingMetrics(process_collectors=False)


@pytest.fixture
def metered(
    deps: Dependencies,
    database: Database,
    sequencer_wakeup: asyncio.Event,
    metrics: TicketingMetrics,
) -> Dependencies:
    """The real adapters, counting what they commit, as `serve` wires them."""
    after_commit = wake_and_observe(sequencer_wakeup, metrics.count_committed)
    counted = replace(deps, uow=lambda: SqlUnitOfWork(database, after_commit=after_commit))
    return metered_dependencies(counted, metrics)


@pytest.fixture
async def metered_stub(metered: Dependencies) -> AsyncIterator[Stub]:
    running = await start_server(metered, "127.0.0.1:0")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.TicketingServiceStub(channel)
    await running.stop(0)


def counts(metrics: TicketingMetrics) -> dict[str, float]:
    """Every outcome counter that is not zero, as `type` or `late:result`."""
    value = metrics.registry.get_sample_value
    found = {
        event: value("ticketing_reservation_events_total", {"type": event}) or 0
        for event in (
            "created",
            "confirmed",
            "expired",
            "cancelled",
            "paid_unfulfilled",
            "payment_mismatch",
        )
    }
    found |= {
        f"late:{result}": value("ticketing_late_payments_total", {"result": result}) or 0
        for result in ("seat_found", "paid_unfulfilled")
    }
    return {name: count for name, count in found.items() if count}


async def test_a_hold_is_counted_once_however_often_it_is_requested(
    metered_stub: Stub, metrics: TicketingMetrics
) -> None:
    await configure_event(metered_stub)
    await hold(metered_stub, "user-1")
    await hold(metered_stub, "user-1")  # a double submit answers the same reservation
    assert counts(metrics) == {"created": 1}


async def test_a_payment_inside_the_hold_is_a_confirmation_and_no_late_payment(
    metered_stub: Stub, metrics: TicketingMetrics
) -> None:
    await configure_event(metered_stub)
    held = await hold(metered_stub, "user-1")
    await metered_stub.ConfirmPayment(payment_for(held, delivery_id="d-1"))
    await metered_stub.ConfirmPayment(payment_for(held, delivery_id="d-1"))  # repeated delivery
    await metered_stub.ConfirmPayment(payment_for(held, delivery_id="d-2"))  # already confirmed
    assert counts(metrics) == {"created": 1, "confirmed": 1}


async def test_a_late_payment_with_a_free_seat_is_counted_as_seat_found(
    metered_stub: Stub, metrics: TicketingMetrics, database_url: str
) -> None:
    await configure_event(metered_stub, paid_tier("vip", capacity=1))
    held = await hold(metered_stub, "user-1")
    end_hold(database_url, held.reservation_id)
    await metered_stub.ConfirmPayment(payment_for(held))
    assert counts(metrics) == {"created": 1, "confirmed": 1, "late:seat_found": 1}


async def test_a_late_payment_without_a_seat_is_paid_unfulfilled_once(
    metered_stub: Stub, metrics: TicketingMetrics, database_url: str
) -> None:
    await configure_event(metered_stub, paid_tier("vip", capacity=1))
    late = await hold(metered_stub, "late")
    end_hold(database_url, late.reservation_id)
    await metered_stub.ConfirmPayment(payment_for(await hold(metered_stub, "on-time")))
    first = await metered_stub.ConfirmPayment(payment_for(late))
    again = await metered_stub.ConfirmPayment(payment_for(late))
    assert first.outcome == again.outcome == pb.CONFIRM_PAYMENT_OUTCOME_PAID_UNFULFILLED
    assert counts(metrics) == {
        "created": 2,
        "confirmed": 1,
        "paid_unfulfilled": 1,
        "late:paid_unfulfilled": 1,
    }


async def test_cancelled_and_ended_holds_and_what_reconciliation_heard_are_counted(
    metered_stub: Stub, metered: Dependencies, metrics: TicketingMetrics, database_url: str
) -> None:
    await configure_event(metered_stub)
    cancelled = await hold(metered_stub, "user-1")
    await metered_stub.CancelReservation(
        pb.CancelReservationRequest(reservation_id=cancelled.reservation_id, user_id="user-1")
    )
    overdue = await hold(metered_stub, "user-2")
    end_hold(database_url, overdue.reservation_id)
    # The cancelled hold's checkout is followed up, the ended one asked before it expires.
    assert len(await reconcile_due(metered)) == 2
    assert counts(metrics) == {"created": 2, "cancelled": 1, "expired": 1}
    checks = metrics.registry.get_sample_value(
        "ticketing_reconcile_checks_total", {"result": "unpaid"}
    )
    assert checks == 2


async def test_a_change_that_is_rolled_back_is_not_counted(
    metered_stub: Stub, metrics: TicketingMetrics, database_url: str
) -> None:
    await configure_event(metered_stub, paid_tier("vip", capacity=1))
    stale = await hold(metered_stub, "user-1")
    end_hold(database_url, stale.reservation_id)
    await hold(metered_stub, "user-2")  # takes the only seat
    # user-1 comes back: their overdue hold is released as expired, then the tier is sold out,
    # so the whole transaction rolls back and the hold is still pending in the database.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start(metered_stub, "user-1")
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert status_of(database_url, stale.reservation_id) == "pending_payment"
    assert counts(metrics) == {"created": 2}


async def test_checkout_calls_are_timed_and_a_refusal_cancels_the_hold_it_counted(
    metered_stub: Stub, metrics: TicketingMetrics, payment_service: PaymentService
) -> None:
    await configure_event(metered_stub)
    await hold(metered_stub, "user-1")
    payment_service.state.faults["create_checkout"] = "error_400"
    with pytest.raises(grpc.aio.AioRpcError):
        await start(metered_stub, "user-2")
    value = metrics.registry.get_sample_value
    call = {"call": "create_checkout"}
    assert value("ticketing_payment_service_duration_seconds_count", call | {"result": "ok"}) == 1
    assert value("ticketing_payment_service_failures_total", call | {"kind": "refused"}) == 1
    assert counts(metrics) == {"created": 2, "cancelled": 1}


async def test_a_mismatched_payment_is_counted_once_however_often_its_callback_is_retried(
    metered_stub: Stub, metrics: TicketingMetrics
) -> None:
    await configure_event(metered_stub)
    held = await hold(metered_stub, "user-1")
    wrong = payment_for(held, amount=held.amount + 1, delivery_id="d-1")
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await metered_stub.ConfirmPayment(wrong)
    assert counts(metrics) == {"created": 1, "payment_mismatch": 1}
