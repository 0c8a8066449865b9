"""The payment service's JSON answers (SPEC §5) read into the ports' types, strictly.

Anything that does not match the contract is a `PaymentServiceRefused`: a malformed answer does
not get better by asking again, and guessing at it could confirm or refund the wrong money. That
includes a value the service could not keep or use: an id longer than the API takes, text with
a NUL or a lone surrogate (Postgres refuses both), an amount past the largest one, a currency
that is not three capital letters, a checkout URL that is not http(s). Each of these once failed
a background pass with a traceback, again at every lease, and kept a hold past its end.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

import httpx

from ticketing_service.domain.money import MAX_AMOUNT
from ticketing_service.domain.reservations import MAX_ID_LENGTH
from ticketing_service.domain.times import parse_rfc3339
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutState,
    CheckoutStatus,
    PaymentServiceRefused,
)
from ticketing_service.service_layer.refunds import RefundState, RefundStatus

_State = TypeVar("_State", bound=StrEnum)
# What a create may answer: a new checkout, or the existing one an idempotent replay returns.
_CREATED_STATUSES = frozenset({"requires_payment", "payment_pending", "paid"})
_MAX_URL_LENGTH = 2048
_CURRENCY = re.compile(r"[A-Z]{3}")


def checkout_from(response: httpx.Response) -> Checkout:
    """The answer to POST /v1/ticket-checkouts."""
    data = _object(response)
    status = data.get("status")
    if not (isinstance(status, str) and status in _CREATED_STATUSES):
        raise malformed("status is not one of requires_payment, payment_pending or paid")
    return Checkout(
        checkout_id=_text(data, "checkoutId"),
        checkout_url=_url(data, "checkoutUrl"),
        status=status,
    )


def checkout_status_from(response: httpx.Response, checkout_id: str) -> CheckoutStatus:
    """The answer to GET /v1/ticket-checkouts/{checkoutId}, which must name that checkout."""
    data = _object(response)
    if _text(data, "checkoutId") != checkout_id:
        raise malformed("it describes another checkout")
    status = _state(CheckoutState, data.get("status"), "status")
    payment_id = _optional_text(data, "paymentId")
    if status is CheckoutState.PAID and payment_id is None:
        # A payment cannot be confirmed without its id; reading it as unpaid would lose a seat.
        raise malformed("a paid checkout has no paymentId")
    return CheckoutStatus(
        checkout_id=checkout_id,
        reservation_id=_text(data, "reservationId"),
        status=status,
        amount=_amount(data, "amount"),
        currency_code=_currency(data, "currency"),
        payment_id=payment_id,
        tx_id=_optional_text(data, "txId"),
        paid_time=_optional_time(data, "paidAt"),
    )


def refund_status_from(response: httpx.Response, refund_id: str) -> RefundStatus:
    """The answer to POST /v1/ticket-refunds or GET /v1/ticket-refunds/{refundId}."""
    data = _object(response)
    if _text(data, "refundId") != refund_id:
        raise malformed("it describes another refund")
    return RefundStatus(
        refund_id=refund_id,
        status=_state(RefundState, data.get("status"), "status"),
        refunded_amount=_amount(data, "refundedAmount"),
        failure_code=_failure_code(data),
    )


def error_code(response: httpx.Response) -> str:
    """The `code` of an error answer `{code, message}`, or "" when it has none."""
    data = json_or_none(response)
    code = data.get("code") if isinstance(data, dict) else None
    return code if isinstance(code, str) else ""


def describe_error(response: httpx.Response) -> str:
    """` (code: message)` from an error answer, for an exception's text; "" when absent."""
    data = json_or_none(response)
    if not isinstance(data, dict):
        return ""
    code, message = data.get("code"), data.get("message")
    code = readable_code(code) if isinstance(code, str) else None
    if isinstance(code, str) and isinstance(message, str):
        return f" ({code}: {message[:200]})"
    return f" ({code})" if isinstance(code, str) else ""


def json_or_none(response: httpx.Response) -> object:
    """The parsed body, or None when it is not JSON (or not even text)."""
    try:
        return response.json()
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past Python's stack
        return None


def malformed(reason: str) -> PaymentServiceRefused:
    """The error for an answer that breaks the contract."""
    return PaymentServiceRefused(
        f"The payment service sent a malformed answer ({reason}); "
        "do not retry, report it to the payment team."
    )


def _object(response: httpx.Response) -> dict[str, object]:
    data = json_or_none(response)
    if not isinstance(data, dict):
        raise malformed("its body is not a JSON object")
    return data


def _text(data: dict[str, object], name: str, max_length: int = MAX_ID_LENGTH) -> str:
    value = data.get(name)
    if not (isinstance(value, str) and value):
        raise malformed(f"{name} is missing or empty")
    _check_text(name, value, max_length)
    return value


def _optional_text(data: dict[str, object], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not (isinstance(value, str) and value):
        raise malformed(f"{name} is not a non-empty string")
    _check_text(name, value, MAX_ID_LENGTH)
    return value


def _check_text(name: str, value: str, max_length: int) -> None:
    if len(value) > max_length:
        raise malformed(f"{name} is longer than {max_length} characters")
    # Neither a control character (NUL among them) nor a lone surrogate is printable.
    if not value.isprintable():
        raise malformed(f"{name} holds a character that is not printable")


def readable_code(code: str) -> str:
    """A code from the payment service kept as an operator can read it (and Postgres can store
    it): its printable characters, at most 128. Never a reason to refuse an answer: a refusal
    or a `failed` is what matters (a code of 129 characters left a failed refund pending for
    ever)."""
    return "".join(c for c in code if c.isprintable())[:MAX_ID_LENGTH]


def _failure_code(data: dict[str, object]) -> str | None:
    """Why a refund failed, as the payment service says (see readable_code)."""
    value = data.get("failureCode")
    return (readable_code(value) or None) if isinstance(value, str) else None


def _url(data: dict[str, object], name: str) -> str:
    value = _text(data, name, _MAX_URL_LENGTH)
    if not value.lower().startswith(("https://", "http://")):  # a scheme has no case
        raise malformed(f"{name} is not an http(s) URL")
    return value


def _currency(data: dict[str, object], name: str) -> str:
    value = data.get(name)
    if not (isinstance(value, str) and _CURRENCY.fullmatch(value)):
        raise malformed(f"{name} is not three capital letters")
    return value


def _amount(data: dict[str, object], name: str) -> int:
    value = data.get(name)
    # bool is an int to Python, and a float is never money here.
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_AMOUNT:
        raise malformed(f"{name} is not an integer in minor units from 0 to {MAX_AMOUNT}")
    return value


def _state(kind: type[_State], value: object, name: str) -> _State:
    for member in kind:
        if value == member.value:
            return member
    raise malformed(f"{name} is not one of {', '.join(member.value for member in kind)}")


def _optional_time(data: dict[str, object], name: str) -> datetime | None:
    value = data.get(name)
    if value is None:
        return None
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise malformed(f"{name} is not an RFC 3339 time with an offset")
    return parsed
