"""ConfirmPayment: match checks, idempotency, late payments and the atomic payment upsert."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.flows import (
    configure_event,
    end_hold,
    hold,
    paid_tier,
    payment_for,
    sql,
    status_of,
)
from tests.rich_errors import rich_error

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

CONFIRMED = pb.CONFIRM_PAYMENT_OUTCOME_CONFIRMED
ALREADY = pb.CONFIRM_PAYMENT_OUTCOME_ALREADY_CONFIRMED
UNFULFILLED = pb.CONFIRM_PAYMENT_OUTCOME_PAID_UNFULFILLED


async def rejected(stub: Stub, request: pb.ConfirmPaymentRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ConfirmPayment(request)
    error = rich_error(caught.value)
    return error.code, error.reason


def snapshot(database_url: str) -> list[tuple[object, ...]]:
    """Every row the confirmation could touch, to prove a call wrote nothing."""
    return sql(
        database_url,
        "SELECT (SELECT json_agg(r ORDER BY reservation_id) FROM reservations r),"
        " (SELECT json_agg(g ORDER BY registration_id) FROM registrations g),"
        " (SELECT json_agg(p ORDER BY payment_row_id) FROM payments p),"
        " (SELECT count(*) FROM webhook_deliveries)",
    )


async def test_a_payment_inside_the_hold_confirms_and_registers_the_user(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    paid_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    request = payment_for(held, paid_time=Timestamp(seconds=int(paid_at.timestamp())))
    response = await stub.ConfirmPayment(request)

    assert response.outcome == CONFIRMED
    confirmed = response.reservation
    assert confirmed.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
    assert confirmed.registration_id
    assert confirmed.paid_time.ToDatetime(tzinfo=UTC) == paid_at
    [(status, provider_payment_id, tx_id, raw)] = sql(
        database_url,
        "SELECT status, provider_payment_id, tx_id, raw_event FROM payments"
        " WHERE reservation_id = $1",
        held.reservation_id,
    )
    assert (status, provider_payment_id, tx_id) == ("paid", request.payment_id, "tx-1")
    assert bytes(raw) == request.raw_event
    read = await stub.GetReservation(pb.GetReservationRequest(reservation_id=held.reservation_id))
    assert read.reservation == confirmed


async def test_the_registration_keeps_the_answers_without_blanks(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub)
    answers = [
        reservation_pb2.Answer(question_id="diet", answer="Vegan"),
        reservation_pb2.Answer(question_id="note", answer=" \t"),
    ]
    response = await stub.StartPaidRegistration(
        pb.StartPaidRegistrationRequest(
            event_id="launch-party", tier_id="vip", user_id="u", answers=answers
        )
    )
    await stub.ConfirmPayment(payment_for(response.reservation))
    assert sql(database_url, "SELECT answers FROM registrations") == [
        ([{"question_id": "diet", "answer": "Vegan"}],)
    ]


async def test_the_same_payment_again_is_already_confirmed_and_writes_nothing(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    first = await stub.ConfirmPayment(payment_for(held))
    before = snapshot(database_url)
    again = await stub.ConfirmPayment(payment_for(held))
    assert (again.outcome, again.reservation) == (ALREADY, first.reservation)
    assert snapshot(database_url) == before


async def test_another_payment_for_a_confirmed_reservation_is_a_mismatch(stub: Stub) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    await stub.ConfirmPayment(payment_for(held))
    assert await rejected(stub, payment_for(held, payment_id="pay-other")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_MISMATCH",
    )


@pytest.mark.parametrize(
    "override",
    [
        {"checkout_id": "chk_someone_else"},
        {"provider": "toss"},
        {"amount": 29999},
        {"currency_code": "USD"},
    ],
)
async def test_a_payment_that_differs_from_the_reservation_confirms_nothing_and_is_kept(
    stub: Stub, database_url: str, override: dict[str, object]
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    assert await rejected(stub, payment_for(held, **override)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_MISMATCH",
    )
    assert status_of(database_url, held.reservation_id) == "pending_payment"
    assert sql(database_url, "SELECT count(*) FROM registrations") == [(0,)]
    assert sql(
        database_url,
        "SELECT count(*) FROM payment_mismatches WHERE reservation_id = $1",
        held.reservation_id,
    ) == [(1,)]


async def test_a_payment_for_an_unknown_reservation_is_not_found(stub: Stub) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    unknown = payment_for(held, reservation_id="00000000-0000-4000-8000-000000000001")
    assert await rejected(stub, unknown) == (grpc.StatusCode.NOT_FOUND, "RESERVATION_NOT_FOUND")


async def test_a_late_payment_gets_a_seat_when_one_is_free(stub: Stub, database_url: str) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    held = await hold(stub, "user-1")
    end_hold(database_url, held.reservation_id)
    response = await stub.ConfirmPayment(payment_for(held))
    assert response.outcome == CONFIRMED
    assert response.reservation.registration_id


@pytest.mark.parametrize("status", ["expired", "cancelled"])
async def test_a_late_payment_for_a_released_hold_gets_a_free_seat(
    stub: Stub, database_url: str, status: str
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    held = await hold(stub, "user-1")
    sql(database_url, "UPDATE reservations SET status = $1", status)
    assert (await stub.ConfirmPayment(payment_for(held))).outcome == CONFIRMED


async def test_a_late_payment_without_a_free_seat_is_paid_unfulfilled_and_recorded(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    late = await hold(stub, "late")
    end_hold(database_url, late.reservation_id)
    await stub.ConfirmPayment(payment_for(await hold(stub, "on-time")))

    response = await stub.ConfirmPayment(payment_for(late))
    assert response.outcome == UNFULFILLED
    assert response.reservation.status == reservation_pb2.RESERVATION_STATUS_PAID_UNFULFILLED
    assert response.reservation.registration_id == ""
    assert sql(
        database_url,
        "SELECT status FROM payments WHERE reservation_id = $1",
        late.reservation_id,
    ) == [("paid",)]
    repeat = await stub.ConfirmPayment(payment_for(late))
    assert (repeat.outcome, repeat.reservation) == (UNFULFILLED, response.reservation)


async def test_a_payment_learned_after_the_hold_ends_keeps_its_free_seat_in_a_removed_tier(
    stub: Stub, database_url: str
) -> None:
    # The organizer removed the tier while the hold was live (it is kept while in use); the
    # buyer paid in time but the callback was lost and reconciliation found it after the hold's
    # end. Refunded, that buyer would lose the seat an on-time callback would have given them.
    await configure_event(stub, paid_tier("vip", capacity=1), paid_tier("floor"))
    held = await hold(stub, "user-1")
    await configure_event(stub, paid_tier("floor"))
    end_hold(database_url, held.reservation_id)

    assert (await stub.ConfirmPayment(payment_for(held))).outcome == CONFIRMED


async def test_a_late_payment_of_a_user_registered_meanwhile_is_paid_unfulfilled(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip"), paid_tier("floor"))
    first = await hold(stub, "user-1", "vip")
    end_hold(database_url, first.reservation_id)
    await stub.ConfirmPayment(payment_for(await hold(stub, "user-1", "floor")))
    assert (await stub.ConfirmPayment(payment_for(first))).outcome == UNFULFILLED
    assert sql(database_url, "SELECT count(*) FROM registrations") == [(1,)]


async def test_a_repeated_delivery_returns_the_first_result_without_work(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    first = await stub.ConfirmPayment(payment_for(held, delivery_id="delivery-1"))
    before = snapshot(database_url)
    again = await stub.ConfirmPayment(payment_for(held, delivery_id="delivery-1"))
    assert (first.outcome, again.outcome) == (CONFIRMED, CONFIRMED)
    assert again.reservation == first.reservation
    assert snapshot(database_url) == before
    other = await stub.ConfirmPayment(payment_for(held, delivery_id="delivery-2"))
    assert other.outcome == ALREADY


def payment_request(**fields: object) -> pb.ConfirmPaymentRequest:
    base: dict[str, object] = {
        "reservation_id": "00000000-0000-4000-8000-000000000001",
        "checkout_id": "chk",
        "payment_id": "pay",
        "provider": "portone",
        "amount": 100,
        "currency_code": "KRW",
    }
    return pb.ConfirmPaymentRequest(**(base | fields))  # type: ignore[arg-type]  # fields of mixed types, checked by protobuf at runtime


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"reservation_id": "r-1"}, ["reservation_id"]),
        ({"checkout_id": ""}, ["checkout_id"]),
        ({"payment_id": ""}, ["payment_id"]),
        ({"provider": ""}, ["provider"]),
        ({"amount": -1}, ["amount"]),
        ({"currency_code": ""}, ["currency_code"]),
        ({"currency_code": "WON"}, ["currency_code"]),
        ({"tx_id": "t" * 129}, ["tx_id"]),
        ({"delivery_id": "d" * 129}, ["delivery_id"]),
        ({"raw_event": b"x" * (64 * 1024 + 1)}, ["raw_event"]),
        ({"paid_time": Timestamp(seconds=-62135596801)}, ["paid_time"]),
    ],
)
async def test_invalid_payments_are_invalid_argument(
    stub: Stub, fields: dict[str, object], bad: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ConfirmPayment(payment_request(**fields))
    error = rich_error(caught.value)
    assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, bad)
