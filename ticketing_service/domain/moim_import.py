"""What import-moim brings in for one event of the original implementation, and what it cannot.

The plan is decided here from plain values; an adapter writes it. Its rules:
- settings and tiers as stored (a backfilled paid event stays disabled until its organizer
  saves it), for an event the service does not know (else its own tiers are the ones mapped
  to); a tier's NULL or negative price is free, a NULL or non-positive capacity is
  unlimited, and an unset sale end is the event's start, as the original treated them;
- a paid reservation with a paid payment is settled: confirmed with a registration (the RSVP's
  id) when its RSVP is accepted and the user has no other seat, otherwise `paid_unfulfilled`,
  owing its payment back in full when auto refund is on (as the service's own);
- accepted RSVPs of users without a registration count as seats their tier already gave away,
  unless the service keeps a registration or reservation of that user in the tier;
- a status the original never writes (e.g. `ACCEPTED`) is understood as nothing: its row is
  listed and left alone, never read as "not accepted" with a refund to owe;
- holds with a checkout are brought in live while they hold a seat the service can give (after
  its registrations and its own live holds), and ended (`expired`) otherwise, so a late
  payment for one is settled as the service settles any; reconciliation asks about every
  ended one still in its window at once, as Moim may have refused its payment. A live hold
  ends no later than the service's hold length from the import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ticketing_service.domain.moim_holds import holds
from ticketing_service.domain.moim_plan import (
    EventPlan,
    Problem,
    ProblemKind,
    ServiceHold,
    ServiceRegistration,
    ServiceReservation,
)
from ticketing_service.domain.moim_rows import EventRows
from ticketing_service.domain.moim_seats import external_seats, settled_reservations
from ticketing_service.domain.moim_source import SourceEvent, SourceTier, time_problem
from ticketing_service.domain.money import is_known_currency
from ticketing_service.domain.reconciliation import ReconcilePolicy
from ticketing_service.domain.settings import MAX_TITLE_LENGTH, Settings, TicketingMode, Tier


def plan_event(
    event: SourceEvent,
    registered: Sequence[ServiceRegistration],
    public_base_url: str,
    now: datetime,
    *,
    auto_refund: bool,
    reconcile: ReconcilePolicy,
    held: Sequence[ServiceHold] = (),
    owners: Mapping[str, str] | None = None,
    reserved: Sequence[ServiceReservation] = (),
    service_tiers: Sequence[Tier] | None = None,
    hold_length: timedelta = timedelta(minutes=10),
) -> EventPlan:
    """The plan for one event: `registered` and `held` are the registrations and live holds
    the service already keeps there, `now` the source's clock (it tells live holds from ended
    ones), `auto_refund` whether a payment without a seat is owed back by itself
    (TICKETING_AUTO_REFUND), `reconcile` how long reconciliation follows up an ended hold,
    `owners` the reservation each provider payment id paid first in the whole source (this
    event's alone when not given), `reserved` every reservation the service keeps there,
    `service_tiers` the tiers of an event the service knows already (None when it does not: its
    settings and tiers are then Moim's), `hold_length` the service's (TICKETING_HOLD_SECONDS)."""
    unusable = _unusable_settings(event)
    if unusable is not None:
        return EventPlan(event.event_id, event.title, None, problems=(unusable,))
    settings = _settings(event)
    if service_tiers is not None:
        # The settings of an event the service knows are its own (the organizer's saves): rows
        # are mapped to its tiers, and one in a tier it does not have is listed, not added.
        settings = replace(settings, tiers=tuple(service_tiers))
    rows = EventRows(
        event,
        settings.tiers,
        registered,
        public_base_url,
        now,
        auto_refund,
        reconcile,
        held,
        owners,
        reserved=reserved,
        hold_length=hold_length,
    )
    if len(event.title) > MAX_TITLE_LENGTH:
        detail = (
            f"has a title of {len(event.title)} characters: brought in as its first"
            f" {MAX_TITLE_LENGTH}, the most UpdateTicketingSettings takes"
        )
        rows.problems.append(Problem(ProblemKind.TITLE_TOO_LONG, f"event {event.event_id}", detail))
    if event.deleted and event.settings is not None and event.settings.enabled:
        detail = "was deleted in Moim: brought in with its ticketing disabled, so nothing is sold"
        rows.problems.append(Problem(ProblemKind.DELETED_EVENT, f"event {event.event_id}", detail))
    # In this order: holds keep a seat only if one is left after registrations and RSVPs.
    settled = settled_reservations(rows)
    seats = external_seats(rows)
    return EventPlan(
        event_id=event.event_id,
        title=event.title,
        settings=settings,
        external_seats=seats,
        settled=settled,
        holds=holds(rows, seats),
        problems=tuple(rows.problems),
    )


def _unusable_settings(event: SourceEvent) -> Problem | None:
    subject = f"event {event.event_id}"
    stored = event.settings
    if stored is None:
        detail = "has no row in event_ticketing_settings: nothing was imported for it"
        return Problem(ProblemKind.NO_SETTINGS, subject, detail)
    if stored.mode not in TicketingMode.__members__.values():
        detail = f"its ticketing mode {stored.mode!r} is none of free, paid, external"
        return Problem(ProblemKind.UNUSABLE_SETTINGS, subject, detail + ": nothing imported")
    if stored.currency is not None and not is_known_currency(stored.currency):
        detail = f"its currency {stored.currency!r} is not one the service knows"
        return Problem(ProblemKind.UNUSABLE_SETTINGS, subject, detail + ": nothing imported")
    if (why := _time_problem(event)) is not None:
        return Problem(ProblemKind.UNUSABLE_SETTINGS, subject, why + ": nothing imported")
    return None


def _time_problem(event: SourceEvent) -> str | None:
    """Why a time of the event or of its tiers cannot be kept (the settings need them all)."""
    times: list[tuple[str, datetime | None]] = [("starts_at", event.starts_at)]
    for tier in event.tiers:
        times += [(f"tier {tier.tier_id}'s opens_at", tier.opens_at)]
        times += [(f"tier {tier.tier_id}'s closes_at", tier.closes_at)]
    return next((why for c, v in times if (why := time_problem(c, v)) is not None), None)


def _settings(event: SourceEvent) -> Settings:
    stored = event.settings
    assert stored is not None, "checked by _unusable_settings"
    mode = TicketingMode(stored.mode)
    external = event.external_url or None if mode is TicketingMode.EXTERNAL else None
    ordered = sorted(event.tiers, key=lambda t: (t.sort_order, t.created_at, t.tier_id))
    return Settings(
        event_id=event.event_id,
        event_title=event.title[:MAX_TITLE_LENGTH],
        mode=mode,
        provider=stored.provider,
        provider_account_id=stored.provider_account_id,
        currency_code=stored.currency,
        enabled=stored.enabled and not event.deleted,
        legacy=stored.legacy,
        external_url=external,
        tiers=tuple(_tier(t, event.starts_at) for t in ordered),
        event_start_time=event.starts_at,
    )


def _tier(tier: SourceTier, starts_at: datetime) -> Tier:
    # The original treated a negative price as free and a capacity of 0 or less as unlimited.
    capacity = tier.capacity if tier.capacity is not None and tier.capacity > 0 else None
    return Tier(
        tier_id=tier.tier_id,
        name=tier.name,
        price_amount=max(tier.price_amount or 0, 0),
        capacity=capacity,
        sale_start_time=tier.opens_at,
        sale_end_time=tier.closes_at or starts_at,
    )
