"""Reconciliation's bookkeeping in Postgres: which checkouts are due to be asked about, leased
to one replica at a time, and what was learnt.

A replica claims a batch in one short transaction (`FOR UPDATE SKIP LOCKED`, then a lease), asks
the payment service outside any transaction, and applies each answer in a transaction of its
own under the reservation's row lock. A replica that dies mid-way leaves leases that run out,
and another replica asks again: asking twice is harmless.
"""

from __future__ import annotations

from datetime import timedelta

from ticketing_service.adapters.db.changes import Changes
from ticketing_service.adapters.db.reservation_rows import CHANGED, columns, reservation_from
from ticketing_service.adapters.db.transaction import Row
from ticketing_service.domain.reservations import Reservation
from ticketing_service.service_layer.ports import ReconcileCandidate

_LEASABLE = "(reconcile_lease_until IS NULL OR reconcile_lease_until < now())"
# Three kinds are due (each its own scan of a partial index): live holds old enough and never
# asked, holds past their end (asked before they are expired), and follow-ups due.
_CLAIM = (
    "WITH due AS (SELECT reservation_id FROM reservations WHERE reservation_id IN ("
    "(SELECT reservation_id FROM reservations WHERE status = 'pending_payment'"
    " AND checkout_id IS NOT NULL AND asked_time IS NULL"
    f" AND create_time <= now() - make_interval(secs => %(ask_after)s) AND {_LEASABLE}"
    " ORDER BY create_time LIMIT %(n)s)"
    " UNION ALL (SELECT reservation_id FROM reservations WHERE status = 'pending_payment'"
    f" AND checkout_id IS NOT NULL AND expire_time <= now() AND {_LEASABLE}"
    " ORDER BY expire_time LIMIT %(n)s)"
    " UNION ALL (SELECT reservation_id FROM reservations WHERE next_reconcile_time <= now()"
    f" AND status IN ('expired', 'cancelled') AND {_LEASABLE}"
    " ORDER BY next_reconcile_time LIMIT %(n)s))"
    f" AND {_LEASABLE} LIMIT %(n)s FOR UPDATE SKIP LOCKED),"
    " r AS (UPDATE reservations SET reconcile_lease_until = now() + make_interval(secs =>"
    " %(lease)s) FROM due WHERE reservations.reservation_id = due.reservation_id RETURNING"
    " reservations.*)"
    f" SELECT {columns('r', 'g.registration_id')}, r.hold_extended, r.reconcile_attempts"
    f" FROM {CHANGED}"
)
_READ = (
    f"SELECT {columns('r', 'g.registration_id')}, r.hold_extended, r.reconcile_attempts"
    " FROM reservations r LEFT JOIN registrations g ON g.reservation_id = r.reservation_id"
    " WHERE r.reservation_id = %(id)s"
)


class SqlReconciliationRepository:
    """The ReconciliationRepository port on one transaction's connection."""

    def __init__(self, changes: Changes) -> None:
        self._tx = changes.tx

    async def claim_due(
        self, ask_after: timedelta, lease: timedelta, limit: int
    ) -> list[ReconcileCandidate]:
        """Lease up to `limit` reservations whose checkout is due to be asked about."""
        rows = await self._tx.all(
            _CLAIM,
            {
                "ask_after": ask_after.total_seconds(),
                "lease": lease.total_seconds(),
                "n": limit,
            },
        )
        return [_candidate(row) for row in rows]

    async def candidate(self, reservation_id: str) -> ReconcileCandidate | None:
        """One reservation with what reconciliation knows of it (read; the caller locks)."""
        row = await self._tx.one(_READ, {"id": reservation_id})
        return None if row is None else _candidate(row)

    async def keep_hold(self, reservation_id: str, grace: timedelta) -> Reservation | None:
        """Extend a pending hold's end by `grace`, once; None if it was not pending."""
        row = await self._tx.one(
            "WITH r AS (UPDATE reservations SET expire_time = expire_time"
            " + make_interval(secs => %(grace)s), hold_extended = true, asked_time = now(),"
            " reconcile_lease_until = NULL, update_time = now() WHERE reservation_id = %(id)s"
            " AND status = 'pending_payment' AND NOT hold_extended RETURNING *)"
            f" SELECT {columns('r', 'g.registration_id')} FROM {CHANGED}",
            {"id": reservation_id, "grace": grace.total_seconds()},
        )
        return None if row is None else reservation_from(row)

    async def asked(
        self, reservation_id: str, follow_up_after: timedelta | None, attempts: int
    ) -> None:
        """Record that it was asked now, when to ask again (None: never); the lease ends."""
        after = None if follow_up_after is None else follow_up_after.total_seconds()
        await self._tx.one(
            "UPDATE reservations SET asked_time = now(), reconcile_attempts = %(attempts)s,"
            " next_reconcile_time = now() + make_interval(secs => %(after)s),"
            " reconcile_lease_until = NULL WHERE reservation_id = %(id)s",
            {"id": reservation_id, "after": after, "attempts": attempts},
        )

    async def awaiting_follow_up(self) -> int:
        """How many reservations are still to be asked about again."""
        row = await self._tx.one(
            "SELECT count(*) AS n FROM reservations WHERE next_reconcile_time IS NOT NULL"
        )
        return 0 if row is None else int(row["n"])


def _candidate(row: Row) -> ReconcileCandidate:
    return ReconcileCandidate(
        reservation_from(row), row["hold_extended"], row["reconcile_attempts"]
    )
