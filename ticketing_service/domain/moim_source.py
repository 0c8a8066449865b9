"""The rows of the original implementation (Moim PR #177) that import-moim reads, per event.

Plain values as the source stores them: ids as text, amounts in whole KRW, statuses as the
free-form strings the original wrote, times aware (`read_as_utc`) but possibly out of range.
What they mean here is decided in `moim_import`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from ticketing_service.domain.times import EARLIEST, LATEST

# Postgres's infinity and -infinity, as the driver reads them (naive) and `read_as_utc` makes them.
_INFINITIES = {
    datetime.max.replace(tzinfo=UTC): "infinity",
    datetime.min.replace(tzinfo=UTC): "-infinity",
}


def read_as_utc(value: datetime) -> datetime:
    """A time of the source as an aware one: a `timestamp` column without time zone (an older
    schema) is read as UTC. Infinity and -infinity come from the driver as naive datetime.max
    and datetime.min, so they end up outside the times the service keeps (`time_problem`)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def time_problem(column: str, value: datetime | None) -> str | None:
    """Why a time of the source cannot be kept here (None when it can, or is NULL): the service
    keeps times from 1970 to 9999-12-31T23:59:59Z, and nothing infinite."""
    if value is None or EARLIEST <= value <= LATEST:
        return None
    shown = _INFINITIES.get(value, value.isoformat())
    return (
        f"its {column} {shown} is outside the times the service keeps"
        f" ({EARLIEST.isoformat()} to {LATEST.isoformat()})"
    )


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """A row of `event_ticketing_settings`."""

    mode: str
    provider: str | None
    provider_account_id: str | None
    currency: str | None
    enabled: bool
    legacy: bool


@dataclass(frozen=True, slots=True)
class SourceTier:
    """A row of `event_tiers`; `price_amount` and `capacity` as stored (NULL, 0 or negative)."""

    tier_id: str
    name: str
    price_amount: int | None
    capacity: int | None
    opens_at: datetime | None
    closes_at: datetime | None
    sort_order: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SourceRsvp:
    """A row of `rsvps`: a user's, or an anonymous one (`user_id` None, a token instead)."""

    rsvp_id: str
    user_id: str | None
    tier_id: str | None
    status: str


@dataclass(frozen=True, slots=True)
class SourceReservation:
    """A row of `ticket_reservations`; `answers_snapshot` is its parsed JSON (or None)."""

    reservation_id: str
    tier_id: str | None
    user_id: str | None
    rsvp_id: str | None
    provider: str
    provider_account_id: str | None
    amount: int
    currency: str
    status: str
    checkout_id: str | None
    answers_snapshot: object
    expires_at: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SourcePayment:
    """A row of `ticket_payments`; `raw_event` is its JSON text as bytes."""

    payment_row_id: str
    reservation_id: str
    provider: str
    provider_payment_id: str | None
    tx_id: str | None
    checkout_id: str | None
    status: str
    amount: int
    currency: str
    raw_event: bytes | None
    paid_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SourceEvent:
    """One event of the source with every row import-moim reads about it."""

    event_id: str
    title: str
    starts_at: datetime
    external_url: str
    settings: SourceSettings | None
    tiers: tuple[SourceTier, ...] = ()
    rsvps: tuple[SourceRsvp, ...] = ()
    reservations: tuple[SourceReservation, ...] = ()
    payments: tuple[SourcePayment, ...] = ()
    deleted: bool = False  # soft-deleted in Moim (`deleted_at`)


@dataclass(frozen=True, slots=True)
class SourceSnapshot:
    """Every event of the source, read in one snapshot, and the source's clock at the time."""

    read_time: datetime
    events: tuple[SourceEvent, ...]
