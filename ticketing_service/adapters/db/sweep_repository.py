"""The sweeper's batches in Postgres: overdue holds expired, confirmed seats folded."""

from __future__ import annotations

from datetime import datetime

from ticketing_service.adapters.db.changes import Changes
from ticketing_service.adapters.db.events_repository import append_events
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.service_layer.ports import PrunedRecords

# Held by the one sweeper folding confirmed seats into their tiers (fold_confirmed_seats).
FOLD_LOCK_KEY = "ticketing:confirmed-seat-folding"


class SqlSweepRepository:
    """The SweepRepository port on one transaction's connection."""

    def __init__(self, changes: Changes) -> None:
        self._changes = changes
        self._tx = changes.tx

    async def expire_overdue(self, batch_size: int) -> int:
        """Expire a batch of overdue holds that never got a checkout; rows locked elsewhere are
        left for the next sweep. A hold with a checkout may have been paid: reconciliation asks
        before it expires it (its seat is free at its end either way: counts read expire_time)."""
        rows = await self._tx.all(
            "UPDATE reservations SET status = 'expired', update_time = now()"
            " WHERE reservation_id IN (SELECT reservation_id FROM reservations"
            " WHERE status = 'pending_payment' AND expire_time <= now() AND checkout_id IS NULL"
            " ORDER BY expire_time LIMIT %(n)s FOR UPDATE SKIP LOCKED) RETURNING reservation_id",
            {"n": batch_size},
        )
        if rows:
            expired = [str(r["reservation_id"]) for r in rows]
            await append_events(self._tx, RegistrationEventType.RESERVATION_EXPIRED, expired)
            self._changes.appended[RegistrationEventType.RESERVATION_EXPIRED] += len(expired)
        return len(rows)

    async def fold_confirmed_seats(self, batch_size: int) -> int:
        """Add a batch of confirmed seats to their tiers' accepted_count, in one statement.

        One process folds at a time (0 if another is folding now). A batch updates every tier
        it touches, in no set order, so two sweepers folding at once (workers or replicas) could
        deadlock on two tiers; the benchmark saw that, with StartPaidRegistrations queued for
        one of the tiers drawn into the cycle and failed.
        """
        claimed = await self._tx.one(
            "SELECT pg_try_advisory_xact_lock(hashtextextended(%(key)s, 0)) AS claimed",
            {"key": FOLD_LOCK_KEY},
        )
        if claimed is None or not claimed["claimed"]:
            return 0
        rows = await self._tx.all(
            "WITH folded AS (UPDATE reservations SET seat_folded = true WHERE reservation_id IN"
            " (SELECT reservation_id FROM reservations WHERE status = 'confirmed'"
            " AND NOT seat_folded LIMIT %(n)s FOR UPDATE SKIP LOCKED) RETURNING event_id, tier_id),"
            " per_tier AS (SELECT event_id, tier_id, count(*) AS n FROM folded GROUP BY 1, 2)"
            " UPDATE tiers t SET accepted_count = t.accepted_count + p.n FROM per_tier p"
            " WHERE t.event_id = p.event_id AND t.tier_id = p.tier_id RETURNING p.n",
            {"n": batch_size},
        )
        return sum(int(r["n"]) for r in rows)

    async def prune_records_before(self, kind: PrunedRecords, cutoff: datetime, limit: int) -> int:
        """Delete up to `limit` records of `kind` from before `cutoff` (a removed tier only when
        no reservation refers to it); return how many."""
        row = await self._tx.one(
            f"WITH pruned AS ({_PRUNE[kind]} RETURNING 1) SELECT count(*) AS n FROM pruned",
            {"cutoff": cutoff, "n": limit},
        )
        assert row is not None
        return int(row["n"])


# A delivery id older than the retention is not retried any more (and a retry would still be
# handled by the ordinary rules); a mismatch's record was announced on the feed long ago; a
# tier tombstone is kept only while a reservation still refers to it. Their order does not
# matter, and no index orders them by age: LIMIT alone lets a scan stop at the first `n`.
_PRUNE: dict[PrunedRecords, str] = {
    "webhook_deliveries": (
        "DELETE FROM webhook_deliveries WHERE (scheme, delivery_id) IN (SELECT scheme,"
        " delivery_id FROM webhook_deliveries WHERE create_time < %(cutoff)s LIMIT %(n)s)"
    ),
    "payment_mismatches": (
        "DELETE FROM payment_mismatches WHERE mismatch_id IN (SELECT mismatch_id"
        " FROM payment_mismatches WHERE create_time < %(cutoff)s LIMIT %(n)s)"
    ),
    "tiers": (
        "DELETE FROM tiers WHERE (event_id, tier_id) IN (SELECT t.event_id, t.tier_id"
        " FROM tiers t WHERE t.delete_time < %(cutoff)s AND NOT EXISTS (SELECT 1"
        " FROM reservations r WHERE r.event_id = t.event_id AND r.tier_id = t.tier_id)"
        " LIMIT %(n)s)"
    ),
}
