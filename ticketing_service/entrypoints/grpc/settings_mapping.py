"""Reads settings requests into domain commands and writes settings into messages."""

from __future__ import annotations

from moim.ticketing.v1 import settings_pb2, ticketing_service_pb2

from ticketing_service.domain.refunds import RefundRule, policy_problems
from ticketing_service.domain.settings import (
    MAX_TITLE_LENGTH,
    Settings,
    SettingsUpdate,
    TicketingMode,
    Tier,
    repeated_tier_ids,
)
from ticketing_service.entrypoints.grpc.timestamps import write_timestamp
from ticketing_service.entrypoints.grpc.validation import MAX_NAME_LENGTH, Violations

MAX_REFUND_RULES = 20

_MODES = {
    TicketingMode.FREE: settings_pb2.TICKETING_MODE_FREE,
    TicketingMode.PAID: settings_pb2.TICKETING_MODE_PAID,
    TicketingMode.EXTERNAL: settings_pb2.TICKETING_MODE_EXTERNAL,
}


def read_settings_update(
    request: ticketing_service_pb2.UpdateTicketingSettingsRequest,
) -> SettingsUpdate:
    """The update to apply, or InvalidArgument listing every bad field."""
    v = Violations()
    event_id = v.required_id("event_id", request.event_id)
    title = v.text("event_title", request.event_title, MAX_TITLE_LENGTH)
    # At most validation.MAX_LIST_LENGTH tiers: the servicer refused a longer list unread.
    tiers = tuple(_read_tier(v, f"tiers[{i}]", t) for i, t in enumerate(request.tiers))
    for index, first in repeated_tier_ids(tiers):
        v.add(f"tiers[{index}].tier_id", f"Repeats the id of tiers[{first}]; ids must be unique.")
    external_url = request.external_url if request.HasField("external_url") else None
    if external_url:
        v.url("external_url", external_url)
    currency = v.currency("currency_code", request.currency_code, required=False)
    account = v.text("provider_account_id", request.provider_account_id, 128) or None
    start = (
        v.timestamp("event_start_time", request.event_start_time)
        if request.HasField("event_start_time")
        else None
    )
    policy = _read_refund_policy(v, request)
    v.raise_if_any()
    return SettingsUpdate(event_id, title, tiers, external_url, currency, account, start, policy)


def _read_refund_policy(
    v: Violations, request: ticketing_service_pb2.UpdateTicketingSettingsRequest
) -> tuple[RefundRule, ...] | None:
    """The organizer's refund rules; None (Moim's published policy) when none are given."""
    if len(request.refund_policy) > MAX_REFUND_RULES:
        v.add("refund_policy", f"A refund policy has at most {MAX_REFUND_RULES} rules.")
        return None
    rules = tuple(RefundRule(r.min_hours_before_start, r.percent) for r in request.refund_policy)
    for problem in policy_problems(rules):
        v.add("refund_policy", problem)
    return rules or None


def _read_tier(v: Violations, path: str, tier: settings_pb2.TierInput) -> Tier:
    start = (
        v.timestamp(f"{path}.sale_start_time", tier.sale_start_time)
        if tier.HasField("sale_start_time")
        else None
    )
    end = (
        v.timestamp(f"{path}.sale_end_time", tier.sale_end_time)
        if tier.HasField("sale_end_time")
        else None
    )
    if start is not None and end is not None and end <= start:
        v.add(f"{path}.sale_end_time", "Must be after sale_start_time.")
    # Capacity 0 or below means unlimited, as Moim has always sent it.
    capacity = tier.capacity if tier.HasField("capacity") and tier.capacity > 0 else None
    return Tier(
        tier_id=v.required_id(f"{path}.tier_id", tier.tier_id),
        name=v.text(f"{path}.name", tier.name, MAX_NAME_LENGTH, required=True),
        price_amount=v.amount(f"{path}.price_amount", tier.price_amount),
        capacity=capacity,
        sale_start_time=start,
        sale_end_time=end,
    )


def write_settings(settings: Settings) -> settings_pb2.TicketingSettings:
    """The settings as a message; absent values become empty fields."""
    message = settings_pb2.TicketingSettings(
        event_id=settings.event_id,
        event_title=settings.event_title,
        mode=_MODES[settings.mode],
        provider=settings.provider or "",
        provider_account_id=settings.provider_account_id or "",
        currency_code=settings.currency_code or "",
        enabled=settings.enabled,
        legacy=settings.legacy,
        external_url=settings.external_url or "",
        tiers=[_write_tier(t) for t in settings.tiers],
    )
    if settings.update_time is not None:
        write_timestamp(message.update_time, settings.update_time)
    if settings.event_start_time is not None:
        write_timestamp(message.event_start_time, settings.event_start_time)
    if settings.cancel_time is not None:
        write_timestamp(message.cancel_time, settings.cancel_time)
    for rule in settings.refund_policy or ():
        message.refund_policy.add(
            min_hours_before_start=rule.min_hours_before_start, percent=rule.percent
        )
    return message


def _write_tier(tier: Tier) -> settings_pb2.Tier:
    message = settings_pb2.Tier(
        tier_id=tier.tier_id,
        name=tier.name,
        price_amount=tier.price_amount,
        retained=tier.retained,
        accepted_count=tier.accepted_count,
    )
    if tier.capacity is not None:
        message.capacity = tier.capacity
    if tier.sale_start_time is not None:
        write_timestamp(message.sale_start_time, tier.sale_start_time)
    if tier.sale_end_time is not None:
        write_timestamp(message.sale_end_time, tier.sale_end_time)
    return message
