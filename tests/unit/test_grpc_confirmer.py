"""The gRPC confirmer's mappings: callback to request, response to result, status to answer;
and the request id each of its calls carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import grpc
import pytest
from moim.ticketing.client import TicketingError
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from ticketing_service.entrypoints.dev.payment_callbacks import CALLBACK_TIMEOUT_SECONDS
from ticketing_service.entrypoints.observability.request_context import begin_request, end_request
from ticketing_service.entrypoints.webhook.forwarding import (
    ConfirmRejected,
    PaidCallback,
    RejectionKind,
)
from ticketing_service.entrypoints.webhook.grpc_confirmer import (
    RequestIdPropagation,
    confirm_payment_request,
    confirm_result,
    rejection,
)
from ticketing_service.entrypoints.webhook.serve import CONFIRM_DEADLINE_SECONDS

SEOUL = timezone(timedelta(hours=9))
CALLBACK = PaidCallback(
    reservation_id="8a3c1a6e-0b5e-4c1c-9d1e-3f2b6a7c9d10",
    checkout_id="chk_1",
    payment_id="pay_1",
    tx_id="",
    provider="portone",
    amount=55000,
    currency_code="KRW",
    paid_time=datetime(2024, 5, 1, 12, 30, 0, 250000, tzinfo=SEOUL),
    delivery_id="delivery-1",
    delivery_scheme="standard_webhooks",
    raw_event=b'{"type": "ticket_payment.paid"}',
)


def test_a_callback_becomes_a_confirm_payment_request_field_for_field() -> None:
    request = confirm_payment_request(CALLBACK)
    assert request == pb.ConfirmPaymentRequest(
        reservation_id=CALLBACK.reservation_id,
        checkout_id="chk_1",
        payment_id="pay_1",
        tx_id="",
        provider="portone",
        amount=55000,
        currency_code="KRW",
        paid_time=request.paid_time,
        delivery_id="delivery-1",
        delivery_scheme=pb.DELIVERY_SCHEME_STANDARD_WEBHOOKS,
        raw_event=b'{"type": "ticket_payment.paid"}',
    )
    assert request.HasField("paid_time")


def test_the_paid_time_keeps_its_instant_across_time_zones() -> None:
    paid_time = confirm_payment_request(CALLBACK).paid_time
    assert paid_time.ToDatetime(UTC) == datetime(2024, 5, 1, 3, 30, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize("outcome", ["CONFIRMED", "ALREADY_CONFIRMED", "PAID_UNFULFILLED"])
def test_the_outcome_loses_its_enum_prefix(outcome: str) -> None:
    response = pb.ConfirmPaymentResponse(
        outcome=pb.ConfirmPaymentOutcome.Value(f"CONFIRM_PAYMENT_OUTCOME_{outcome}"),
        reservation=reservation_pb2.Reservation(reservation_id="r-1", registration_id="g-1"),
    )
    result = confirm_result(response)
    assert (result.outcome, result.reservation_id, result.registration_id) == (
        outcome,
        "r-1",
        "g-1",
    )


def test_an_unspecified_outcome_is_retried_rather_than_reported() -> None:
    with pytest.raises(ConfirmRejected) as caught:
        confirm_result(pb.ConfirmPaymentResponse())
    assert caught.value.kind == "unavailable"


# Every code the service can answer, and what the payment sender is told.
EXPECTED_KINDS: dict[grpc.StatusCode, RejectionKind] = {
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "unavailable",
    grpc.StatusCode.ABORTED: "unavailable",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "unavailable",
    grpc.StatusCode.UNAUTHENTICATED: "unavailable",  # our token is wrong: fix it, then redeliver
    grpc.StatusCode.PERMISSION_DENIED: "unavailable",
    grpc.StatusCode.INTERNAL: "unavailable",
    grpc.StatusCode.UNKNOWN: "unavailable",
    grpc.StatusCode.UNIMPLEMENTED: "unavailable",
    grpc.StatusCode.CANCELLED: "unavailable",
    grpc.StatusCode.ALREADY_EXISTS: "unavailable",
    grpc.StatusCode.OUT_OF_RANGE: "unavailable",
    grpc.StatusCode.DATA_LOSS: "unavailable",
}


@pytest.mark.parametrize(("code", "kind"), EXPECTED_KINDS.items())
def test_each_failure_code_becomes_the_answer_the_sender_acts_on(
    code: grpc.StatusCode, kind: RejectionKind
) -> None:
    assert rejection(TicketingError(code, "refused", reason="SOME_REASON")).kind == kind


def test_the_table_covers_every_failure_code() -> None:
    assert set(EXPECTED_KINDS) == set(grpc.StatusCode) - {grpc.StatusCode.OK}


def test_the_rejection_keeps_the_service_reason() -> None:
    error = TicketingError(grpc.StatusCode.FAILED_PRECONDITION, "no", reason="PAYMENT_MISMATCH")
    assert rejection(error).reason == "PAYMENT_MISMATCH"


def test_a_rejection_without_a_reason_names_the_code() -> None:
    error = TicketingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert (rejection(error).kind, rejection(error).reason) == ("unavailable", "DEADLINE_EXCEEDED")


# The request id each call carries

Call = grpc.aio.UnaryUnaryCall[bytes, bytes]
MADE = cast(Call, object())  # stands for the call the channel makes
CALL_DETAILS = grpc.aio.ClientCallDetails(
    "/moim.ticketing.v1.TicketingService/ConfirmPayment",
    10.0,
    grpc.aio.Metadata(("authorization", "Bearer token")),
    None,
    None,
)


async def called_on_with(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """The details RequestIdPropagation lets a call made with `details` go on with."""
    went_on: list[grpc.aio.ClientCallDetails] = []

    async def continuation(sent: grpc.aio.ClientCallDetails, request: bytes) -> Call:
        went_on.append(sent)
        return MADE

    made = await RequestIdPropagation().intercept_unary_unary(continuation, details, b"")
    assert made is MADE  # the call goes on as the channel made it
    [sent] = went_on
    return sent


async def test_a_call_carries_the_delivery_id_being_served_beside_the_token() -> None:
    token = begin_request("evt-1", route="/api/ticket-payment-callbacks")
    try:
        sent = await called_on_with(CALL_DETAILS)
    finally:
        end_request(token)
    assert list(sent.metadata or ()) == [
        ("authorization", "Bearer token"),
        ("x-request-id", "evt-1"),
    ]
    assert (sent.method, sent.timeout) == (CALL_DETAILS.method, 10.0)


async def test_a_call_made_outside_a_request_goes_on_unchanged() -> None:
    assert await called_on_with(CALL_DETAILS) is CALL_DETAILS


def test_the_shim_answers_a_callback_before_the_sender_stops_waiting() -> None:
    # The deadline covers the retries too: at the sender's own 10 s, a lock conflict and its
    # retry were answered after the sandbox's sender had given up (a tester's run: 3 of 6).
    assert CONFIRM_DEADLINE_SECONDS < CALLBACK_TIMEOUT_SECONDS
