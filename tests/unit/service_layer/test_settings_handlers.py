"""UpdateTicketingSettings and GetTicketingSettings on fakes: the tiers in use are kept."""

from __future__ import annotations

import pytest

from tests.fakes import FakeDatabase
from tests.unit.service_layer.conftest import EVENT, PRICE, registration
from ticketing_service.domain import errors
from ticketing_service.domain.settings import SettingsUpdate, TicketingMode, Tier
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.registration_handlers import start_paid_registration
from ticketing_service.service_layer.settings_handlers import (
    get_ticketing_settings,
    update_ticketing_settings,
)


def update(*tiers: Tier) -> SettingsUpdate:
    return SettingsUpdate(EVENT, "Launch party", tiers, None, None, None)


async def test_an_update_derives_the_mode_and_a_get_reads_it_back(deps: Dependencies) -> None:
    decision = await update_ticketing_settings(deps, update(Tier("vip", "VIP", PRICE, 2)))
    assert decision.settings.mode is TicketingMode.PAID
    assert decision.settings.provider_account_id == "default-account"
    assert await get_ticketing_settings(deps, EVENT) == decision.settings


async def test_a_removed_tier_with_a_live_hold_is_retained_and_an_idle_one_deleted(
    deps: Dependencies, database: FakeDatabase
) -> None:
    await update_ticketing_settings(
        deps, update(Tier("vip", "VIP", PRICE, 2), Tier("idle", "Idle", PRICE, 2))
    )
    await start_paid_registration(deps, registration("user-1"))
    decision = await update_ticketing_settings(deps, update(Tier("new", "New", PRICE, 2)))
    assert decision.retained_tier_ids == ("vip",)
    assert decision.deleted_tier_ids == ("idle",)
    stored = await get_ticketing_settings(deps, EVENT)
    assert [(t.tier_id, t.retained) for t in stored.tiers] == [("new", False), ("vip", True)]


async def test_an_event_never_saved_is_not_found(deps: Dependencies) -> None:
    with pytest.raises(errors.EventNotFound):
        await get_ticketing_settings(deps, EVENT)
