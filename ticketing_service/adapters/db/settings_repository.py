"""Ticketing settings and tiers in Postgres."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from ticketing_service.adapters.db.transaction import Row, Transaction
from ticketing_service.domain.refunds import RefundRule
from ticketing_service.domain.settings import Settings, TicketingMode, Tier

# The settings and their live tiers in one statement: one row per tier (offered ones first, in
# request order), or one row with no tier. A tier's accepted seats are its folded count, the
# seats Moim gave itself (import-moim), and the confirmed reservations not folded yet.
_GET = (
    "SELECT s.event_id, s.event_title, s.mode, s.provider, s.provider_account_id,"
    " s.currency_code, s.enabled, s.legacy, s.external_url, s.update_time,"
    " s.event_start_time, s.refund_policy, s.cancel_time,"
    " t.tier_id, t.name, t.price_amount, t.capacity, t.sale_start_time, t.sale_end_time,"
    " t.retained, t.accepted_count + t.external_seats + (SELECT count(*) FROM reservations r"
    " WHERE r.event_id = t.event_id AND r.tier_id = t.tier_id AND r.status = 'confirmed'"
    " AND NOT r.seat_folded) AS accepted_total"
    " FROM ticketing_settings s LEFT JOIN tiers t"
    " ON t.event_id = s.event_id AND t.delete_time IS NULL"
    " WHERE s.event_id = %(e)s ORDER BY t.position"
)
# Every tier of an event, in one order (by id): CancelEvent and import-moim take them all, and
# wait for any StartPaidRegistration counting a tier's seats under its lock.
LOCK_EVENT_TIERS = "SELECT tier_id FROM tiers WHERE event_id = %(e)s ORDER BY tier_id FOR UPDATE"
_TIERS_IN_USE = (
    "SELECT t.tier_id FROM unnest(CAST(%(ids)s AS text[])) AS t(tier_id)"
    " WHERE EXISTS (SELECT 1 FROM registrations g WHERE g.event_id = %(e)s"
    " AND g.tier_id = t.tier_id AND g.status = 'accepted') OR EXISTS (SELECT 1 FROM reservations r"
    " WHERE r.event_id = %(e)s AND r.tier_id = t.tier_id"
    " AND r.status = 'pending_payment' AND r.expire_time > now())"
)
_UPSERT_SETTINGS = (
    "INSERT INTO ticketing_settings (event_id, event_title, mode, provider, provider_account_id,"
    " currency_code, enabled, legacy, external_url, event_start_time, refund_policy)"
    " VALUES (%(event_id)s, %(event_title)s, %(mode)s, %(provider)s, %(provider_account_id)s,"
    " %(currency_code)s, %(enabled)s, %(legacy)s, %(external_url)s, %(event_start_time)s,"
    " CAST(%(refund_policy)s AS jsonb)) ON CONFLICT (event_id) DO UPDATE SET"
    " event_title = excluded.event_title, mode = excluded.mode, provider = excluded.provider,"
    " provider_account_id = excluded.provider_account_id,"
    " currency_code = excluded.currency_code, enabled = excluded.enabled,"
    " legacy = excluded.legacy, external_url = excluded.external_url,"
    " event_start_time = excluded.event_start_time, refund_policy = excluded.refund_policy,"
    " update_time = now()"
)
# An offered tier is live again even if it had been deleted (its tombstone is cleared).
_UPSERT_TIER = (
    "INSERT INTO tiers (event_id, tier_id, position, name, price_amount, capacity,"
    " sale_start_time, sale_end_time, retained) VALUES (%(event_id)s, %(tier_id)s,"
    " %(position)s, %(name)s, %(price_amount)s, %(capacity)s, %(sale_start_time)s,"
    " %(sale_end_time)s, %(retained)s) ON CONFLICT (event_id, tier_id) DO UPDATE SET"
    " position = excluded.position, name = excluded.name,"
    " price_amount = excluded.price_amount, capacity = excluded.capacity,"
    " sale_start_time = excluded.sale_start_time, sale_end_time = excluded.sale_end_time,"
    " retained = excluded.retained, delete_time = NULL"
)
_DELETE_TIERS = (
    "UPDATE tiers SET delete_time = now() WHERE event_id = %(e)s AND tier_id = ANY(%(ids)s)"
)


class SqlSettingsRepository:
    """The SettingsRepository port on one transaction's connection."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx

    async def lock_event(self, event_id: str) -> None:
        """Serialize settings updates of one event (an advisory lock: the row may not exist yet)."""
        await self._tx.one(
            "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))",
            {"key": "ticketing_settings:" + event_id},
        )

    async def get(self, event_id: str) -> Settings | None:
        """The stored settings with their live tiers, offered ones first in request order."""
        rows = await self._tx.all(_GET, {"e": event_id})
        if not rows:
            return None
        tier_list = [_tier_from_row(row) for row in rows if row["tier_id"] is not None]
        return _settings_from_rows(rows[0], tier_list)

    async def lock_tiers_in_use(self, event_id: str, tier_ids: Collection[str]) -> set[str]:
        """Lock every tier of the event in their order, then return those of `tier_ids` with a
        live hold or an accepted registration.

        All of them, before the settings row is written: an event's cancellation batch, and a
        registration given up, take tiers and then the settings row (to count the
        cancellation's progress). Writing the settings row first, an update waited for a tier
        such a batch held while the batch waited for the settings row, and Postgres aborted
        one of them. The check is a statement of its own: run in the locking statement it would
        read from a snapshot taken before the lock was granted and miss a hold committed
        meanwhile.
        """
        await self._tx.all(LOCK_EVENT_TIERS, {"e": event_id})
        if not tier_ids:
            return set()
        rows = await self._tx.all(_TIERS_IN_USE, {"e": event_id, "ids": list(tier_ids)})
        return {r["tier_id"] for r in rows}

    async def save(self, settings: Settings, deleted_tier_ids: Sequence[str]) -> Settings:
        """Upsert the settings and tiers, tombstone deleted tiers, and read the result back."""
        await self._upsert_settings(settings)
        await self._upsert_tiers(settings)
        if deleted_tier_ids:
            params = {"e": settings.event_id, "ids": list(deleted_tier_ids)}
            await self._tx.one(_DELETE_TIERS, params)
        stored = await self.get(settings.event_id)
        assert stored is not None, "settings were written in this transaction"
        return stored

    async def _upsert_settings(self, settings: Settings) -> None:
        values = {
            "event_id": settings.event_id,
            "event_title": settings.event_title,
            "mode": settings.mode.value,
            "provider": settings.provider,
            "provider_account_id": settings.provider_account_id,
            "currency_code": settings.currency_code,
            "enabled": settings.enabled,
            "legacy": settings.legacy,
            "external_url": settings.external_url,
            "event_start_time": settings.event_start_time,
            "refund_policy": _policy_json(settings.refund_policy),
        }
        await self._tx.one(_UPSERT_SETTINGS, values)

    async def _upsert_tiers(self, settings: Settings) -> None:
        rows = [_tier_values(settings.event_id, i, t) for i, t in enumerate(settings.tiers)]
        if rows:
            await self._tx.many(_UPSERT_TIER, rows)


def _tier_values(event_id: str, position: int, tier: Tier) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "tier_id": tier.tier_id,
        "position": position,
        "name": tier.name,
        "price_amount": tier.price_amount,
        "capacity": tier.capacity,
        "sale_start_time": tier.sale_start_time,
        "sale_end_time": tier.sale_end_time,
        "retained": tier.retained,
    }


def _tier_from_row(row: Row) -> Tier:
    return Tier(
        tier_id=row["tier_id"],
        name=row["name"],
        price_amount=row["price_amount"],
        capacity=row["capacity"],
        sale_start_time=row["sale_start_time"],
        sale_end_time=row["sale_end_time"],
        retained=row["retained"],
        accepted_count=row["accepted_total"],
    )


def _settings_from_rows(row: Row, tier_list: list[Tier]) -> Settings:
    return Settings(
        event_id=row["event_id"],
        event_title=row["event_title"],
        mode=TicketingMode(row["mode"]),
        provider=row["provider"],
        provider_account_id=row["provider_account_id"],
        currency_code=row["currency_code"],
        enabled=row["enabled"],
        legacy=row["legacy"],
        external_url=row["external_url"],
        tiers=tuple(tier_list),
        update_time=row["update_time"],
        event_start_time=row["event_start_time"],
        refund_policy=_policy(row["refund_policy"]),
        cancel_time=row["cancel_time"],
    )


def _policy_json(policy: tuple[RefundRule, ...] | None) -> str | None:
    if policy is None:
        return None
    return json.dumps([[r.min_hours_before_start, r.percent] for r in policy])


def _policy(stored: list[list[int]] | None) -> tuple[RefundRule, ...] | None:
    return None if stored is None else tuple(RefundRule(hours, pct) for hours, pct in stored)
