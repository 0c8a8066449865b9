"""The ImportTarget port: one event's import-moim plan written in one transaction.

The rows are the service's own kind: a confirmed reservation with its registration and paid
payment row, left unfolded for the sweeper; a paid_unfulfilled one with the full refund the
plan owes for it (the refund worker sends it); a live hold with its checkout and requires_payment
row (no checkout URL: a retry of StartPaidRegistration asks the payment service again with the
same `reservation:<id>` key and gets the same checkout back); an ended hold the plan follows up,
due to reconciliation at once, as the service's own released holds are. Nothing is appended to
the registration event feed: Moim already has every row the import brings in.
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType
from typing import Any, Self

import asyncpg

from ticketing_service.adapters.db import moim_import_statements as sql
from ticketing_service.adapters.db.changes import Changes, Protections
from ticketing_service.adapters.db.hold_repository import answers_json
from ticketing_service.adapters.db.pool import Database, PoolTimeout
from ticketing_service.adapters.db.refund_repository import SqlRefundRepository
from ticketing_service.adapters.db.schema_revision import SchemaNotReady, check_schema
from ticketing_service.adapters.db.settings_repository import (
    LOCK_EVENT_TIERS,
    SqlSettingsRepository,
)
from ticketing_service.adapters.db.transaction import Transaction
from ticketing_service.adapters.db.unit_of_work import translate_database_error
from ticketing_service.domain.moim_plan import (
    EventPlan,
    ImportedReservation,
    Problem,
    ProblemKind,
    ServiceHold,
    ServiceRegistration,
    ServiceReservation,
)
from ticketing_service.domain.refunds import RefundReason
from ticketing_service.domain.reservations import Reservation, ReservationStatus
from ticketing_service.domain.settings import Settings, Tier
from ticketing_service.service_layer.moim_import import (
    EventImportFailed,
    OverCapacity,
    TargetUnavailable,
    Written,
)
from ticketing_service.service_layer.ports import OwedRefund

_DATABASE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, PoolTimeout)


class SqlImportTarget:
    """One event's import in a transaction on the service's pool; rolled back unless committed."""

    def __init__(
        self,
        database: Database,
        protections: Protections = Protections(),  # noqa: B008 - frozen, so safe to share
    ) -> None:
        self._database = database
        self._protections = protections
        self._tx: Transaction | None = None

    async def __aenter__(self) -> Self:
        """Check out a connection (the transaction begins with the first statement)."""
        tx = Transaction(self._database)
        try:
            await tx.open()
        except _DATABASE_ERRORS as error:
            await tx.close()
            raise _failed(error) from error
        self._tx = tx
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back what was not committed; a database failure becomes EventImportFailed."""
        tx, self._tx = self._tx, None
        if tx is not None:
            await tx.close()
        if isinstance(exc, _DATABASE_ERRORS):
            raise _failed(exc) from exc

    async def check_ready(self) -> None:
        """TargetUnavailable unless the schema is this version's (or a later one)."""
        try:
            await check_schema(self._database)
        except SchemaNotReady as error:
            raise TargetUnavailable(str(error)) from error

    async def lock_event(self, event_id: str) -> None:
        """The lock UpdateTicketingSettings takes: settings are never written by both at once;
        then the rows of the event's tiers, which StartPaidRegistration locks to count a tier's
        seats: no hold is made there while the plan counts them, so a live hold brought in
        never takes a seat the service gave meanwhile."""
        if self._protections.locking:
            await SqlSettingsRepository(self._live()).lock_event(event_id)
            await self._live().all(LOCK_EVENT_TIERS, {"e": event_id})

    async def live_holds_of(self, event_id: str) -> list[ServiceHold]:
        """The live holds the service keeps at the event (read after the tiers are locked, so
        every hold committed before is seen)."""
        rows = await self._live().all(sql.LIVE_HOLDS_OF, {"e": event_id})
        await self._protections.pause("import_counted")
        return [ServiceHold(r["reservation_id"], r["user_id"], r["tier_id"]) for r in rows]

    async def registrations_of(self, event_id: str) -> list[ServiceRegistration]:
        """The registrations the service keeps at the event, cancelled ones too."""
        rows = await self._live().all(sql.REGISTRATIONS_OF, {"e": event_id})
        return [
            ServiceRegistration(
                r["registration_id"], r["reservation_id"], r["user_id"], r["tier_id"], r["accepted"]
            )
            for r in rows
        ]

    async def reservations_of(self, event_id: str) -> list[ServiceReservation]:
        """Every reservation the service keeps at the event, in any state."""
        rows = await self._live().all(sql.RESERVATIONS_OF, {"e": event_id})
        return [
            ServiceReservation(r["reservation_id"], r["user_id"], r["tier_id"], r["ended_unpaid"])
            for r in rows
        ]

    async def tiers_of(self, event_id: str) -> list[Tier] | None:
        """The event's live tiers when the service has its settings; None when it has not."""
        settings = await SqlSettingsRepository(self._live()).get(event_id)
        return None if settings is None else list(settings.tiers)

    async def write(self, plan: EventPlan) -> Written:
        """Create what is missing, settle the holds the source settled; report the rest."""
        if plan.settings is None:
            return Written()
        created = await self._create_settings(plan.settings)
        # The tiers of an event the service knew are its own: none is added to them.
        tiers_created = await self._create_tiers(plan.settings) if created else 0
        seats_changed = await self._set_external_seats(plan)
        changed: Counter[ReservationStatus] = Counter()
        refunds = 0
        for imported in plan.settled:
            if await self._settle(imported):
                changed[imported.reservation.status] += 1
                refunds += imported.refund_owed
        for imported in plan.holds:
            if await self._hold(imported):
                changed[imported.reservation.status] += 1
        kept = await self._kept_otherwise(plan)
        over = await self._over_capacity(plan.event_id)
        return Written(created, tiers_created, seats_changed, changed, kept, refunds, over)

    async def commit(self) -> None:
        """Commit the event's transaction."""
        await self._live().commit()

    async def _create_settings(self, settings: Settings) -> bool:
        row = await self._live().one(
            sql.CREATE_SETTINGS,
            {
                "e": settings.event_id,
                "title": settings.event_title,
                "mode": settings.mode.value,
                "provider": settings.provider,
                "account": settings.provider_account_id,
                "currency": settings.currency_code,
                "enabled": settings.enabled,
                "legacy": settings.legacy,
                "url": settings.external_url,
                "start": settings.event_start_time,
            },
        )
        return row is not None

    async def _create_tiers(self, settings: Settings) -> int:
        created = 0
        for position, tier in enumerate(settings.tiers):
            row = await self._live().one(
                sql.CREATE_TIER,
                {
                    "e": settings.event_id,
                    "t": tier.tier_id,
                    "position": position,
                    "name": tier.name,
                    "price": tier.price_amount,
                    "capacity": tier.capacity,
                    "start": tier.sale_start_time,
                    "end": tier.sale_end_time,
                },
            )
            created += row is not None
        return created

    async def _set_external_seats(self, plan: EventPlan) -> int:
        changed = 0
        for tier_id, seats in plan.external_seats.items():
            params = {"e": plan.event_id, "t": tier_id, "n": seats}
            changed += await self._live().one(sql.SET_EXTERNAL_SEATS, params) is not None
        return changed

    async def _settle(self, imported: ImportedReservation) -> bool:
        """The settled reservation, its registration and paid payment; False if it was
        already settled here (by an earlier import or by the service: left as it is)."""
        reservation = imported.reservation
        params = _reservation_params(imported)
        if await self._live().one(sql.SETTLE, params) is None:
            return False
        if reservation.registration_id is not None:
            await self._register(reservation, params)
        await self._live().one(sql.PAYMENT, _payment_params(imported))
        if imported.refund_owed:
            # Owed in the transaction that brings it in, as ConfirmPayment owes its own: only a
            # reservation settled now owes one, so a second import owes nothing more.
            await SqlRefundRepository(Changes(self._live())).owe(_full_refund(imported))
        return True

    async def _register(self, reservation: Reservation, params: dict[str, Any]) -> None:
        tx = self._live()
        registration = {**params, "g": reservation.registration_id, "created": params["paid"]}
        if await tx.one(sql.REGISTER, registration) is not None:
            return
        if await tx.one(sql.REGISTERED_FOR, {"r": reservation.reservation_id}) is not None:
            return
        # The plan saw every registration of the event under its lock (their ids, and the
        # accepted ones' users), so only a payment the service confirmed this very moment can
        # be in the way: a new run sees it and plans around it.
        other = await tx.one(sql.ACCEPTED_REGISTRATION_OF, registration)
        by = "" if other is None else f" (reservation {other['reservation_id']})"
        raise EventImportFailed(
            f"User {reservation.user_id} was registered at event {reservation.event_id} by the"
            f" service{by} while the event was imported: run the import again."
        )

    async def _hold(self, imported: ImportedReservation) -> bool:
        """A hold with its requires_payment row; False if it is here already."""
        if await self._live().one(sql.HOLD, _reservation_params(imported)) is None:
            return False
        await self._live().one(sql.PAYMENT, _payment_params(imported))
        return True

    async def _kept_otherwise(self, plan: EventPlan) -> tuple[Problem, ...]:
        """Settled reservations the service keeps in another state than the source's."""
        planned = {i.reservation.reservation_id: i.reservation for i in plan.settled}
        rows = await self._live().all(sql.STATUSES, {"ids": list(planned)})
        kept = []
        for row in rows:
            reservation = planned[row["reservation_id"]]
            if row["status"] != reservation.status.value:
                subject = f"reservation {reservation.reservation_id} (user {reservation.user_id})"
                detail = f"is {reservation.status.value} in Moim but {row['status']} here"
                kept.append(Problem(ProblemKind.KEPT_OTHERWISE, subject, detail + ": left as is"))
        return tuple(kept)

    async def _over_capacity(self, event_id: str) -> tuple[OverCapacity, ...]:
        rows = await self._live().all(sql.OVER_CAPACITY, {"e": event_id})
        return tuple(OverCapacity(r["tier_id"], r["name"], r["taken"], r["capacity"]) for r in rows)

    def _live(self) -> Transaction:
        assert self._tx is not None, "used outside of `async with`"
        return self._tx


def _reservation_params(imported: ImportedReservation) -> dict[str, Any]:
    r = imported.reservation
    return {
        "r": r.reservation_id,
        "e": r.event_id,
        "t": r.tier_id,
        "u": r.user_id,
        "s": r.status.value,
        "amount": r.amount,
        "currency": r.currency_code,
        "provider": r.provider,
        "account": r.provider_account_id,
        "answers": answers_json(r.answers),
        "success": r.success_url,
        "cancel": r.cancel_url,
        "checkout": r.checkout_id,
        "created": r.create_time,
        "expires": r.expire_time,
        "paid": r.paid_time,
        "updated": imported.update_time,
        "payment": r.payment_id,
        "follow_up": imported.follow_up,
    }


def _payment_params(imported: ImportedReservation) -> dict[str, Any]:
    p = imported.payment
    return {
        "row": p.payment_row_id,
        "r": imported.reservation.reservation_id,
        "checkout": p.checkout_id,
        "s": p.status,
        "provider": p.provider,
        "amount": p.amount,
        "currency": p.currency_code,
        "payment": p.provider_payment_id,
        "tx": p.tx_id,
        "paid": p.paid_time,
        "raw": p.raw_event,
        "created": p.create_time,
        "updated": p.update_time,
    }


def _full_refund(imported: ImportedReservation) -> OwedRefund:
    """All of a paid_unfulfilled reservation's payment, owed back."""
    p = imported.payment
    assert p.provider_payment_id is not None, "the plan owes none for a payment without one"
    return OwedRefund(
        reservation_id=imported.reservation.reservation_id,
        payment_id=p.provider_payment_id,
        checkout_id=p.checkout_id,
        amount=p.amount,
        currency_code=p.currency_code,
        reason=RefundReason.PAID_UNFULFILLED,
    )


def _failed(error: BaseException) -> EventImportFailed:
    translated = translate_database_error(error)
    if translated is None:
        return EventImportFailed(f"The database refused it: {error}")
    return EventImportFailed(f"{translated.message} ({type(error).__name__}: {error})")
