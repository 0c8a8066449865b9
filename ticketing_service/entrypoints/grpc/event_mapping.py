"""Writes registration events as messages and reads feed requests."""

from __future__ import annotations

from moim.ticketing.v1 import registration_event_pb2, ticketing_service_pb2

from ticketing_service.domain.events import RegistrationEvent, RegistrationEventType
from ticketing_service.entrypoints.grpc.refund_mapping import write_refund
from ticketing_service.entrypoints.grpc.reservation_mapping import write_reservation
from ticketing_service.entrypoints.grpc.timestamps import write_timestamp
from ticketing_service.entrypoints.grpc.validation import Violations
from ticketing_service.service_layer.event_fanout import MAX_PAGE_SIZE

_TYPES = {
    event_type: registration_event_pb2.RegistrationEventType.Value(
        f"REGISTRATION_EVENT_TYPE_{event_type.name}"
    )
    for event_type in RegistrationEventType
}


def read_list(request: ticketing_service_pb2.ListRegistrationEventsRequest) -> tuple[int, int]:
    """The sequence to list after and the page size, or InvalidArgument."""
    v = Violations()
    if request.after_sequence < 0:
        v.add("after_sequence", "Must not be negative; 0 means from the start.")
    if not 0 <= request.page_size <= MAX_PAGE_SIZE:
        v.add("page_size", f"Must be from 0 (the default page) to {MAX_PAGE_SIZE}.")
    v.raise_if_any()
    return request.after_sequence, request.page_size


def read_watch(request: ticketing_service_pb2.WatchRegistrationEventsRequest) -> int:
    """The sequence to stream after, or InvalidArgument."""
    v = Violations()
    if request.after_sequence < 0:
        v.add("after_sequence", "Must not be negative; 0 means from the start.")
    v.raise_if_any()
    return request.after_sequence


def write_event(event: RegistrationEvent) -> registration_event_pb2.RegistrationEvent:
    """The event as a message."""
    message = registration_event_pb2.RegistrationEvent(
        sequence=event.sequence,
        type=_TYPES[event.type],
        reservation=write_reservation(event.reservation),
    )
    write_timestamp(message.create_time, event.create_time)
    if (mismatch := event.mismatch) is not None:
        message.payment_mismatch.CopyFrom(
            registration_event_pb2.PaymentMismatch(
                checkout_id=mismatch.checkout_id,
                payment_id=mismatch.payment_id,
                provider=mismatch.provider,
                amount=mismatch.amount,
                currency_code=mismatch.currency_code,
                fields=mismatch.fields,
            )
        )
    if event.refund is not None:
        message.refund.CopyFrom(write_refund(event.refund))
    return message
