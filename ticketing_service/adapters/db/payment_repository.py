"""Payments in Postgres: settling a reservation, the webhook inbox, and mismatched payments."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from ticketing_service.adapters.db import reservation_statements as sql
from ticketing_service.adapters.db.changes import Changes
from ticketing_service.adapters.db.hold_repository import answers_json
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reservations import (
    ConfirmOutcome,
    Delivery,
    DeliveryRecord,
    LockedReservation,
    PaymentClaim,
    Reservation,
    ReservationStatus,
)


class SqlPaymentRepository:
    """The PaymentRepository port on one transaction's connection."""

    def __init__(self, changes: Changes) -> None:
        self._changes = changes
        self._tx = changes.tx

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

    async def spoken_for(self, payment_id: str) -> bool:
        """Whether the payment settled a reservation or is owed back (a refund not failed)."""
        row = await self._tx.one(sql.SPOKEN_FOR, {"p": payment_id})
        return row is not None and bool(row["spoken_for"])

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
            self._changes.appended[RegistrationEventType.PAYMENT_MISMATCH] += 1
        return recorded

    async def accept(self, locked: LockedReservation, claim: PaymentClaim) -> Reservation | None:
        """Register the user, record the payment and confirm the reservation.

        None (nothing written) when the user already has a registration at the event.
        """
        held = locked.reservation
        return await self._changes.reservation(
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
        settled = await self._changes.reservation(
            RegistrationEventType.RESERVATION_PAID_UNFULFILLED,
            sql.SETTLE_WITHOUT_SEAT,
            **_settle_params(claim, ReservationStatus.PAID_UNFULFILLED),
        )
        assert settled is not None, "the reservation is locked by this transaction"
        return settled


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
