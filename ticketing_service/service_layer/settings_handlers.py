"""Use cases of ticketing settings: UpdateTicketingSettings and GetTicketingSettings."""

from __future__ import annotations

from dataclasses import replace

from ticketing_service.domain.errors import EventNotFound
from ticketing_service.domain.settings import (
    Settings,
    SettingsDecision,
    SettingsUpdate,
    decide_settings,
)
from ticketing_service.service_layer.dependencies import Dependencies


async def update_ticketing_settings(deps: Dependencies, update: SettingsUpdate) -> SettingsDecision:
    """Store an event's tiers, derive its mode, and keep removed tiers that are still in use."""
    async with deps.uow() as uow:
        # Lock order: the event's settings, then its tiers, then the settings row is written.
        # StartPaidRegistration locks only a tier, and a cancellation takes tiers before the
        # settings row, so none waits on another in a cycle; and because the missing tiers are
        # locked before they are checked for use, no hold can slip in between the check and the
        # delete.
        await uow.settings.lock_event(update.event_id)
        stored = await uow.settings.get(update.event_id)
        offered = {t.tier_id for t in update.tiers}
        missing = [t.tier_id for t in (stored.tiers if stored else ()) if t.tier_id not in offered]
        in_use = await uow.settings.lock_tiers_in_use(update.event_id, missing)
        decision = decide_settings(update, stored, in_use, deps.default_provider_account_id)
        saved = await uow.settings.save(decision.settings, decision.deleted_tier_ids)
        await uow.commit()
    return replace(decision, settings=saved)


async def get_ticketing_settings(deps: Dependencies, event_id: str) -> Settings:
    """The stored settings of an event."""
    async with deps.uow() as uow:
        settings = await uow.settings.get(event_id)
    if settings is None:
        raise EventNotFound(
            "The event has no ticketing settings; save them with UpdateTicketingSettings first.",
            eventId=event_id,
        )
    return settings
