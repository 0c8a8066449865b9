"""Maps the domain's errors to gRPC status codes and the rich error model.

Every failed call carries a `google.rpc.ErrorInfo` (reason, domain, lowerCamel metadata);
invalid input also carries a `google.rpc.BadRequest` listing the bad fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ticketing_service.domain import errors
from ticketing_service.entrypoints.observability.interceptor import note_failure_reason

ERROR_DOMAIN = "ticketing.moim.social"
# A status travels in trailing metadata, and a default client refuses more than 8 KiB of it
# (as RESOURCE_EXHAUSTED, hiding the real error). These bounds keep the largest status under
# 6 KiB once encoded: at most 20 violations, and every text clipped (in UTF-8 bytes). Our own
# field paths and descriptions are well inside them; the clipping is for what echoes input.
MAX_FIELD_VIOLATIONS = 20
_MAX_FIELD_BYTES = 48
_MAX_DESCRIPTION_BYTES = 100
_MAX_MESSAGE_BYTES = 256
_MAX_METADATA_VALUE_BYTES = 128

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
    errors.SequenceAheadOfFeed: grpc.StatusCode.OUT_OF_RANGE,
    errors.TooManyWatchers: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ServerBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.ServerStopping: grpc.StatusCode.UNAVAILABLE,
    errors.RefundExceedsPaid: grpc.StatusCode.FAILED_PRECONDITION,
    errors.EventCancelled: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RegistrationNotCancellable: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RefundNotFound: grpc.StatusCode.NOT_FOUND,
    errors.EventNotCancelled: grpc.StatusCode.NOT_FOUND,
}


def to_status(error: errors.TicketingError) -> grpc.Status:
    """The gRPC status for a domain error, with its ErrorInfo and any field violations."""
    code = STATUS_CODES[type(error)]
    metadata = {k: _clip(v, _MAX_METADATA_VALUE_BYTES) for k, v in error.metadata.items()}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    details = [_pack(info)]
    if isinstance(error, errors.InvalidArgument):
        details.append(_pack(_bad_request(error.violations)))
    message = _clip(error.message, _MAX_MESSAGE_BYTES)
    status = status_pb2.Status(code=code.value[0], message=message, details=details)
    return cast(grpc.Status, rpc_status.to_status(status))


def _bad_request(violations: Sequence[errors.FieldViolation]) -> error_details_pb2.BadRequest:
    """The first MAX_FIELD_VIOLATIONS violations: fixing them reveals any others."""
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=_clip(v.field, _MAX_FIELD_BYTES),
                description=_clip(v.description, _MAX_DESCRIPTION_BYTES),
            )
            for v in violations[:MAX_FIELD_VIOLATIONS]
        ]
    )


def _clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character."""
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "..."


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
