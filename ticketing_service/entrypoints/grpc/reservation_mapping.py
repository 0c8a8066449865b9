"""Reads reservation and payment requests into commands, and writes reservations as messages."""

from __future__ import annotations

from moim.ticketing.v1 import reservation_pb2, ticketing_service_pb2
from moim.ticketing.v1.ticketing_service_pb2 import ConfirmPaymentOutcome

from ticketing_service.domain.reconciliation import CheckoutAnswer
from ticketing_service.domain.reservations import (
    MAX_ANSWER_LENGTH,
    MAX_ANSWERS,
    MAX_ANSWERS_BYTES,
    MAX_ID_LENGTH,
    Answer,
    ConfirmOutcome,
    Delivery,
    DeliveryScheme,
    PaymentClaim,
    Reservation,
    ReservationStatus,
    answers_size,
)
from ticketing_service.entrypoints.grpc.refund_mapping import write_refund
from ticketing_service.entrypoints.grpc.timestamps import write_timestamp
from ticketing_service.entrypoints.grpc.validation import MAX_NAME_LENGTH, Violations
from ticketing_service.service_layer.reconciliation import Reconciled
from ticketing_service.service_layer.registration_handlers import StartRegistration

MAX_EMAIL_LENGTH = 320
MAX_RAW_EVENT_BYTES = 64 * 1024

_STATUSES = {
    ReservationStatus.PENDING_PAYMENT: reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT,
    ReservationStatus.CONFIRMED: reservation_pb2.RESERVATION_STATUS_CONFIRMED,
    ReservationStatus.EXPIRED: reservation_pb2.RESERVATION_STATUS_EXPIRED,
    ReservationStatus.CANCELLED: reservation_pb2.RESERVATION_STATUS_CANCELLED,
    ReservationStatus.PAID_UNFULFILLED: reservation_pb2.RESERVATION_STATUS_PAID_UNFULFILLED,
    ReservationStatus.REGISTRATION_CANCELLED: (
        reservation_pb2.RESERVATION_STATUS_REGISTRATION_CANCELLED
    ),
}
OUTCOMES = {
    outcome: ConfirmPaymentOutcome.Value(f"CONFIRM_PAYMENT_OUTCOME_{outcome.value}")
    for outcome in ConfirmOutcome
}


def read_start(request: ticketing_service_pb2.StartPaidRegistrationRequest) -> StartRegistration:
    """The registration attempt, or InvalidArgument listing every bad field."""
    v = Violations()
    command = StartRegistration(
        event_id=v.required_id("event_id", request.event_id),
        tier_id=v.required_id("tier_id", request.tier_id),
        user_id=v.required_id("user_id", request.user_id),
        customer_name=v.text("customer.name", request.customer.name, MAX_NAME_LENGTH) or None,
        customer_email=v.text("customer.email", request.customer.email, MAX_EMAIL_LENGTH) or None,
        answers=_read_answers(v, request),
        success_url=v.url("success_url", request.success_url) if request.success_url else None,
        cancel_url=v.url("cancel_url", request.cancel_url) if request.cancel_url else None,
    )
    v.text("request_id", request.request_id, MAX_ID_LENGTH)
    v.raise_if_any()
    return command


def _read_answers(
    v: Violations, request: ticketing_service_pb2.StartPaidRegistrationRequest
) -> tuple[Answer, ...]:
    if len(request.answers) > MAX_ANSWERS:  # before reading any answer
        v.add("answers", f"At most {MAX_ANSWERS} answers.")
        v.raise_if_any()
    answers = tuple(
        Answer(
            v.required_id(f"answers[{i}].question_id", a.question_id),
            v.text(f"answers[{i}].answer", a.answer, MAX_ANSWER_LENGTH),
        )
        for i, a in enumerate(request.answers)
    )
    if answers_size(answers) > MAX_ANSWERS_BYTES:
        v.add("answers", f"Must total at most {MAX_ANSWERS_BYTES} bytes, question ids included.")
    return answers


def read_reservation_id(reservation_id: str) -> str:
    """A reservation id in canonical UUID form, or InvalidArgument."""
    v = Violations()
    canonical = v.uuid("reservation_id", reservation_id)
    v.raise_if_any()
    return canonical


def read_find(request: ticketing_service_pb2.FindReservationRequest) -> tuple[str, str]:
    """The event and the user whose latest reservation is asked for, or InvalidArgument."""
    v = Violations()
    event_id = v.required_id("event_id", request.event_id)
    user_id = v.required_id("user_id", request.user_id)
    v.raise_if_any()
    return event_id, user_id


def read_cancel(request: ticketing_service_pb2.CancelReservationRequest) -> tuple[str, str]:
    """The reservation id and the user who cancels, or InvalidArgument."""
    v = Violations()
    reservation_id = v.uuid("reservation_id", request.reservation_id)
    user_id = v.required_id("user_id", request.user_id)
    v.raise_if_any()
    return reservation_id, user_id


def read_claim(request: ticketing_service_pb2.ConfirmPaymentRequest) -> PaymentClaim:
    """The payment claimed, or InvalidArgument listing every bad field."""
    v = Violations()
    paid_time = (
        v.timestamp("paid_time", request.paid_time) if request.HasField("paid_time") else None
    )
    if len(request.raw_event) > MAX_RAW_EVENT_BYTES:
        v.add("raw_event", f"Must be at most {MAX_RAW_EVENT_BYTES} bytes.")
    claim = PaymentClaim(
        reservation_id=v.uuid("reservation_id", request.reservation_id),
        checkout_id=v.required_id("checkout_id", request.checkout_id),
        payment_id=v.required_id("payment_id", request.payment_id),
        tx_id=v.text("tx_id", request.tx_id, MAX_ID_LENGTH) or None,
        provider=v.required_id("provider", request.provider),
        amount=v.amount("amount", request.amount),
        currency_code=v.currency("currency_code", request.currency_code, required=True) or "",
        paid_time=paid_time,
        delivery=_read_delivery(v, request),
        raw_event=request.raw_event or None,
    )
    v.raise_if_any()
    return claim


_SCHEMES = {
    ticketing_service_pb2.DELIVERY_SCHEME_UNSPECIFIED: DeliveryScheme.DIRECT,
    ticketing_service_pb2.DELIVERY_SCHEME_MOIM_HMAC: DeliveryScheme.MOIM_HMAC,
    ticketing_service_pb2.DELIVERY_SCHEME_STANDARD_WEBHOOKS: DeliveryScheme.STANDARD_WEBHOOKS,
}


def _read_delivery(
    v: Violations, request: ticketing_service_pb2.ConfirmPaymentRequest
) -> Delivery | None:
    delivery_id = v.text("delivery_id", request.delivery_id, MAX_ID_LENGTH)
    scheme = _SCHEMES.get(request.delivery_scheme)
    if scheme is None:
        v.add("delivery_scheme", "Must be a DeliveryScheme value this service knows.")
        return None
    return Delivery(scheme, delivery_id) if delivery_id else None


def write_reservation(reservation: Reservation) -> reservation_pb2.Reservation:
    """The reservation as a message; absent values become empty fields."""
    message = reservation_pb2.Reservation(
        reservation_id=reservation.reservation_id,
        event_id=reservation.event_id,
        tier_id=reservation.tier_id,
        user_id=reservation.user_id,
        status=_STATUSES[reservation.status],
        amount=reservation.amount,
        currency_code=reservation.currency_code,
        provider=reservation.provider,
        checkout_id=reservation.checkout_id or "",
        checkout_url=reservation.checkout_url or "",
        answers=[
            reservation_pb2.Answer(question_id=a.question_id, answer=a.answer)
            for a in reservation.answers
        ],
        registration_id=reservation.registration_id or "",
        payment_id=reservation.payment_id or "",
        refunded_amount=reservation.refunded_amount,
        refunds=[write_refund(r) for r in reservation.refunds],
    )
    write_timestamp(message.create_time, reservation.create_time)
    write_timestamp(message.expire_time, reservation.expire_time)
    if reservation.paid_time is not None:
        write_timestamp(message.paid_time, reservation.paid_time)
    return message


_CHECKOUT_STATUSES = {
    answer: ticketing_service_pb2.CheckoutStatus.Value(f"CHECKOUT_STATUS_{answer.name}")
    for answer in CheckoutAnswer
}


def write_reconciled(found: Reconciled) -> ticketing_service_pb2.ReconcileReservationResponse:
    """What reconciling a reservation found, as the RPC's response."""
    response = ticketing_service_pb2.ReconcileReservationResponse(
        reservation=write_reservation(found.reservation)
    )
    if found.answer is not None:
        response.checkout_status = _CHECKOUT_STATUSES[found.answer]
    if found.outcome is not None:
        response.outcome = OUTCOMES[found.outcome]
    return response
