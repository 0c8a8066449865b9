"""Seat holds in Postgres: the user's attempts, a tier's seats, holds made and released."""

from __future__ import annotations

import json
import uuid

from ticketing_service.adapters.db import reservation_statements as sql
from ticketing_service.adapters.db.changes import Changes, Protections
from ticketing_service.adapters.db.reservation_rows import reservation_from
from ticketing_service.adapters.db.transaction import Row
from ticketing_service.domain.errors import TierNotFound
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reservations import (
    Answer,
    LockedReservation,
    Reservation,
    ReservationStatus,
    TierSeats,
)
from ticketing_service.service_layer.checkouts import Checkout

RELEASED_EVENT = {
    ReservationStatus.EXPIRED: RegistrationEventType.RESERVATION_EXPIRED,
    ReservationStatus.CANCELLED: RegistrationEventType.RESERVATION_CANCELLED,
}


class SqlHoldRepository:
    """The HoldRepository port on one transaction's connection."""

    def __init__(self, changes: Changes, protections: Protections) -> None:
        self._changes = changes
        self._tx = changes.tx
        self._locking = protections.locking
        self._read_locked = (
            sql.READ_LOCKED
            if protections.clock_after_lock
            else sql.READ_LOCKED_BY_TRANSACTION_START
        )
        self._pause = protections.pause

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
            "SELECT registration_id FROM registrations WHERE event_id = %(e)s AND user_id = %(u)s"
            " AND status = 'accepted'",
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
            else await self._tx.one(
                self._read_locked, {"id": row["reservation_id"], "payment": None}
            )
        )
        await self._pause("pending_checked")
        return None if read is None else _locked(read)

    async def lock(
        self, reservation_id: str, payment_id: str | None = None
    ) -> LockedReservation | None:
        """Lock the reservation's row and read it with the database's clock (and whether
        `payment_id`, the payment being confirmed, already paid another reservation).

        The lock is taken in one statement and the read is the next one. In READ COMMITTED a
        statement that waits for a row lock returns the row's newest version but joins and
        subqueries from its snapshot taken before the wait, so a lock-and-read in one statement
        could pair a confirmed reservation with no registration. The read after the lock sees
        everything committed by whoever held the lock before us.
        """
        lock = " FOR UPDATE" if self._locking else ""
        params = {"id": reservation_id, "payment": payment_id}
        locked = await self._tx.one(
            f"SELECT reservation_id FROM reservations WHERE reservation_id = %(id)s{lock}", params
        )
        read = None if locked is None else await self._tx.one(self._read_locked, params)
        await self._pause("reservation_locked")
        return None if read is None else _locked(read)

    async def all_seats_taken(self, event_id: str, tier_id: str) -> bool:
        """Whether live holds and registrations fill the tier, read without taking a lock."""
        row = await self._tx.one(sql.ALL_SEATS_TAKEN, {"e": event_id, "t": tier_id})
        return row is not None and row["full"] is True

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
        # The event's cancellation is read after the lock, too: CancelEvent locks every tier of
        # the event before it commits, so a seat counted after it was cancelled is never given.
        if tier["capacity"] is None:
            counted = await self._tx.one(sql.EVENT_CANCELLED, params)
            assert counted is not None, "the settings of a tier exist"
            return TierSeats(None, 0, tier["deleted"], event_cancelled=counted["cancelled"])
        count = sql.COUNT_TAKEN if self._locking else sql.COUNT_TAKEN_WITHOUT_LOCKS
        counted = await self._tx.one(count, params)
        assert counted is not None, "a count returns a row"
        await self._pause("seats_counted")
        taken = tier["accepted"] + counted["taken"]
        return TierSeats(tier["capacity"], taken, tier["deleted"], counted["cancelled"])

    async def insert(self, reservation: Reservation, hold_seconds: float) -> Reservation:
        """Insert a pending hold stamped and timed by the database's clock."""
        inserted = await self._changes.reservation(
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
        return None if row is None else reservation_from(row)

    async def release_hold(
        self, reservation_id: str, status: ReservationStatus
    ) -> Reservation | None:
        """Move a pending hold to expired or cancelled; None if it was not pending."""
        return await self._changes.reservation(
            RELEASED_EVENT[status], sql.RELEASE_HOLD, s=status.value, id=reservation_id
        )

    async def get(self, reservation_id: str) -> Reservation | None:
        """A reservation with its registration id."""
        row = await self._tx.one(sql.GET, {"id": reservation_id})
        await self._pause("reservation_read")
        return None if row is None else reservation_from(row)

    async def latest_of(self, event_id: str, user_id: str) -> Reservation | None:
        """The user's most recently made reservation for the event."""
        row = await self._tx.one(sql.LATEST_OF, {"e": event_id, "u": user_id})
        return None if row is None else reservation_from(row)


def answers_json(answers: tuple[Answer, ...]) -> str:
    """The answers as the jsonb the reservation and its registration keep."""
    return json.dumps([{"question_id": a.question_id, "answer": a.answer} for a in answers])


def _locked(row: Row) -> LockedReservation:
    return LockedReservation(
        reservation_from(row),
        row["db_now"],
        row["user_registered"],
        frozenset(row["owed_back"]),
        row["event_cancelled"],
        row["paid_elsewhere"],
    )
