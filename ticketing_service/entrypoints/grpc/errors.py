"""Maps the domain's errors to gRPC status codes and the rich error model.

Every failed call carries a `google.rpc.ErrorInfo` (reason, domain, lowerCamel metadata);
invalid input also carries a `google.rpc.BadRequest` listing the bad fields.
"""

from __future__ import annotations

from typing import Any, NoReturn, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ticketing_service.domain import errors
from ticketing_service.entrypoints.observability.rpc_calls import note_failure_reason

ERROR_DOMAIN = "ticketing.moim.social"

STATUS_CODES: dict[type[errors.TicketingError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.EventNotFound: grpc.StatusCode.NOT_FOUND,
    errors.TierNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ReservationNotFound: grpc.StatusCode.NOT_FOUND,
    errors.PaidTicketingNotEnabled: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PaidTicketingCurrencyMissing: grpc.StatusCode.FAILED_PRECONDITION,
    errors.TierNotOnSale: grpc.StatusCode.FAILED_PRECONDITION,
    errors.SoldOut: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AlreadyRegistered: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ReservationPending: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ReservationNotCancellable: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PaymentMismatch: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CheckoutRejected: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotReservationOwner: grpc.StatusCode.PERMISSION_DENIED,
    errors.PaymentServiceUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DatabaseUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ConcurrentUpdate: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.EventsPruned: grpc.StatusCode.OUT_OF_RANGE,
}


def to_status(error: errors.TicketingError) -> grpc.Status:
    """The gRPC status for a domain error, with its ErrorInfo and any field violations."""
    code = STATUS_CODES[type(error)]
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=dict(error.metadata)
    )
    details = [_pack(info)]
    if isinstance(error, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return cast(grpc.Status, rpc_status.to_status(status))


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], error: errors.TicketingError
) -> NoReturn:
    """End the call with the error's status; its reason is noted for the call's line and metrics."""
    note_failure_reason(error.reason)
    await context.abort_with_status(to_status(error))
    raise AssertionError("abort_with_status always raises")  # pragma: no cover


def internal_status() -> grpc.Status:
    """A bare INTERNAL for a bug: no exception text, no stack trace leaves the server."""
    status = status_pb2.Status(
        code=code_pb2.INTERNAL, message="The service failed unexpectedly; it has been logged."
    )
    return cast(grpc.Status, rpc_status.to_status(status))


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
