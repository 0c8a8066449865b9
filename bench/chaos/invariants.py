"""What must hold in the database after the chaos run, each checked by one query.

`settled` says when the background work has caught up (bounded by the caller); `check` then
gives each invariant's verdict. `paid` is what the payment service says was paid: the
reservation ids of its paid checkouts, the truth the database must agree with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

OVERSOLD = """
SELECT t.event_id, t.tier_id, t.capacity,
       (SELECT count(*) FROM registrations g
         WHERE g.event_id = t.event_id AND g.tier_id = t.tier_id AND g.status = 'accepted'),
       (SELECT count(*) FROM reservations r
         WHERE r.event_id = t.event_id AND r.tier_id = t.tier_id
           AND r.status = 'pending_payment' AND r.expire_time > now())
  FROM tiers t WHERE t.event_id = ANY($1::text[])
"""
TWO_REGISTRATIONS = """
SELECT event_id, user_id, count(*) FROM registrations
 WHERE status = 'accepted' AND event_id = ANY($1::text[])
 GROUP BY event_id, user_id HAVING count(*) > 1
"""
# Paid per the payment service, or per a payment row: a registration, or paid_unfulfilled.
UNSETTLED_PAID = """
SELECT r.reservation_id::text, r.status FROM reservations r
  LEFT JOIN registrations g ON g.reservation_id = r.reservation_id
 WHERE r.event_id = ANY($1::text[])
   AND (r.reservation_id = ANY($2::uuid[])
        OR EXISTS (SELECT 1 FROM payments p
                    WHERE p.reservation_id = r.reservation_id AND p.status = 'paid'))
   AND NOT ((r.status = 'confirmed' AND g.registration_id IS NOT NULL)
            OR r.status = 'paid_unfulfilled')
"""
# A payment that got no seat is refunded in full by itself (TICKETING_AUTO_REFUND); a refund
# still owed is background work not yet done, a failed one a money bug.
UNREFUNDED = """
SELECT r.reservation_id::text, r.amount, r.refunded_amount FROM reservations r
 WHERE r.event_id = ANY($1::text[]) AND r.status = 'paid_unfulfilled'
   AND r.refunded_amount <> r.amount
"""
REFUNDS = """
SELECT f.status, count(*) FROM refunds f JOIN reservations r USING (reservation_id)
 WHERE r.event_id = ANY($1::text[]) GROUP BY f.status
"""
OVERDUE_HOLDS = """
SELECT reservation_id::text, expire_time FROM reservations
 WHERE status = 'pending_payment' AND expire_time + make_interval(secs => $1) < now()
"""
LIVE_HOLDS = """
SELECT count(*) FROM reservations
 WHERE status = 'pending_payment' AND event_id = ANY($1::text[])
"""
FEED = """
SELECT count(*), count(sequence), coalesce(min(sequence), 0), coalesce(max(sequence), 0)
  FROM registration_events
"""
STATUSES = """
SELECT status, count(*) FROM reservations WHERE event_id = ANY($1::text[])
 GROUP BY status ORDER BY count(*) DESC
"""
PAID_FOUND = "SELECT count(*) FROM reservations WHERE reservation_id = ANY($1::uuid[])"


async def _refunds(connection: asyncpg.Connection, events: Sequence[str]) -> dict[str, int]:
    """The run's refunds, counted by status."""
    return {str(row[0]): int(row[1]) for row in await connection.fetch(REFUNDS, list(events))}


async def _feed(connection: asyncpg.Connection) -> tuple[int, int, int, int]:
    """Feed events, how many are numbered, the first and the last number."""
    row = await connection.fetchrow(FEED)
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


@dataclass(frozen=True)
class Verdict:
    """One invariant: whether it holds, and what was seen."""

    name: str
    holds: bool
    seen: str


async def settled(
    url: str, events: Sequence[str], paid: Sequence[str], sweep_seconds: float
) -> list[str]:
    """What the background work has yet to do (empty once it has caught up)."""
    connection = await asyncpg.connect(url)
    try:
        waiting = []
        if unsettled := await connection.fetch(UNSETTLED_PAID, list(events), list(paid)):
            waiting.append(f"{len(unsettled)} paid reservation(s) without a seat or refund")
        if overdue := await connection.fetch(OVERDUE_HOLDS, sweep_seconds):
            waiting.append(f"{len(overdue)} hold(s) past their end")
        # Every hold ends, paid or expired: waiting for the last ones shows the sweeper at work
        # after the faults, not only that nothing is overdue yet.
        if live := await connection.fetchval(LIVE_HOLDS, list(events)):
            waiting.append(f"{live} hold(s) not yet ended")
        refunds = await _refunds(connection, events)
        if owed := refunds.get("requested", 0) + refunds.get("pending", 0):
            waiting.append(f"{owed} refund(s) not yet settled")
        rows, numbered, _, _ = await _feed(connection)
        if rows != numbered:
            waiting.append(f"{rows - numbered} feed event(s) not yet numbered")
        return waiting
    finally:
        await connection.close()


async def last_numbered(url: str) -> int:
    """The feed's last number (0 before the first)."""
    connection = await asyncpg.connect(url)
    try:
        return (await _feed(connection))[3]
    finally:
        await connection.close()


async def reservation_statuses(url: str, events: Sequence[str]) -> dict[str, int]:
    """How many of the run's reservations ended in each status."""
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch(STATUSES, list(events))
        return {str(row[0]): int(row[1]) for row in rows}
    finally:
        await connection.close()


async def check(
    url: str, events: Sequence[str], paid: Sequence[str], sweep_seconds: float
) -> list[Verdict]:
    """Every invariant's verdict."""
    connection = await asyncpg.connect(url)
    try:
        tiers = await connection.fetch(OVERSOLD, list(events))
        oversold = [t for t in tiers if t[2] is not None and t[3] + t[4] > t[2]]
        registered = sum(t[3] for t in tiers)
        doubles = await connection.fetch(TWO_REGISTRATIONS, list(events))
        unsettled = await connection.fetch(UNSETTLED_PAID, list(events), list(paid))
        found = await connection.fetchval(PAID_FOUND, list(paid))
        overdue = await connection.fetch(OVERDUE_HOLDS, sweep_seconds)
        unrefunded = await connection.fetch(UNREFUNDED, list(events))
        refunds = await _refunds(connection, events)
        rows, numbered, first, last = await _feed(connection)
    finally:
        await connection.close()
    gapless = rows == numbered and (rows == 0 or (first == 1 and last == rows))
    return [
        Verdict(
            "no tier oversold",
            not oversold,
            f"{len(tiers)} tiers, {registered} seats taken"
            + (f"; oversold: {[tuple(t) for t in oversold[:3]]}" if oversold else ""),
        ),
        Verdict(
            "no user with two live registrations for one event",
            not doubles,
            f"{len(doubles)} found" + (f", e.g. {tuple(doubles[0])}" if doubles else ""),
        ),
        Verdict(
            "every paid reservation has a registration or is paid_unfulfilled",
            not unsettled and found == len(paid),
            f"{len(paid)} paid at the payment service, {found} of them known here,"
            f" {len(unsettled)} without a seat or refund"
            + (f", e.g. {tuple(unsettled[0])}" if unsettled else ""),
        ),
        Verdict(
            "every payment that got no seat was refunded in full, and no refund failed",
            not unrefunded and not refunds.get("failed"),
            f"refunds by status: {refunds or 'none'}"
            + (f"; not refunded: {tuple(unrefunded[0])}" if unrefunded else ""),
        ),
        Verdict(
            "no live hold older than its end plus the sweep interval",
            not overdue,
            f"{len(overdue)} found" + (f", e.g. {tuple(overdue[0])}" if overdue else ""),
        ),
        Verdict(
            "the feed is numbered 1..N without gaps",
            gapless,
            f"{rows} events, {numbered} numbered, sequences {first}..{last}",
        ),
    ]
