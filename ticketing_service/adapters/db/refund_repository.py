"""The refund ledger in Postgres: refunds owed, leased to one sender at a time, and settled.

A refund is leased before it is sent (`lease_until`), in a transaction of its own, so no
transaction stays open while the payment service is asked; two replicas never send one refund at
once, and one that died mid-call leaves it to be sent again when the lease ends (with the same
idempotency key, so the payment service makes it once).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ticketing_service.adapters.db.changes import Changes, Pause, no_pause
from ticketing_service.adapters.db.reservation_rows import CHANGED, snapshot
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.refunds import Refund, RefundReason, RefundStatus
from ticketing_service.service_layer.ports import OwedRefund, RefundChange

_OWE = (
    "INSERT INTO refunds (refund_id, reservation_id, payment_id, checkout_id, amount,"
    " currency_code, reason, status, next_attempt_time, request_id, release_seat)"
    " VALUES (%(id)s, %(r)s, %(p)s, %(c)s, %(amount)s, %(currency)s, %(reason)s, 'requested',"
    " now(), %(request)s, %(release)s) RETURNING *"
)
_CLAIM_DUE = (
    "UPDATE refunds SET lease_until = now() + make_interval(secs => %(lease)s)"
    " WHERE refund_id IN (SELECT refund_id FROM refunds"
    " WHERE status IN ('requested', 'pending') AND next_attempt_time <= now()"
    " AND (lease_until IS NULL OR lease_until <= now())"
    " ORDER BY next_attempt_time LIMIT %(n)s FOR UPDATE SKIP LOCKED) RETURNING *"
)
# A try changes the refund only if it is still as the try read it: every recorded try adds an
# attempt, so an unchanged status and count mean nobody recorded anything since. A try that
# raced another (the worker and a callback's RefreshRefund at once) finds nothing and adds
# nothing, and a stale one never overwrites what the other learnt (a `failed` over a `pending`).
_RECORD = (
    "UPDATE refunds SET status = %(s)s, attempts = %(attempts)s,"
    " next_attempt_time = now() + make_interval(secs => %(retry)s),"
    " failure_code = %(failure)s, provider_refund_id = coalesce(%(provider)s, provider_refund_id),"
    " lease_until = NULL, update_time = now()"
    " WHERE refund_id = %(id)s AND status = %(read_status)s AND attempts = %(read_attempts)s"
    " RETURNING *"
)
# A settled refund is announced with the reservation as it is after it (a success of the payment
# that settled it adds to what was refunded), and the refund itself in `details`.
_ANNOUNCE = (
    "WITH r AS (UPDATE reservations SET refunded_amount = refunded_amount"
    " + CASE WHEN payment_id = %(p)s THEN CAST(%(added)s AS bigint) ELSE 0 END,"
    " update_time = now() WHERE reservation_id = %(r)s RETURNING *)"
    " INSERT INTO registration_events (type, reservation_id, reservation, details)"
    f" SELECT %(event)s, r.reservation_id, {snapshot('r', 'g.registration_id')},"
    f" CAST(%(refund)s AS jsonb) FROM {CHANGED}"
)


class SqlRefundRepository:
    """The RefundRepository port on one transaction's connection."""

    def __init__(self, changes: Changes, pause: Pause = no_pause) -> None:
        self._changes = changes
        self._tx = changes.tx
        self._pause = pause

    async def owe(self, refund: OwedRefund) -> Refund:
        """Record a refund as requested, due now."""
        row = await self._tx.one(
            _OWE,
            {
                "id": uuid.uuid4(),
                "r": refund.reservation_id,
                "p": refund.payment_id,
                "c": refund.checkout_id,
                "amount": refund.amount,
                "currency": refund.currency_code,
                "reason": refund.reason.value,
                "request": refund.request_id,
                "release": refund.release_seat,
            },
        )
        assert row is not None, "an insert returns its row"
        return refund_from(row)

    async def of_reservation(self, reservation_id: str) -> list[Refund]:
        """A reservation's refunds, oldest first."""
        rows = await self._tx.all(
            "SELECT * FROM refunds WHERE reservation_id = %(r)s ORDER BY create_time, refund_id",
            {"r": reservation_id},
        )
        await self._pause("refunds_read")
        return [refund_from(row) for row in rows]

    async def by_request(self, reservation_id: str, request_id: str) -> Refund | None:
        """The refund RefundReservation made with this request id."""
        row = await self._tx.one(
            "SELECT * FROM refunds WHERE reservation_id = %(r)s AND request_id = %(q)s",
            {"r": reservation_id, "q": request_id},
        )
        return None if row is None else refund_from(row)

    async def get(self, refund_id: str) -> Refund | None:
        """A refund by id."""
        row = await self._tx.one(
            "SELECT * FROM refunds WHERE refund_id = %(id)s", {"id": refund_id}
        )
        return None if row is None else refund_from(row)

    async def claim_due(self, lease: timedelta, limit: int) -> list[Refund]:
        """Lease a batch of due refunds to this sender."""
        rows = await self._tx.all(_CLAIM_DUE, {"lease": lease.total_seconds(), "n": limit})
        return [refund_from(row) for row in rows]

    async def record(self, read: Refund, change: RefundChange) -> Refund | None:
        """Record a try of the refund as it was `read`; announce a refund that settles (a failed
        one only recorded with another failure code is not announced again)."""
        retry = change.retry_in or timedelta(0)
        await self._pause("refund_recording")
        row = await self._tx.one(
            _RECORD,
            {
                "id": read.refund_id,
                "read_status": read.status.value,
                "read_attempts": read.attempts,
                "s": change.status.value,
                "attempts": change.attempts,
                "retry": retry.total_seconds(),
                "failure": change.failure_code,
                "provider": change.provider_refund_id,
            },
        )
        if row is None:
            return None
        refund = refund_from(row)
        if refund.status.is_final and refund.status is not read.status:
            await self._announce(refund, row)
        return refund

    async def _announce(self, refund: Refund, row: Mapping[str, Any]) -> None:
        succeeded = refund.status is RefundStatus.SUCCEEDED
        event = (
            RegistrationEventType.REFUND_SUCCEEDED
            if succeeded
            else RegistrationEventType.REFUND_FAILED
        )
        await self._tx.one(
            _ANNOUNCE,
            {
                "added": refund.amount if succeeded else 0,
                "p": refund.payment_id,
                "r": refund.reservation_id,
                "event": event.value,
                "refund": refund_json(row),
            },
        )
        self._changes.appended[event] += 1


def refund_json(row: Mapping[str, Any]) -> str:
    """A refund row as a feed event's `details`."""
    return json.dumps({name: _jsonable(row[name]) for name in _EVENT_FIELDS})


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if isinstance(value, uuid.UUID) else value


# What a feed event tells of its refund (not the sender's bookkeeping).
_EVENT_FIELDS = (
    "refund_id",
    "reservation_id",
    "payment_id",
    "checkout_id",
    "amount",
    "currency_code",
    "reason",
    "status",
    "failure_code",
    "create_time",
    "update_time",
)


def refund_from(values: Mapping[str, Any]) -> Refund:
    """A Refund from a row of `refunds` or a feed event's decoded `details`."""
    return Refund(
        refund_id=str(values["refund_id"]),
        reservation_id=str(values["reservation_id"]),
        payment_id=values["payment_id"],
        checkout_id=values["checkout_id"],
        amount=int(values["amount"]),
        currency_code=values["currency_code"],
        reason=RefundReason(values["reason"]),
        status=RefundStatus(values["status"]),
        create_time=_time(values["create_time"]),
        update_time=_time(values["update_time"]),
        failure_code=values["failure_code"],
        request_id=values.get("request_id"),
        release_seat=bool(values.get("release_seat", False)),
        attempts=int(values.get("attempts", 0)),
    )


def _time(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value
