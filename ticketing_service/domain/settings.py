"""An event's ticketing settings and the rules that derive them from what the organizer saved."""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from ticketing_service.domain.money import DEFAULT_CURRENCY
from ticketing_service.domain.refunds import RefundRule

PORTONE = "portone"
# An event's title: shown at the checkout (its order name) and in the feed.
MAX_TITLE_LENGTH = 300


class TicketingMode(enum.StrEnum):
    """How an event sells its tickets."""

    FREE = "free"
    PAID = "paid"
    EXTERNAL = "external"


@dataclass(frozen=True, slots=True)
class Tier:
    """One ticket tier; `capacity` None is unlimited, `retained` means kept only while in use."""

    tier_id: str
    name: str
    price_amount: int
    capacity: int | None
    sale_start_time: datetime | None = None
    sale_end_time: datetime | None = None
    retained: bool = False
    accepted_count: int = 0

    @property
    def is_paid(self) -> bool:
        """A tier is paid when its price is above 0."""
        return self.price_amount > 0

    def is_on_sale(self, now: datetime, event_start: datetime | None = None) -> bool:
        """Offered (not retained-only) and inside its sale window; a window with no end closes
        when the event starts, if the event has a start time."""
        if self.retained:
            return False
        if self.sale_start_time is not None and now < self.sale_start_time:
            return False
        end = self.sale_end_time or event_start
        return end is None or now < end


@dataclass(frozen=True, slots=True)
class Settings:
    """The stored ticketing settings of one event."""

    event_id: str
    event_title: str
    mode: TicketingMode
    provider: str | None
    provider_account_id: str | None
    currency_code: str | None
    enabled: bool
    legacy: bool
    external_url: str | None
    tiers: tuple[Tier, ...]
    update_time: datetime | None = None
    event_start_time: datetime | None = None
    # The organizer's refund rules; None: Moim's published policy (refunds.DEFAULT_REFUND_POLICY).
    refund_policy: tuple[RefundRule, ...] | None = None
    # When the organizer cancelled the event (CancelEvent); None: it is on.
    cancel_time: datetime | None = None

    def tier(self, tier_id: str) -> Tier | None:
        """The tier with this id, retained ones included."""
        return next((t for t in self.tiers if t.tier_id == tier_id), None)


@dataclass(frozen=True, slots=True)
class SettingsUpdate:
    """What the organizer saved: the complete tier list and the optional overrides."""

    event_id: str
    event_title: str
    tiers: tuple[Tier, ...]
    # None: not set at all (keeps legacy/external); "": set and empty (moves off external).
    external_url: str | None
    currency_code: str | None
    provider_account_id: str | None
    event_start_time: datetime | None = None
    refund_policy: tuple[RefundRule, ...] | None = None


@dataclass(frozen=True, slots=True)
class SettingsDecision:
    """The settings to store and the missing tiers kept because they are in use."""

    settings: Settings
    retained_tier_ids: tuple[str, ...]
    deleted_tier_ids: tuple[str, ...]


def decide_settings(
    update: SettingsUpdate,
    stored: Settings | None,
    tiers_in_use: Collection[str],
    default_provider_account_id: str | None,
) -> SettingsDecision:
    """Apply the derivation, legacy preservation and in-use retention rules of an update."""
    settings = _derive_mode(update, default_provider_account_id)
    if stored is not None and _preserves_stored_mode(update, stored):
        settings = replace(
            settings,
            mode=stored.mode,
            provider=stored.provider,
            provider_account_id=stored.provider_account_id,
            currency_code=stored.currency_code,
            enabled=stored.enabled,
            legacy=stored.legacy,
            external_url=stored.external_url,
        )
    offered_ids = {t.tier_id for t in update.tiers}
    missing = [t for t in (stored.tiers if stored else ()) if t.tier_id not in offered_ids]
    kept = [replace(t, retained=True) for t in missing if t.tier_id in tiers_in_use]
    deleted = tuple(t.tier_id for t in missing if t.tier_id not in tiers_in_use)
    return SettingsDecision(
        settings=replace(settings, tiers=(*update.tiers, *kept)),
        retained_tier_ids=tuple(t.tier_id for t in kept),
        deleted_tier_ids=deleted,
    )


def _preserves_stored_mode(update: SettingsUpdate, stored: Settings) -> bool:
    # Events configured by the legacy external system keep their ticketing until Moim says
    # otherwise explicitly: an absent external_url is "no opinion", an empty one is "move off".
    is_legacy_or_external = stored.legacy or stored.mode is TicketingMode.EXTERNAL
    return is_legacy_or_external and update.external_url is None


def _derive_mode(update: SettingsUpdate, default_account: str | None) -> Settings:
    base = Settings(
        event_id=update.event_id,
        event_title=update.event_title,
        mode=TicketingMode.FREE,
        provider=None,
        provider_account_id=None,
        currency_code=None,
        enabled=False,
        legacy=False,
        external_url=None,
        tiers=update.tiers,
        event_start_time=update.event_start_time,
        refund_policy=update.refund_policy,
    )
    if update.external_url:
        return replace(base, mode=TicketingMode.EXTERNAL, external_url=update.external_url)
    if any(t.is_paid for t in update.tiers):
        account = update.provider_account_id or default_account
        return replace(
            base,
            mode=TicketingMode.PAID,
            provider=PORTONE,
            provider_account_id=account,
            currency_code=update.currency_code or DEFAULT_CURRENCY,
            enabled=True,
        )
    return base


def repeated_tier_ids(tiers: Sequence[Tier]) -> list[tuple[int, int]]:
    """Each tier whose id an earlier tier already has: (its index, the earlier one's index)."""
    first: dict[str, int] = {}
    repeats: list[tuple[int, int]] = []
    for index, tier in enumerate(tiers):
        if tier.tier_id in first:
            repeats.append((index, first[tier.tier_id]))
        else:
            first[tier.tier_id] = index
    return repeats
