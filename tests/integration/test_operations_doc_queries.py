"""The SQL docs/operations.md gives operators runs on the migrated schema and finds what it says."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from moim.ticketing.v1.reservation_pb2 import Reservation

from tests.integration.conftest import PaymentService
from tests.integration.flows import configure_event, end_hold, hold, paid_tier, payment_for, sql
from tests.integration.test_refunds import refund_request
from ticketing_service.bootstrap import Service
from ticketing_service.service_layer.refund_worker import send_due_refunds

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


def documented_query(name: str) -> str:
    match = re.search(rf"<!-- query: {name} -->\s*```sql\n(.*?)```", DOC, re.DOTALL)
    assert match, f"docs/operations.md has no query marked {name}"
    return match.group(1).strip().rstrip(";")


async def test_the_paid_unfulfilled_query_lists_each_refund_due_with_its_payment(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    late = await hold(stub, "late")
    end_hold(database_url, late.reservation_id)
    on_time = await hold(stub, "on-time")
    await stub.ConfirmPayment(payment_for(on_time))
    await stub.ConfirmPayment(payment_for(late))

    rows = sql(database_url, documented_query("paid_unfulfilled"))

    assert [(str(row[0]), row[3], row[8], row[12], row[13]) for row in rows] == [
        (late.reservation_id, "late", f"pay-{late.reservation_id}", 0, late.amount)
    ]


async def test_the_payment_mismatch_query_lists_each_mismatched_payment_once(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    wrong = payment_for(held, amount=held.amount + 5)
    for _ in range(2):  # a retried callback is one mismatch
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ConfirmPayment(wrong)

    rows = sql(database_url, documented_query("payment_mismatches"))

    assert [(str(row[0]), row[1], row[5], row[7], row[9]) for row in rows] == [
        (held.reservation_id, "payer", held.amount + 5, held.amount, ["amount"])
    ]


async def paid_reservation(
    stub: Stub, payment_service: PaymentService, user_id: str = "payer"
) -> Reservation:
    """A confirmed reservation whose payment the payment service holds, so it can refund it."""
    await configure_event(stub)
    held = await hold(stub, user_id)
    request = payment_for(held)
    payment_service.state.mark_paid(held.checkout_id, payment_id=request.payment_id)
    await stub.ConfirmPayment(request)
    return held


async def goodwill_refund(stub: Stub, held: Reservation, request_id: str, amount: int = 0) -> None:
    """An organizer's goodwill refund of `amount` (0: all that is left)."""
    await stub.RefundReservation(refund_request(held, amount, request_id))


async def test_the_failed_refunds_query_lists_each_refund_an_operator_must_act_on(
    stub: Stub, service: Service, database_url: str, payment_service: PaymentService
) -> None:
    held = await paid_reservation(stub, payment_service)
    payment_service.state.refund_settlement = "fail"
    await goodwill_refund(stub, held, "goodwill")
    await send_due_refunds(service.deps)

    rows = sql(database_url, documented_query("failed_refunds"))

    assert [(str(row[1]), row[3], row[6], row[9]) for row in rows] == [
        (held.reservation_id, "payer", held.amount, "refund_declined")
    ]
    # Refunded again, as the runbook says: the row is acted on, and the list is empty. It
    # listed the failed refund for ever.
    payment_service.state.refund_settlement = "succeed"
    await goodwill_refund(stub, held, "goodwill, again")
    assert sql(database_url, documented_query("failed_refunds")) == []


async def test_a_payment_with_failures_made_up_only_in_part_stays_on_the_failed_list(
    stub: Stub, service: Service, database_url: str, payment_service: PaymentService
) -> None:
    # Two refunds of one payment failed (300 and 200) and only the 300 was asked again: each
    # failure had been weighed against every later refund, and the 200 dropped out of sight.
    held = await paid_reservation(stub, payment_service)
    payment_service.state.refund_settlement = "fail"
    await goodwill_refund(stub, held, "first", 300)
    await goodwill_refund(stub, held, "second", 200)
    await send_due_refunds(service.deps)
    payment_service.state.refund_settlement = "succeed"
    await goodwill_refund(stub, held, "first, again", 300)

    rows = sql(database_url, documented_query("failed_refunds"))

    assert sorted((row[6], row[12], row[13]) for row in rows) == [(200, 500, 300), (300, 500, 300)]


async def test_the_recount_query_finds_a_refunded_amount_that_counts_another_payment(
    stub: Stub, service: Service, database_url: str, payment_service: PaymentService
) -> None:
    counted_right = await paid_reservation(stub, payment_service)
    await goodwill_refund(stub, counted_right, "goodwill", amount=1000)
    await send_due_refunds(service.deps)
    # As an older replica counted a second payment's refund during a rollout past 0008: more
    # than the settling payment's refunds, less than the price.
    counted_twice = await paid_reservation(stub, payment_service, "second")
    sql(
        database_url,
        "UPDATE reservations SET refunded_amount = 500 WHERE reservation_id = $1",
        counted_twice.reservation_id,
    )

    rows = sql(database_url, documented_query("refunded_amount_recount"))

    assert [(str(row[0]), row[1], row[2]) for row in rows] == [
        (counted_twice.reservation_id, 500, 0)
    ]
