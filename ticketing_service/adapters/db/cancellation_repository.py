"""Registrations given up and events cancelled, in Postgres.

Lock order stays the one of `changes.py`: a reservation, then its tier (a folded seat is taken
back from the tier's `accepted_count`). An event's cancellation first takes the event (as
settings updates do), then its tiers; its batches take the fold's advisory lock, so the sweeper's
fold (which touches tiers in no set order) never runs beside a batch that touches several tiers,
then the batch's tiers in their order, as settings updates take them, and the settings row last.
"""

from __future__ import annotations

from ticketing_service.adapters.db.changes import Changes, Protections
from ticketing_service.adapters.db.reservation_rows import (
    FROM,
    columns,
    reservation_from,
    snapshot,
)
from ticketing_service.adapters.db.settings_repository import LOCK_EVENT_TIERS
from ticketing_service.adapters.db.sweep_repository import FOLD_LOCK_KEY
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.refunds import EventCancellation
from ticketing_service.domain.reservations import LockedReservation, Reservation

# The registration is cancelled, the reservation says so, and a seat already folded into the
# tier's count is taken out of it (one not folded yet stops counting with the status).
_CANCEL_REGISTRATION = (
    "WITH g AS (UPDATE registrations SET status = 'cancelled', cancel_time = now()"
    " WHERE reservation_id = %(id)s AND status = 'accepted' RETURNING registration_id),"
    " r AS (UPDATE reservations SET status = 'registration_cancelled', update_time = now()"
    " WHERE reservation_id = %(id)s AND status = 'confirmed' AND EXISTS (SELECT 1 FROM g)"
    " RETURNING *),"
    " t AS (UPDATE tiers SET accepted_count = tiers.accepted_count - 1 FROM r"
    " WHERE tiers.event_id = r.event_id AND tiers.tier_id = r.tier_id AND r.seat_folded),"
    " e AS (INSERT INTO registration_events (type, reservation_id, reservation)"
    f" SELECT %(event)s, r.reservation_id, {snapshot('r', 'g.registration_id')} FROM r, g)"
    f" SELECT {columns('r', 'g.registration_id')} FROM r, g"
)
# Tiers of one event, in their order (the order settings updates take them in).
_LOCK_TIERS = (
    "SELECT 1 FROM tiers WHERE event_id = %(e)s AND tier_id = ANY(%(ids)s)"
    " ORDER BY tier_id FOR UPDATE"
)
_EVENT_CANCELLED = (
    "SELECT cancel_time IS NOT NULL AS cancelled FROM ticketing_settings WHERE event_id = %(e)s"
)
_CANCEL_EVENT = (
    "UPDATE ticketing_settings SET cancel_time = now(), cancel_request_id = %(q)s"
    " WHERE event_id = %(e)s AND cancel_time IS NULL"
)
_LIVE = "r.status IN ('pending_payment', 'confirmed')"
_PROGRESS = (
    "SELECT s.cancel_time, s.cancel_done_time IS NOT NULL AS done, s.cancel_done_count,"
    f" (SELECT count(*) FROM reservations r WHERE r.event_id = s.event_id AND {_LIVE}) AS left,"
    " f.pending, f.succeeded, f.failed FROM ticketing_settings s,"
    " LATERAL (SELECT count(*) FILTER (WHERE x.status IN ('requested', 'pending')) AS pending,"
    " count(*) FILTER (WHERE x.status = 'succeeded') AS succeeded,"
    " count(*) FILTER (WHERE x.status = 'failed') AS failed"
    " FROM refunds x JOIN reservations r USING (reservation_id)"
    " WHERE r.event_id = s.event_id) f"
    " WHERE s.event_id = %(e)s AND s.cancel_time IS NOT NULL"
)
_NEXT_EVENT = (
    "SELECT event_id FROM ticketing_settings WHERE cancel_time IS NOT NULL"
    " AND cancel_done_time IS NULL ORDER BY cancel_time LIMIT 1"
)
_LOCK_BATCH = (
    f"SELECT {columns('r', 'g.registration_id')}, statement_timestamp() AS db_now FROM {FROM}"
    f" WHERE r.event_id = %(e)s AND {_LIVE} ORDER BY r.reservation_id LIMIT %(n)s"
    " FOR UPDATE OF r SKIP LOCKED"
)
_FINISH = (
    "UPDATE ticketing_settings SET cancel_done_count = cancel_done_count + %(n)s,"
    " cancel_done_time = CASE WHEN NOT EXISTS (SELECT 1 FROM reservations r"
    f" WHERE r.event_id = %(e)s AND {_LIVE}) THEN now() END"
    " WHERE event_id = %(e)s RETURNING cancel_done_time IS NOT NULL AS done"
)


class SqlCancellationRepository:
    """The CancellationRepository port on one transaction's connection."""

    def __init__(self, changes: Changes, protections: Protections) -> None:
        self._changes = changes
        self._tx = changes.tx
        # Off only in the tests that show why the event's tiers are locked.
        self._locking = protections.locking
        self._pause = protections.pause

    async def cancel_registration(self, reservation_id: str) -> Reservation:
        """Cancel the (locked, confirmed) reservation's registration; its seat is free again."""
        cancelled = await self._changes.reservation(
            RegistrationEventType.REGISTRATION_CANCELLED, _CANCEL_REGISTRATION, id=reservation_id
        )
        assert cancelled is not None, "a locked confirmed reservation has an accepted registration"
        return cancelled

    async def cancel_event(self, event_id: str, request_id: str | None) -> None:
        """Lock the event's tiers, then mark it cancelled unless it already is.

        A StartPaidRegistration that counted a seat holds its tier's lock until its hold commits,
        so this waits for it, and the cancellation's batches then find that hold. Without the
        wait, a hold could commit after the last batch, live on an event marked done, and its
        payment be confirmed without ever taking the tier lock that reads the cancellation.
        """
        if self._locking:
            await self._tx.all(LOCK_EVENT_TIERS, {"e": event_id})
        await self._tx.one(_CANCEL_EVENT, {"e": event_id, "q": request_id})

    async def event_cancelled(self, event_id: str, tier_id: str) -> bool:
        """Lock the tier, then read whether its event is cancelled (a statement of its own,
        after the lock: one statement would read the event from before the wait)."""
        if self._locking:
            await self._tx.all(_LOCK_TIERS, {"e": event_id, "ids": [tier_id]})
        row = await self._tx.one(_EVENT_CANCELLED, {"e": event_id})
        await self._pause("event_read")
        return row is not None and bool(row["cancelled"])

    async def progress(self, event_id: str) -> EventCancellation | None:
        """How far the event's cancellation is."""
        row = await self._tx.one(_PROGRESS, {"e": event_id})
        if row is None:
            return None
        done = int(row["cancel_done_count"])
        return EventCancellation(
            event_id=event_id,
            cancel_time=row["cancel_time"],
            done=row["done"],
            reservations_done=done,
            reservations_total=done + int(row["left"]),
            refunds_pending=int(row["pending"]),
            refunds_succeeded=int(row["succeeded"]),
            refunds_failed=int(row["failed"]),
        )

    async def next_batch(self, limit: int) -> tuple[str, list[LockedReservation]] | None:
        """The first event being cancelled and a locked batch of what is left of it."""
        event = await self._tx.one(_NEXT_EVENT)
        if event is None:
            return None
        event_id = event["event_id"]
        await self._tx.one(
            "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))", {"key": FOLD_LOCK_KEY}
        )
        rows = await self._tx.all(_LOCK_BATCH, {"e": event_id, "n": limit})
        # The batch's tiers in their order before a seat is taken back from any, as a settings
        # update takes them (settings_repository.lock_tiers_in_use): taken reservation by
        # reservation, two tiers could be taken in the other order, and each wait for the other.
        tiers = sorted({row["tier_id"] for row in rows})
        if tiers and self._locking:
            await self._tx.all(_LOCK_TIERS, {"e": event_id, "ids": tiers})
        return event_id, [LockedReservation(reservation_from(row), row["db_now"]) for row in rows]

    async def finish(self, event_id: str, cancelled: int) -> bool:
        """Count what a batch cancelled; mark the cancellation done when nothing is left."""
        await self._pause("cancellation_finishing")
        row = await self._tx.one(_FINISH, {"e": event_id, "n": cancelled})
        return row is not None and bool(row["done"])
