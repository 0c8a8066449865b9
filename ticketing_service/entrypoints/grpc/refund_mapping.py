"""Reads refund and cancellation requests, and writes refunds and cancellations as messages."""

from __future__ import annotations

from moim.ticketing.v1 import refund_pb2, ticketing_service_pb2

from ticketing_service.domain.refunds import EventCancellation, Refund, RefundReason, RefundStatus
from ticketing_service.domain.reservations import MAX_ID_LENGTH
from ticketing_service.entrypoints.grpc.timestamps import write_timestamp
from ticketing_service.entrypoints.grpc.validation import Violations
from ticketing_service.service_layer.refund_handlers import RefundCommand

_WIRE_REASONS = {
    RefundReason.CANCELLATION: refund_pb2.REFUND_REASON_CANCELLATION,
    RefundReason.ORGANIZER: refund_pb2.REFUND_REASON_ORGANIZER,
    RefundReason.GOODWILL: refund_pb2.REFUND_REASON_GOODWILL,
    RefundReason.PAID_UNFULFILLED: refund_pb2.REFUND_REASON_PAID_UNFULFILLED,
    RefundReason.DUPLICATE: refund_pb2.REFUND_REASON_DUPLICATE,
    RefundReason.MISMATCH: refund_pb2.REFUND_REASON_PAYMENT_MISMATCH,
    RefundReason.EVENT_CANCELLED: refund_pb2.REFUND_REASON_EVENT_CANCELLED,
}
_REASONS = {wire: reason for reason, wire in _WIRE_REASONS.items()}
_STATES = {
    status: refund_pb2.RefundState.Value(f"REFUND_STATE_{status.name}") for status in RefundStatus
}


def read_cancel_registration(
    request: ticketing_service_pb2.CancelRegistrationRequest,
) -> tuple[str, str, str | None]:
    """The reservation, its owner and the request id, or InvalidArgument."""
    v = Violations()
    reservation_id = v.uuid("reservation_id", request.reservation_id)
    user_id = v.required_id("user_id", request.user_id)
    request_id = v.text("request_id", request.request_id, MAX_ID_LENGTH) or None
    v.raise_if_any()
    return reservation_id, user_id, request_id


def read_refund(request: ticketing_service_pb2.RefundReservationRequest) -> RefundCommand:
    """The refund asked for, or InvalidArgument listing every bad field."""
    v = Violations()
    reason = _REASONS.get(request.reason)
    if reason is None:
        v.add("reason", "Required: organizer, goodwill, paid_unfulfilled or duplicate.")
    command = RefundCommand(
        reservation_id=v.uuid("reservation_id", request.reservation_id),
        amount=v.amount("amount", request.amount),
        reason=reason or RefundReason.ORGANIZER,
        release_seat=request.release_seat,
        request_id=v.required_id("request_id", request.request_id),
    )
    v.raise_if_any()
    return command


def read_refund_id(refund_id: str) -> str:
    """A refund id in canonical UUID form, or InvalidArgument."""
    v = Violations()
    canonical = v.uuid("refund_id", refund_id)
    v.raise_if_any()
    return canonical


def read_cancel_event(request: ticketing_service_pb2.CancelEventRequest) -> tuple[str, str | None]:
    """The event to cancel and the request id, or InvalidArgument."""
    v = Violations()
    event_id = v.required_id("event_id", request.event_id)
    request_id = v.text("request_id", request.request_id, MAX_ID_LENGTH) or None
    v.raise_if_any()
    return event_id, request_id


def write_refund(refund: Refund) -> refund_pb2.Refund:
    """The refund as a message."""
    message = refund_pb2.Refund(
        refund_id=refund.refund_id,
        reservation_id=refund.reservation_id,
        payment_id=refund.payment_id,
        amount=refund.amount,
        currency_code=refund.currency_code,
        reason=_WIRE_REASONS[refund.reason],
        state=_STATES[refund.status],
        failure_code=refund.failure_code or "",
    )
    write_timestamp(message.create_time, refund.create_time)
    write_timestamp(message.update_time, refund.update_time)
    return message


def write_cancellation(progress: EventCancellation) -> refund_pb2.EventCancellation:
    """The cancellation's progress as a message."""
    message = refund_pb2.EventCancellation(
        event_id=progress.event_id,
        done=progress.done,
        reservations_done=progress.reservations_done,
        reservations_total=progress.reservations_total,
        refunds_pending=progress.refunds_pending,
        refunds_succeeded=progress.refunds_succeeded,
        refunds_failed=progress.refunds_failed,
    )
    write_timestamp(message.cancel_time, progress.cancel_time)
    return message
