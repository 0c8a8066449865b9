"""The payment service fake's checks of request bodies, as strict as SPEC §5 reads."""

from __future__ import annotations

from datetime import datetime

from ticketing_service.domain.money import MAX_AMOUNT, is_known_currency
from ticketing_service.domain.times import parse_rfc3339
from ticketing_service.entrypoints.dev.payment_state import Refusal

_CHECKOUT_STRINGS = (
    "provider",
    "paymentMethodFamily",
    "reservationId",
    "eventId",
    "tierId",
    "orderName",
    "currency",
    "successUrl",
    "cancelUrl",
    "callbackUrl",
)
_REFUND_STRINGS = ("refundId", "checkoutId", "paymentId", "reservationId", "currency", "reason")


def checkout_body(body: object) -> tuple[dict[str, object], datetime | None]:
    """A valid checkout body and its `expiresAt` (None when omitted); else a 422 Refusal."""
    data = _object(body)
    _strings(data, _CHECKOUT_STRINGS)
    _money(data, "amount")
    customer = data.get("customer")
    if not isinstance(customer, dict) or not _non_empty(customer.get("moimUserId")):
        raise _invalid("customer.moimUserId must be a non-empty string.")
    if any(name in customer and not isinstance(customer[name], str) for name in ("name", "email")):
        raise _invalid("customer.name and customer.email must be strings when present.")
    return data, _expires_at(data.get("expiresAt"))


def refund_body(key: str, body: object) -> dict[str, object]:
    """A valid refund body sent with the key `refund:<refundId>`; else a 422 Refusal."""
    data = _object(body)
    _strings(data, _REFUND_STRINGS)
    _money(data, "amount")
    if key != f"refund:{data['refundId']}":
        raise _invalid("The Idempotency-Key must be refund:<refundId>.")
    return data


def _object(body: object) -> dict[str, object]:
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object.")
    return body


def _strings(data: dict[str, object], names: tuple[str, ...]) -> None:
    missing = [name for name in names if not _non_empty(data.get(name))]
    if missing:
        raise _invalid(f"These fields must be non-empty strings: {', '.join(missing)}.")


def _money(data: dict[str, object], name: str) -> None:
    amount = data.get(name)
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount <= MAX_AMOUNT:
        raise _invalid(f"{name} must be a positive integer in minor units.")
    if not is_known_currency(str(data["currency"])):
        raise _invalid("currency must be a supported ISO 4217 code.")


def _expires_at(value: object) -> datetime | None:
    if value is None:
        return None
    parsed = parse_rfc3339(value)
    if parsed is None:
        raise _invalid("expiresAt must be an RFC 3339 time with an offset.")
    return parsed


def _non_empty(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _invalid(message: str) -> Refusal:
    return Refusal(422, "invalid_request", message)
