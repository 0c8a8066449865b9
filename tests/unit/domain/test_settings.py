"""The settings derivation, preservation and retention rules, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ticketing_service.domain.settings import (
    Settings,
    SettingsUpdate,
    TicketingMode,
    Tier,
    decide_settings,
)

NOW = datetime(2030, 5, 1, 12, tzinfo=UTC)


def tier(tier_id: str, price: int = 0) -> Tier:
    return Tier(tier_id=tier_id, name=tier_id, price_amount=price, capacity=None)


def update(
    *tiers: Tier, external_url: str | None = None, currency: str | None = None
) -> SettingsUpdate:
    return SettingsUpdate("e", "Title", tiers, external_url, currency, None)


def stored(mode: TicketingMode, *, legacy: bool, tiers: tuple[Tier, ...] = ()) -> Settings:
    return Settings(
        event_id="e",
        event_title="Old",
        mode=mode,
        provider="portone",
        provider_account_id="kept",
        currency_code="JPY",
        enabled=True,
        legacy=legacy,
        external_url="https://old.example" if mode is TicketingMode.EXTERNAL else None,
        tiers=tiers,
    )


def test_a_tier_priced_above_zero_makes_the_event_paid_with_the_default_account() -> None:
    settings = decide_settings(update(tier("a", 1)), None, set(), "default").settings
    assert (settings.mode, settings.provider, settings.provider_account_id) == (
        TicketingMode.PAID,
        "portone",
        "default",
    )
    assert (settings.currency_code, settings.enabled, settings.legacy) == ("KRW", True, False)


def test_free_and_paid_tiers_together_make_a_paid_event() -> None:
    settings = decide_settings(update(tier("free"), tier("vip", 5)), None, set(), None).settings
    assert (settings.mode, settings.enabled) == (TicketingMode.PAID, True)


def test_a_free_event_does_not_take_payments() -> None:
    settings = decide_settings(update(tier("a")), None, set(), "default").settings
    assert (settings.mode, settings.enabled, settings.provider) == (TicketingMode.FREE, False, None)


def test_an_explicit_empty_url_moves_a_stored_external_event_off_external() -> None:
    old = stored(TicketingMode.EXTERNAL, legacy=False)
    moved = decide_settings(update(tier("a", 5), external_url=""), old, set(), None).settings
    kept = decide_settings(update(tier("a", 5)), old, set(), None).settings
    assert (moved.mode, moved.external_url) == (TicketingMode.PAID, None)
    assert (kept.mode, kept.external_url) == (TicketingMode.EXTERNAL, "https://old.example")


def test_an_empty_external_url_is_not_external() -> None:
    assert decide_settings(update(tier("a"), external_url=""), None, set(), None).settings.mode is (
        TicketingMode.FREE
    )


def test_external_wins_over_paid_tiers() -> None:
    settings = decide_settings(update(tier("a", 5), external_url="https://x"), None, set(), None)
    assert settings.settings.mode is TicketingMode.EXTERNAL


def test_legacy_settings_keep_mode_provider_account_currency_and_flag() -> None:
    old = stored(TicketingMode.PAID, legacy=True)
    settings = decide_settings(update(tier("b")), old, set(), "default").settings
    assert (settings.mode, settings.provider_account_id, settings.currency_code) == (
        TicketingMode.PAID,
        "kept",
        "JPY",
    )
    assert settings.legacy
    assert settings.tiers == (tier("b"),)


def test_a_non_legacy_paid_event_is_derived_again() -> None:
    old = stored(TicketingMode.PAID, legacy=False)
    assert decide_settings(update(tier("b")), old, set(), None).settings.mode is TicketingMode.FREE


def test_removed_tiers_in_use_are_retained_and_others_deleted() -> None:
    old = stored(TicketingMode.PAID, legacy=False, tiers=(tier("x", 5), tier("y", 5)))
    decision = decide_settings(update(tier("z", 5)), old, {"x"}, None)
    assert decision.retained_tier_ids == ("x",)
    assert decision.deleted_tier_ids == ("y",)
    assert [(t.tier_id, t.retained) for t in decision.settings.tiers] == [("z", False), ("x", True)]


def test_a_tier_is_on_sale_only_inside_its_window_and_when_not_retained() -> None:
    window = Tier("t", "t", 5, None, NOW, NOW + timedelta(hours=1))
    assert window.is_on_sale(NOW)
    assert not window.is_on_sale(NOW - timedelta(seconds=1))
    assert not window.is_on_sale(NOW + timedelta(hours=1))
    assert not Tier("t", "t", 5, None, retained=True).is_on_sale(NOW)


def test_a_tier_without_a_sale_end_stays_on_sale_until_the_event_starts() -> None:
    start = datetime(2026, 12, 24, 19, tzinfo=UTC)
    open_ended = Tier("vip", "VIP", 100, None)
    assert open_ended.is_on_sale(start - timedelta(seconds=1), event_start=start)
    assert not open_ended.is_on_sale(start, event_start=start)
    assert open_ended.is_on_sale(start + timedelta(days=1))  # no start time: no end
    later_end = Tier("vip", "VIP", 100, None, sale_end_time=start + timedelta(hours=1))
    assert later_end.is_on_sale(start, event_start=start)  # its own end wins
