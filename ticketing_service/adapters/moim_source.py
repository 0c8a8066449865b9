"""The original implementation's tables (Moim PR #177), read for import-moim.

Everything is read in one read-only REPEATABLE READ transaction: one snapshot, so an event's
payments always match its reservations even while Moim keeps writing. Times of a `timestamp`
column without time zone (an older schema) are read as UTC. The tables are read
whole, once each (the original gave them no index on the event), and grouped by event here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

import asyncpg

from ticketing_service.adapters.db.pool import Connection, Database, PoolSettings
from ticketing_service.adapters.db.transaction import Row
from ticketing_service.domain.moim_source import (
    SourceEvent,
    SourcePayment,
    SourceReservation,
    SourceRsvp,
    SourceSettings,
    SourceSnapshot,
    SourceTier,
    read_as_utc,
)
from ticketing_service.service_layer.moim_import import SourceUnreadable

EXPECTED_TABLES = (
    "events",
    "event_tiers",
    "event_ticketing_settings",
    "rsvps",
    "ticket_reservations",
    "ticket_payments",
)
# Deleted events are read only when they have settings (the original's backfill gave every
# event one, deleted or not); their paid reservations still need their payments here.
_EVENTS = (
    "SELECT e.id::text AS event_id, e.title, e.starts_at, e.external_url,"
    " e.deleted_at IS NOT NULL AS deleted FROM events e"
    " WHERE e.deleted_at IS NULL"
    " OR EXISTS (SELECT 1 FROM event_ticketing_settings s WHERE s.event_id = e.id)"
    " ORDER BY e.starts_at, e.id"
)
_SETTINGS = (
    "SELECT event_id::text AS event_id, mode, provider, provider_account_id, currency, enabled,"
    " legacy FROM event_ticketing_settings"
)
_TIERS = (
    "SELECT id::text AS tier_id, event_id::text AS event_id, name, price_amount, capacity,"
    " opens_at, closes_at, sort_order, created_at FROM event_tiers"
)
_RSVPS = (
    "SELECT id::text AS rsvp_id, event_id::text AS event_id, user_id::text AS user_id,"
    " tier_id::text AS tier_id, status FROM rsvps"
)
_RESERVATIONS = (
    "SELECT id::text AS reservation_id, event_id::text AS event_id, tier_id::text AS tier_id,"
    " user_id::text AS user_id, rsvp_id::text AS rsvp_id, provider, provider_account_id, amount,"
    " currency, status, checkout_id, answers_snapshot, expires_at, created_at, updated_at"
    " FROM ticket_reservations"
)
# raw_event as text: the service keeps a payment's raw event as bytes.
_PAYMENTS = (
    "SELECT p.id::text AS payment_row_id, p.reservation_id::text AS reservation_id,"
    " r.event_id::text AS event_id, p.provider, p.provider_payment_id, p.provider_tx_id,"
    " p.checkout_id, p.status, p.amount, p.currency, p.raw_event::text AS raw_event, p.paid_at,"
    " p.created_at, p.updated_at FROM ticket_payments p"
    " JOIN ticket_reservations r ON r.id = p.reservation_id"
)
T = TypeVar("T")
# What can go wrong between us and the source: the server's errors, the driver's, the socket's.
_SOURCE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class PostgresMoimSource:
    """The MoimSource port on one connection to the original's database."""

    def __init__(self, url: str, settings: PoolSettings) -> None:
        # Only its connections are used, made as the service's own are (timeouts, codecs).
        self._connections = Database(url, settings)
        self._connect_timeout = settings.connect_timeout_seconds
        self._statement_timeout_ms = settings.statement_timeout_ms

    async def read(self) -> SourceSnapshot:
        """Every event with its rows, in one snapshot; SourceUnreadable when it cannot be."""
        try:
            connection = await self._connections.connect()
        except _SOURCE_ERRORS as error:
            # A source that accepts the connection and never answers times out without a word.
            why = _why(error, f"no answer within {self._connect_timeout:g} s")
            raise SourceUnreadable(f"Cannot connect to the source database: {why}") from error
        try:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                await _check_tables(connection)
                return await _read(connection)
        except _SOURCE_ERRORS as error:
            why = _why(error, "no answer in time")
            if isinstance(error, asyncpg.QueryCanceledError):
                # The service's own limit on a statement bounds each read of a whole table.
                why += (
                    f" (TICKETING_DB_STATEMENT_TIMEOUT_MS, {self._statement_timeout_ms} ms,"
                    " applies to the source's reads too: raise it for this run, e.g."
                    " TICKETING_DB_STATEMENT_TIMEOUT_MS=600000)"
                )
            raise SourceUnreadable(f"Reading the source database failed: {why}") from error
        finally:
            await _close(connection)


def _why(error: BaseException, timed_out: str) -> str:
    """What went wrong in a few words: the error's text, or `timed_out` for a timeout (whose
    text is empty), or else at least the error's type."""
    if text := str(error):
        return text
    return timed_out if isinstance(error, TimeoutError) else type(error).__name__


async def _close(connection: Connection) -> None:
    try:
        await connection.close(timeout=5)
    except _SOURCE_ERRORS:  # it is being dropped either way: a broken one is cut instead
        connection.terminate()


async def _check_tables(connection: Connection) -> None:
    rows = await connection.fetch(
        "SELECT name FROM unnest(CAST($1 AS text[])) AS name WHERE to_regclass(name) IS NULL",
        list(EXPECTED_TABLES),
    )
    if rows:
        missing = ", ".join(r["name"] for r in rows)
        raise SourceUnreadable(
            f"The source database has no table {missing}: point --source-database-url at"
            " Moim's database, migrated with the paid ticketing tables (PR #177)."
        )


async def _read(connection: Connection) -> SourceSnapshot:
    read_time = read_as_utc(await connection.fetchval("SELECT statement_timestamp()"))
    settings = {r["event_id"]: _settings(r) for r in await connection.fetch(_SETTINGS)}
    tiers = _by_event(await connection.fetch(_TIERS), _tier)
    rsvps = _by_event(await connection.fetch(_RSVPS), _rsvp)
    reservations = _by_event(await connection.fetch(_RESERVATIONS), _reservation)
    payments = _by_event(await connection.fetch(_PAYMENTS), _payment)
    events = [
        SourceEvent(
            event_id=(event_id := row["event_id"]),
            title=row["title"],
            starts_at=read_as_utc(row["starts_at"]),
            external_url=row["external_url"],
            settings=settings.get(event_id),
            tiers=tuple(tiers[event_id]),
            rsvps=tuple(rsvps[event_id]),
            reservations=tuple(reservations[event_id]),
            payments=tuple(payments[event_id]),
            deleted=row["deleted"],
        )
        for row in await connection.fetch(_EVENTS)
    ]
    return SourceSnapshot(read_time, tuple(events))


def _by_event(rows: Iterable[Row], make: Callable[[Row], T]) -> defaultdict[str, list[T]]:
    grouped: defaultdict[str, list[T]] = defaultdict(list)
    for row in rows:
        grouped[row["event_id"]].append(make(row))
    return grouped


def _time_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else read_as_utc(value)


def _settings(row: Row) -> SourceSettings:
    return SourceSettings(
        mode=row["mode"],
        provider=row["provider"],
        provider_account_id=row["provider_account_id"],
        currency=row["currency"],
        enabled=row["enabled"],
        legacy=row["legacy"],
    )


def _tier(row: Row) -> SourceTier:
    return SourceTier(
        tier_id=row["tier_id"],
        name=row["name"],
        price_amount=row["price_amount"],
        capacity=row["capacity"],
        opens_at=_time_or_none(row["opens_at"]),
        closes_at=_time_or_none(row["closes_at"]),
        sort_order=row["sort_order"],
        created_at=read_as_utc(row["created_at"]),
    )


def _rsvp(row: Row) -> SourceRsvp:
    return SourceRsvp(row["rsvp_id"], row["user_id"], row["tier_id"], row["status"])


def _reservation(row: Row) -> SourceReservation:
    return SourceReservation(
        reservation_id=row["reservation_id"],
        tier_id=row["tier_id"],
        user_id=row["user_id"],
        rsvp_id=row["rsvp_id"],
        provider=row["provider"],
        provider_account_id=row["provider_account_id"],
        amount=row["amount"],
        currency=row["currency"],
        status=row["status"],
        checkout_id=row["checkout_id"],
        answers_snapshot=row["answers_snapshot"],
        expires_at=read_as_utc(row["expires_at"]),
        created_at=read_as_utc(row["created_at"]),
        updated_at=read_as_utc(row["updated_at"]),
    )


def _payment(row: Row) -> SourcePayment:
    raw = row["raw_event"]
    return SourcePayment(
        payment_row_id=row["payment_row_id"],
        reservation_id=row["reservation_id"],
        provider=row["provider"],
        # A blank id names no payment, as a NULL one does.
        provider_payment_id=(row["provider_payment_id"] or "").strip() or None,
        tx_id=row["provider_tx_id"],
        checkout_id=row["checkout_id"],
        status=row["status"],
        amount=row["amount"],
        currency=row["currency"],
        raw_event=None if raw is None else raw.encode(),
        paid_at=_time_or_none(row["paid_at"]),
        created_at=read_as_utc(row["created_at"]),
        updated_at=read_as_utc(row["updated_at"]),
    )
