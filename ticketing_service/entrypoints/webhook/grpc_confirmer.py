"""The shim's PaymentConfirmer and RefundRefresher over gRPC: a verified payment callback becomes
one ConfirmPayment call, a refund callback one RefreshRefund call. Each call carries the
callback's request id, so the server's lines for it carry the same id as the shim's."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moim.ticketing.client import TicketingClient, TicketingError
from moim.ticketing.v1 import refund_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from ticketing_service.entrypoints.observability.interceptor import REQUEST_ID_KEY
from ticketing_service.entrypoints.observability.request_context import current_request
from ticketing_service.entrypoints.webhook.forwarding import (
    ConfirmRejected,
    ConfirmResult,
    PaidCallback,
    RefundCallback,
    RejectionKind,
)
from ticketing_service.entrypoints.webhook.signatures import Scheme

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TicketingService"].full_name
HEALTH_TIMEOUT_SECONDS = 2.0
_OUTCOME_PREFIX = "CONFIRM_PAYMENT_OUTCOME_"
_UNSPECIFIED_OUTCOME = f"{_OUTCOME_PREFIX}UNSPECIFIED"

# What the sender should do about each refusal. Anything not listed is "unavailable": a 503 the
# sender retries, which is safe because a repeated delivery is answered from what is stored.
REJECTION_KINDS: dict[grpc.StatusCode, RejectionKind] = {
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
}

_SCHEMES: dict[Scheme, pb.DeliveryScheme.ValueType] = {
    "moim_hmac": pb.DELIVERY_SCHEME_MOIM_HMAC,
    "standard_webhooks": pb.DELIVERY_SCHEME_STANDARD_WEBHOOKS,
}

logger = logging.getLogger(__name__)

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


def confirm_payment_request(payment: PaidCallback) -> pb.ConfirmPaymentRequest:
    """The ConfirmPayment request for a verified callback; the raw body goes along for audit."""
    paid_time = Timestamp()
    paid_time.FromDatetime(payment.paid_time)  # aware, so converted to UTC exactly
    return pb.ConfirmPaymentRequest(
        reservation_id=payment.reservation_id,
        checkout_id=payment.checkout_id,
        payment_id=payment.payment_id,
        tx_id=payment.tx_id,
        provider=payment.provider,
        amount=payment.amount,
        currency_code=payment.currency_code,
        paid_time=paid_time,
        delivery_id=payment.delivery_id,
        delivery_scheme=_SCHEMES[payment.delivery_scheme],
        raw_event=payment.raw_event,
    )


def confirm_result(response: pb.ConfirmPaymentResponse) -> ConfirmResult:
    """The outcome name without its enum prefix, and the reservation it concerns."""
    outcome = pb.ConfirmPaymentOutcome.Name(response.outcome)
    if outcome == _UNSPECIFIED_OUTCOME:
        # The contract says this never happens; retrying is safe and answers from what is stored.
        raise ConfirmRejected("unavailable", "UNSPECIFIED_OUTCOME")
    return ConfirmResult(
        outcome=outcome.removeprefix(_OUTCOME_PREFIX),
        reservation_id=response.reservation.reservation_id,
        registration_id=response.reservation.registration_id,
    )


def rejection(error: TicketingError) -> ConfirmRejected:
    """The shim's answer to a failed ConfirmPayment, keeping the service's reason."""
    kind = REJECTION_KINDS.get(error.code, "unavailable")
    if error.code == grpc.StatusCode.UNAUTHENTICATED:
        logger.error(
            "The ticketing service refused the shim's token; check TICKETING_GRPC_TOKEN matches."
        )
    fields = tuple(violation.field for violation in error.field_violations)
    return ConfirmRejected(kind, error.reason or error.code.name, fields)


class RequestIdPropagation(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends the id of the request being served (the callback's delivery id when it has one) as
    `x-request-id` with every call on the channel, health checks too. The server takes it as its
    own, so the shim's line for a callback and the server's lines for its call share one id.

    On the channel, not in each call: a TicketingClient's metadata is fixed when it is made.
    """

    async def intercept_unary_unary(
        self,
        continuation: Callable[
            [grpc.aio.ClientCallDetails, _Request],
            Awaitable[grpc.aio.UnaryUnaryCall[_Request, _Response]],
        ],
        client_call_details: grpc.aio.ClientCallDetails,
        request: _Request,
    ) -> grpc.aio.UnaryUnaryCall[_Request, _Response]:
        """Call on with the current request id added to the call's metadata, if there is one."""
        # Valid metadata: the shim's middleware admits only printable ASCII ids (new_request_id).
        request_id = current_request().request_id
        details = client_call_details
        if request_id:
            metadata = grpc.aio.Metadata(*(details.metadata or ()), (REQUEST_ID_KEY, request_id))
            details = grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
            )
        return await continuation(details, request)


class GrpcPaymentConfirmer:
    """Forwards verified payments to TicketingService.ConfirmPayment over shared clients.

    Each callback goes to the next client in turn, so the callbacks spread over all their
    connections (and the server workers those connections landed on).
    """

    def __init__(
        self, clients: Sequence[TicketingClient], health_timeout: float = HEALTH_TIMEOUT_SECONDS
    ) -> None:
        if not clients:
            raise ValueError("the confirmer needs at least one client")
        self._clients = itertools.cycle(clients)
        self._health = health_pb2_grpc.HealthStub(clients[0].channel)
        self._health_timeout = health_timeout

    async def confirm(self, payment: PaidCallback) -> ConfirmResult:
        """Confirm `payment`, or raise ConfirmRejected saying why not."""
        client = next(self._clients)
        try:
            response = await client.confirm_payment(confirm_payment_request(payment))
        except TicketingError as error:
            raise rejection(error) from error
        try:
            return confirm_result(response)
        except ValueError:  # an outcome newer than these stubs
            raise ConfirmRejected("unavailable", "UNKNOWN_OUTCOME") from None

    async def refresh_refund(self, refund: RefundCallback) -> str:
        """Have the service look the refund up now; its state's name without the enum prefix."""
        client = next(self._clients)
        try:
            response = await client.refresh_refund(
                pb.RefreshRefundRequest(refund_id=refund.refund_id)
            )
        except TicketingError as error:
            raise rejection(error) from error
        try:
            state = refund_pb2.RefundState.Name(response.refund.state)
        except ValueError:  # a state newer than these stubs: the look-up happened all the same
            return "UNKNOWN"
        return state.removeprefix("REFUND_STATE_")

    async def health(self) -> bool:
        """Whether the backend's TicketingService reports SERVING; any failure means no."""
        request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        try:
            answer = await self._health.Check(request, timeout=self._health_timeout)
        except grpc.aio.AioRpcError as error:
            logger.warning("The gRPC backend health check failed: %s", error.code().name)
            return False
        except grpc.aio.UsageError:  # the channel is closed: the shim is shutting down
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
