"""A reservation's columns, written once: what statements select, what events snapshot, and the
one mapping from either back to a `Reservation`.

A statement that reads or changes a reservation selects `columns(...)`; a feed event stores
`snapshot(...)`, a JSON object with the same names (times as text, and without the customer's
name and e-mail, which the feed does not carry). `reservation_from` maps both.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ticketing_service.domain.reservations import Answer, Reservation, ReservationStatus

# Every column of `reservations` a Reservation is made of; `registration_id` comes from a join.
_FIELDS = (
    "reservation_id",
    "event_id",
    "tier_id",
    "user_id",
    "status",
    "amount",
    "currency_code",
    "provider",
    "provider_account_id",
    "answers",
    "customer_name",
    "customer_email",
    "success_url",
    "cancel_url",
    "checkout_id",
    "checkout_url",
    "create_time",
    "expire_time",
    "paid_time",
    "payment_id",
    "refunded_amount",
)
_NOT_IN_EVENTS = frozenset({"customer_name", "customer_email"})

# The reservation `r` with its registration, from the table and from a WITH's changed row `r`.
FROM = "reservations r LEFT JOIN registrations g ON g.reservation_id = r.reservation_id"
CHANGED = "r LEFT JOIN registrations g ON g.reservation_id = r.reservation_id"


def columns(r: str, registration_id: str) -> str:
    """The select list of the reservation row `r` and its registration id."""
    return ", ".join(f"{r}.{name}" for name in _FIELDS) + f", {registration_id} AS registration_id"


def snapshot(r: str, registration_id: str) -> str:
    """The reservation row `r` (with its registration id) as a feed event's JSON payload."""
    pairs = ", ".join(f"'{name}', {r}.{name}" for name in _FIELDS if name not in _NOT_IN_EVENTS)
    return f"jsonb_build_object({pairs}, 'registration_id', {registration_id})"


def reservation_from(values: Mapping[str, Any]) -> Reservation:
    """A Reservation from a row of `columns(...)` or a decoded `snapshot(...)`."""
    registration_id = values["registration_id"]
    expire_time = _time(values["expire_time"])
    create_time = _time(values["create_time"])
    assert create_time is not None
    assert expire_time is not None
    return Reservation(
        reservation_id=str(values["reservation_id"]),
        event_id=values["event_id"],
        tier_id=values["tier_id"],
        user_id=values["user_id"],
        status=ReservationStatus(values["status"]),
        amount=int(values["amount"]),
        currency_code=values["currency_code"],
        provider=values["provider"],
        provider_account_id=values["provider_account_id"],
        answers=tuple(Answer(a["question_id"], a["answer"]) for a in values["answers"]),
        customer_name=values.get("customer_name"),
        customer_email=values.get("customer_email"),
        success_url=values["success_url"],
        cancel_url=values["cancel_url"],
        create_time=create_time,
        expire_time=expire_time,
        checkout_id=values["checkout_id"],
        checkout_url=values["checkout_url"],
        paid_time=_time(values["paid_time"]),
        registration_id=None if registration_id is None else str(registration_id),
        # Events written before payments were named carry no payment id.
        payment_id=values.get("payment_id"),
        # Events written before refunds existed carry no refunded amount.
        refunded_amount=int(values.get("refunded_amount") or 0),
    )


def _time(value: datetime | str | None) -> datetime | None:
    """A column's datetime as it is, a snapshot's text parsed."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value
