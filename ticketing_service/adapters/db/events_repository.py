"""The registration event feed in Postgres: a transactional outbox numbered by a sequencer.

Why a sequencer. A sequence number taken when the row is inserted is allocated in insert
order but becomes visible in commit order: a transaction can take number 10, commit after
another took 11 and committed, and a consumer that already moved past 11 would never see 10.
So writers insert events with no number, in the same transaction as the change they describe,
and a sequencer numbers them afterwards: in one transaction, under an advisory lock that makes
it the only numberer across all replicas, it gives the committed unnumbered rows the numbers
after the last one it gave (kept in a row of its own, so pruning cannot make it reuse one).
A row that commits later can only get a later number, numbers have no gaps (so a consumer
can tell it missed nothing), and readers see a run's numbers all at once because they are
assigned in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ticketing_service.adapters.db.refund_repository import refund_from
from ticketing_service.adapters.db.reservation_rows import reservation_from, snapshot
from ticketing_service.adapters.db.transaction import Row, Transaction
from ticketing_service.domain.events import (
    MismatchedPayment,
    RegistrationEvent,
    RegistrationEventType,
)

SEQUENCER_LOCK_KEY = "ticketing:registration-event-sequencer"
NEW_EVENTS_CHANNEL = "ticketing_registration_events"


_APPEND = (
    "INSERT INTO registration_events (type, reservation_id, reservation)"
    f" SELECT %(type)s, r.reservation_id, {snapshot('r', 'g.registration_id')} FROM reservations r"
    " LEFT JOIN registrations g ON g.reservation_id = r.reservation_id"
    " WHERE r.reservation_id = ANY(CAST(%(ids)s AS uuid[])) ORDER BY r.reservation_id"
)
_LOCK_SEQUENCER = "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))"
# Numbers up to `n` pending events after the last number given, records the new last number
# and announces them, in one statement; it reports how many it numbered. Bounded, so a backlog
# after a long outage is numbered batch by batch, each well within the statement timeout.
_NUMBER_PENDING = (
    "WITH base AS (SELECT last_sequence AS top FROM registration_event_sequencer),"
    " pending AS (SELECT event_row_id, row_number() OVER (ORDER BY event_row_id) AS n"
    " FROM (SELECT event_row_id FROM registration_events WHERE sequence IS NULL"
    " ORDER BY event_row_id LIMIT %(n)s) batch),"
    " numbered AS (UPDATE registration_events e SET sequence = base.top + pending.n"
    " FROM pending, base WHERE e.event_row_id = pending.event_row_id RETURNING e.sequence),"
    " top AS (UPDATE registration_event_sequencer"
    " SET last_sequence = (SELECT max(sequence) FROM numbered)"
    " WHERE EXISTS (SELECT 1 FROM numbered) RETURNING last_sequence),"
    " announced AS (SELECT pg_notify(%(channel)s, '') FROM top)"
    " SELECT (SELECT count(*) FROM numbered) AS numbered,"
    " (SELECT count(*) FROM announced) AS announced"
)


# The page is read first (the LIMIT bounds the work), then cut where the running size of the
# snapshots passes the budget; the first event is always kept, so a page is never empty while
# events remain.
_LIST_AFTER = (
    "SELECT sequence, type, reservation, create_time, details, rows_read FROM ("
    " SELECT *, sum(size) OVER (ORDER BY sequence) AS running, count(*) OVER () AS rows_read"
    " FROM (SELECT sequence, type, reservation, create_time, details,"
    " octet_length(reservation::text) + coalesce(octet_length(details::text), 0) AS size"
    " FROM registration_events"
    " WHERE sequence > %(after)s ORDER BY sequence LIMIT %(limit)s) AS read"
    ") AS page WHERE running <= %(max_bytes)s OR running = size ORDER BY sequence"
)


async def append_events(
    tx: Transaction, event_type: RegistrationEventType, reservation_ids: Sequence[str]
) -> None:
    """Append one unnumbered event per reservation, in the caller's transaction."""
    await tx.one(_APPEND, {"type": event_type.value, "ids": list(reservation_ids)})


class SqlEventsRepository:
    """Reading, numbering and pruning the feed on one transaction's connection."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def sequence_pending(self, limit: int) -> int:
        """Number up to `limit` committed unnumbered events after the current maximum; return
        how many.

        The count of numbered events is announced on NEW_EVENTS_CHANNEL when this commits.
        """
        # Two statements: the numbering starts after the lock is granted, so its snapshot
        # includes everything numbered by the previous holder of the lock.
        await self._tx.one(_LOCK_SEQUENCER, {"key": SEQUENCER_LOCK_KEY})
        numbered = await self._tx.one(_NUMBER_PENDING, {"channel": NEW_EVENTS_CHANNEL, "n": limit})
        assert numbered is not None
        return int(numbered["numbered"])

    async def list_after(
        self, after_sequence: int, limit: int, max_bytes: int
    ) -> tuple[list[RegistrationEvent], bool]:
        """The numbered events after `after_sequence`, in order, and whether more may follow.

        At most `limit` events, and no more than fit in `max_bytes` of stored snapshots (but
        always the first): a snapshot's JSON text is larger than the event's protobuf encoding.
        """
        rows = await self._tx.all(
            _LIST_AFTER, {"after": after_sequence, "limit": limit, "max_bytes": max_bytes}
        )
        read = int(rows[0]["rows_read"]) if rows else 0
        return [_event(row) for row in rows], read == limit or len(rows) < read

    async def retained_range(self) -> tuple[int | None, int]:
        """The lowest number still kept (None when none is) and the last number given."""
        row = await self._tx.one(
            "SELECT (SELECT min(sequence) FROM registration_events) AS first_kept,"
            " (SELECT last_sequence FROM registration_event_sequencer) AS last_given"
        )
        assert row is not None
        first_kept = None if row["first_kept"] is None else int(row["first_kept"])
        return first_kept, int(row["last_given"])

    async def first_kept_after(self, cutoff: datetime) -> int | None:
        """The lowest number of an event created at or after `cutoff` (None: none is)."""
        row = await self._tx.one(
            "SELECT min(sequence) AS first FROM registration_events"
            " WHERE create_time >= %(cutoff)s",
            {"cutoff": cutoff},
        )
        assert row is not None
        return None if row["first"] is None else int(row["first"])

    async def prune_before(self, cutoff: datetime, below: int | None, limit: int) -> int:
        """Delete up to `limit` numbered events created before `cutoff` and numbered below
        `below` (None: any number), the lowest numbers first; return how many."""
        row = await self._tx.one(
            "WITH pruned AS (DELETE FROM registration_events WHERE event_row_id IN"
            " (SELECT event_row_id FROM registration_events WHERE create_time < %(cutoff)s"
            " AND sequence IS NOT NULL"
            " AND (CAST(%(below)s AS bigint) IS NULL OR sequence < %(below)s)"
            " ORDER BY sequence LIMIT %(n)s) RETURNING 1)"
            " SELECT count(*) AS n FROM pruned",
            {"cutoff": cutoff, "below": below, "n": limit},
        )
        assert row is not None
        return int(row["n"])


def _event(row: Row) -> RegistrationEvent:
    """An event row; `details` is the mismatched payment or the refund, by the event's type."""
    details, event_type = row["details"], RegistrationEventType(row["type"])
    mismatch = refund = None
    if details is not None and event_type is RegistrationEventType.PAYMENT_MISMATCH:
        mismatch = _mismatch(details)
    elif details is not None:
        refund = refund_from(details)
    return RegistrationEvent(
        sequence=row["sequence"],
        type=event_type,
        reservation=reservation_from(row["reservation"]),
        create_time=row["create_time"],
        mismatch=mismatch,
        refund=refund,
    )


def _mismatch(details: dict[str, Any]) -> MismatchedPayment:
    return MismatchedPayment(
        checkout_id=details["checkout_id"],
        payment_id=details["payment_id"],
        provider=details["provider"],
        amount=int(details["amount"]),
        currency_code=details["currency_code"],
        fields=tuple(details["fields"]),
    )
