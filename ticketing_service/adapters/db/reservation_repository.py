"""Reservations, registrations, payments and the webhook inbox in Postgres.

Locking discipline (every lock is transaction-scoped, so a crash or rollback releases it):
- a user's attempts at one event are serialized by an advisory lock on (event, user);
- a reservation's confirmations by its row lock (`SELECT … FOR UPDATE`);
- seat counting by the tier's row lock;
- folding confirmed seats into their tiers by an advisory lock one sweeper holds at a time
  (a fold touches several tiers in no set order; the others skip their turn).
Order is always user → reservation → tier; `lock_timeout` turns any unexpected wait into
`CONCURRENT_UPDATE` instead of a hang.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ticketing_service.adapters.db import reservation_statements as sql
from ticketing_service.adapters.db.events_repository import append_events
from ticketing_service.adapters.db.transaction import Row, Transaction
from ticketing_service.domain.errors import TierNotFound
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reservations import (
    Answer,
    ConfirmOutcome,
    Delivery,
    DeliveryRecord,
    LockedReservation,
    PaymentClaim,
    Reservation,
    ReservationStatus,
    TierSeats,
)
from ticketing_service.service_layer.checkouts import Checkout

Pause = Callable[[str], Awaitable[None]]
# Held by the one sweeper folding confirmed seats into their tiers (fold_confirmed_seats).
FOLD_LOCK_KEY = "ticketing:confirmed-seat-folding"


async def no_pause(point: str) -> None:
    """The production pause: none."""


class SqlReservationRepository:
    """The ReservationRepository port on one transaction's connection.

    `locking=False`, `clock_after_lock=False` and `pause` exist only for the tests that prove
    each protection matters (they remove it and force the interleaving it prevents); production
    code never sets them.
    """

    def __init__(
        self,
        tx: Transaction,
        *,
        locking: bool = True,
        clock_after_lock: bool = True,
        pause: Pause = no_pause,
    ) -> None:
        self._tx = tx
        self._locking = locking
        self._read_locked = (
            sql.READ_LOCKED if clock_after_lock else sql.READ_LOCKED_BY_TRANSACTION_START
        )
        self._pause = pause
        # The events this transaction appended to the feed, by type: once it commits, the unit
        # of work hands them on (the sequencer numbers them, the metrics count them).
        self.appended: Counter[RegistrationEventType] = Counter()

    async def _changed(
        self, event: RegistrationEventType, statement: str, **params: Any
    ) -> Reservation | None:
        """Run a statement that changes a reservation and appends `event`; the row after."""
        row = await self._tx.one(statement, {"event": event.value, **params})
        if row is None:
            return None
        self.appended[event] += 1
        return _reservation(row)

    async def lock_user(self, event_id: str, user_id: str) -> None:
        """Serialize one user's registration attempts at one event (the row may not exist yet)."""
        if self._locking:
            key = f"registration:{event_id}:{user_id}"
            await self._tx.one(
                "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))", {"key": key}
            )

    async def registration_id_of(self, event_id: str, user_id: str) -> str | None:
        """The user's accepted registration at the event, if any."""
        row = await self._tx.one(
            "SELECT registration_id FROM registrations WHERE event_id = %(e)s AND user_id = %(u)s",
            {"e": event_id, "u": user_id},
        )
        return None if row is None else str(row["registration_id"])

    async def lock_pending_of(self, event_id: str, user_id: str) -> LockedReservation | None:
        """Lock and read the user's pending hold at the event."""
        lock = " FOR UPDATE" if self._locking else ""
        row = await self._tx.one(
            "SELECT reservation_id FROM reservations WHERE event_id = %(e)s AND user_id = %(u)s"
            f" AND status = 'pending_payment'{lock}",
            {"e": event_id, "u": user_id},
        )
        # Read in a statement of its own, after the lock (see `lock`).
        read = (
            None
            if row is None
            else await self._tx.one(self._read_locked, {"id": row["reservation_id"]})
        )
        await self._pause("pending_checked")
        return None if read is None else _locked(read)

    async def latest_of(self, event_id: str, user_id: str) -> Reservation | None:
        """The user's most recently made reservation for the event."""
        row = await self._tx.one(sql.LATEST_OF, {"e": event_id, "u": user_id})
        return None if row is None else _reservation(row)

    async def lock(self, reservation_id: str) -> LockedReservation | None:
        """Lock the reservation's row and read it with the database's clock.

        The lock is taken in one statement and the read is the next one. In READ COMMITTED a
        statement that waits for a row lock returns the row's newest version but joins and
        subqueries from its snapshot taken before the wait, so a lock-and-read in one statement
        could pair a confirmed reservation with no registration. The read after the lock sees
        everything committed by whoever held the lock before us.
        """
        lock = " FOR UPDATE" if self._locking else ""
        params = {"id": reservation_id}
        locked = await self._tx.one(
            f"SELECT reservation_id FROM reservations WHERE reservation_id = %(id)s{lock}", params
        )
        read = None if locked is None else await self._tx.one(self._read_locked, params)
        await self._pause("reservation_locked")
        return None if read is None else _locked(read)

    async def lock_tier_seats(self, event_id: str, tier_id: str) -> TierSeats:
        """Lock the tier row, then count its seats in a statement of its own.

        Taken are the folded accepted seats, the seats Moim gave itself (`external_seats`, set
        by import-moim), and the live holds and unfolded confirmations counted here.

        In READ COMMITTED each statement sees what was committed when it started. The count
        runs after the lock is granted, so it sees every hold committed by whoever held the
        lock before us; counting in the locking statement would use a snapshot from before the
        wait and could oversell.
        """
        lock = " FOR UPDATE" if self._locking else ""
        params = {"e": event_id, "t": tier_id}
        tier = await self._tx.one(
            "SELECT capacity, accepted_count + external_seats AS accepted,"
            " delete_time IS NOT NULL AS deleted FROM tiers"
            f" WHERE event_id = %(e)s AND tier_id = %(t)s{lock}",
            params,
        )
        if tier is None:
            raise TierNotFound("The event has no such tier.", tierId=tier_id)
        if tier["capacity"] is None:
            return TierSeats(capacity=None, taken=0, deleted=tier["deleted"])
        count = sql.COUNT_TAKEN if self._locking else sql.COUNT_TAKEN_WITHOUT_LOCKS
        counted = await self._tx.one(count, params)
        assert counted is not None, "a count returns a row"
        await self._pause("seats_counted")
        taken = tier["accepted"] + counted["taken"]
        return TierSeats(capacity=tier["capacity"], taken=taken, deleted=tier["deleted"])

    async def insert(self, reservation: Reservation, hold_seconds: float) -> Reservation:
        """Insert a pending hold stamped and timed by the database's clock."""
        inserted = await self._changed(
            RegistrationEventType.RESERVATION_CREATED,
            sql.INSERT,
            id=reservation.reservation_id,
            e=reservation.event_id,
            t=reservation.tier_id,
            u=reservation.user_id,
            amount=reservation.amount,
            currency=reservation.currency_code,
            provider=reservation.provider,
            account=reservation.provider_account_id,
            answers=answers_json(reservation.answers),
            name=reservation.customer_name,
            email=reservation.customer_email,
            success=reservation.success_url,
            cancel=reservation.cancel_url,
            hold=hold_seconds,
        )
        assert inserted is not None, "an insert returns its row"
        return inserted

    async def attach_checkout(self, reservation_id: str, checkout: Checkout) -> Reservation | None:
        """Store the checkout and the payment row that waits for its payment; None (nothing
        written) when the hold is no longer pending."""
        row = await self._tx.one(
            sql.ATTACH_CHECKOUT,
            {
                "id": reservation_id,
                "c": checkout.checkout_id,
                "url": checkout.checkout_url,
                "row": uuid.uuid4(),
            },
        )
        return None if row is None else _reservation(row)

    async def release_hold(
        self, reservation_id: str, status: ReservationStatus
    ) -> Reservation | None:
        """Move a pending hold to expired or cancelled; None if it was not pending."""
        return await self._changed(
            _EVENT_OF[status], sql.RELEASE_HOLD, s=status.value, id=reservation_id
        )

    async def get(self, reservation_id: str) -> Reservation | None:
        """A reservation with its registration id."""
        row = await self._tx.one(sql.GET, {"id": reservation_id})
        return None if row is None else _reservation(row)

    async def delivery_outcome(self, delivery: Delivery) -> DeliveryRecord | None:
        """What the first delivery with this scheme and id was about, and its result."""
        row = await self._tx.one(
            "SELECT reservation_id, checkout_id, payment_id, outcome FROM webhook_deliveries"
            " WHERE scheme = %(s)s AND delivery_id = %(d)s",
            {"s": delivery.scheme.value, "d": delivery.delivery_id},
        )
        if row is None:
            return None
        return DeliveryRecord(
            reservation_id=str(row["reservation_id"]),
            checkout_id=row["checkout_id"],
            payment_id=row["payment_id"],
            outcome=ConfirmOutcome(row["outcome"]),
        )

    async def record_delivery(self, claim: PaymentClaim, outcome: ConfirmOutcome) -> None:
        """Record the claim's delivery once (a reused id keeps its first payment)."""
        assert claim.delivery is not None, "only a delivery is recorded"
        await self._tx.one(
            "INSERT INTO webhook_deliveries (scheme, delivery_id, reservation_id, checkout_id,"
            " payment_id, outcome) VALUES (%(s)s, %(d)s, %(r)s, %(c)s, %(p)s, %(o)s)"
            " ON CONFLICT DO NOTHING",
            {
                "s": claim.delivery.scheme.value,
                "d": claim.delivery.delivery_id,
                "r": claim.reservation_id,
                "c": claim.checkout_id,
                "p": claim.payment_id,
                "o": outcome.value,
            },
        )

    async def record_mismatch(self, claim: PaymentClaim, fields: Sequence[str]) -> bool:
        """Keep a mismatched payment for audit and announce it; False if it was seen before."""
        row = await self._tx.one(
            sql.RECORD_MISMATCH,
            {
                "id": uuid.uuid4(),
                "r": claim.reservation_id,
                "c": claim.checkout_id,
                "p": claim.payment_id,
                "provider": claim.provider,
                "amount": claim.amount,
                "currency": claim.currency_code,
                "raw": claim.raw_event,
                "fields": list(fields),
            },
        )
        recorded = row is not None and row["recorded"] > 0
        if recorded:
            self.appended[RegistrationEventType.PAYMENT_MISMATCH] += 1
        return recorded

    async def accept(self, locked: LockedReservation, claim: PaymentClaim) -> Reservation | None:
        """Register the user, record the payment and confirm the reservation.

        None (nothing written) when the user already has a registration at the event.
        """
        held = locked.reservation
        return await self._changed(
            RegistrationEventType.RESERVATION_CONFIRMED,
            sql.ACCEPT,
            g=uuid.uuid4(),
            e=held.event_id,
            t=held.tier_id,
            u=held.user_id,
            answers=answers_json(held.answers),
            **_settle_params(claim, ReservationStatus.CONFIRMED),
        )

    async def mark_paid_unfulfilled(self, claim: PaymentClaim) -> Reservation:
        """Record the payment; the reservation is paid but has no seat: a refund is due."""
        settled = await self._changed(
            RegistrationEventType.RESERVATION_PAID_UNFULFILLED,
            sql.SETTLE_WITHOUT_SEAT,
            **_settle_params(claim, ReservationStatus.PAID_UNFULFILLED),
        )
        assert settled is not None, "the reservation is locked by this transaction"
        return settled

    async def expire_overdue(self, batch_size: int) -> int:
        """Expire a batch of overdue holds; rows locked elsewhere are left for the next sweep."""
        rows = await self._tx.all(
            "UPDATE reservations SET status = 'expired', update_time = now()"
            " WHERE reservation_id IN (SELECT reservation_id FROM reservations"
            " WHERE status = 'pending_payment' AND expire_time <= now() ORDER BY expire_time"
            " LIMIT %(n)s FOR UPDATE SKIP LOCKED) RETURNING reservation_id",
            {"n": batch_size},
        )
        if rows:
            expired = [str(r["reservation_id"]) for r in rows]
            await append_events(self._tx, RegistrationEventType.RESERVATION_EXPIRED, expired)
            self.appended[RegistrationEventType.RESERVATION_EXPIRED] += len(expired)
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


def _settle_params(claim: PaymentClaim, status: ReservationStatus) -> dict[str, Any]:
    return {
        "s": status.value,
        "r": claim.reservation_id,
        "paid": claim.paid_time,
        "row": uuid.uuid4(),
        "c": claim.checkout_id,
        "provider": claim.provider,
        "amount": claim.amount,
        "currency": claim.currency_code,
        "p": claim.payment_id,
        "tx": claim.tx_id,
        "raw": claim.raw_event,
    }


_EVENT_OF = {
    ReservationStatus.CONFIRMED: RegistrationEventType.RESERVATION_CONFIRMED,
    ReservationStatus.EXPIRED: RegistrationEventType.RESERVATION_EXPIRED,
    ReservationStatus.CANCELLED: RegistrationEventType.RESERVATION_CANCELLED,
    ReservationStatus.PAID_UNFULFILLED: RegistrationEventType.RESERVATION_PAID_UNFULFILLED,
}


def answers_json(answers: tuple[Answer, ...]) -> str:
    """Answers as the `answers` jsonb of reservations and registrations keeps them."""
    return json.dumps([{"question_id": a.question_id, "answer": a.answer} for a in answers])


def _reservation(row: Row) -> Reservation:
    # Columns by key, not as attributes: an attribute of a Record is a Python-level
    # `__getattr__` call each, and this runs for every reservation read or changed.
    registration_id = row["registration_id"]
    return Reservation(
        reservation_id=str(row["reservation_id"]),
        event_id=row["event_id"],
        tier_id=row["tier_id"],
        user_id=row["user_id"],
        status=ReservationStatus(row["status"]),
        amount=row["amount"],
        currency_code=row["currency_code"],
        provider=row["provider"],
        provider_account_id=row["provider_account_id"],
        answers=tuple(Answer(a["question_id"], a["answer"]) for a in row["answers"]),
        customer_name=row["customer_name"],
        customer_email=row["customer_email"],
        success_url=row["success_url"],
        cancel_url=row["cancel_url"],
        create_time=row["create_time"],
        expire_time=row["expire_time"],
        checkout_id=row["checkout_id"],
        checkout_url=row["checkout_url"],
        paid_time=row["paid_time"],
        registration_id=None if registration_id is None else str(registration_id),
        payment_id=row["payment_id"],
    )


def _locked(row: Row) -> LockedReservation:
    return LockedReservation(_reservation(row), row["db_now"], row["user_registered"])
