"""ImportMoim: bring in what the original implementation stored, one transaction per event.

The source is read once, in one snapshot. Each event is then planned (`domain.moim_import`)
and written in a transaction of its own, so an event that fails leaves the others imported;
a dry run writes each event the same way and rolls it back, so it reports exactly what a real
run would do and changes nothing. The plan is made inside the event's transaction, after the
event is locked, from what the service keeps there at that moment: a second run finds every
row the first one made and changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Protocol, Self

from ticketing_service.domain.moim_import import plan_event
from ticketing_service.domain.moim_plan import (
    EventPlan,
    Problem,
    ServiceHold,
    ServiceRegistration,
    ServiceReservation,
)
from ticketing_service.domain.moim_rows import payment_owners
from ticketing_service.domain.moim_source import SourceEvent, SourceSnapshot
from ticketing_service.domain.reconciliation import ReconcilePolicy
from ticketing_service.domain.reservations import ReservationStatus
from ticketing_service.domain.settings import Tier


class SourceUnreadable(Exception):
    """The original's database cannot be read: unreachable, or without the expected tables."""


class TargetUnavailable(Exception):
    """The service's database cannot be reached, or is not migrated to the latest schema."""


class EventImportFailed(Exception):
    """Writing one event failed; its transaction was rolled back."""


class MoimSource(Protocol):
    """The original implementation's tables."""

    async def read(self) -> SourceSnapshot:
        """Every event with its rows, read in one snapshot."""
        ...


@dataclass(frozen=True, slots=True)
class Written:
    """What writing one event's plan changed, and where the service keeps something else."""

    settings_created: bool = False
    tiers_created: int = 0
    # Tiers whose count of seats Moim gave away changed.
    seat_counts_changed: int = 0
    # Planned reservations that were new here, or moved from a hold to settled, by status.
    changed: Counter[ReservationStatus] = field(default_factory=Counter)
    # Settled reservations the service keeps in another state (left as they are).
    kept_otherwise: tuple[Problem, ...] = ()
    # Full refunds owed for the paid_unfulfilled reservations brought in now.
    refunds_owed: int = 0
    # Tiers with more seats taken than their capacity once written.
    over_capacity: tuple[OverCapacity, ...] = ()


@dataclass(frozen=True, slots=True)
class OverCapacity:
    """A tier whose seats taken (registrations, Moim's, live holds) exceed its capacity: Moim
    oversold it, or the service gave seats while the import ran. Nothing is taken back."""

    tier_id: str
    name: str
    taken: int
    capacity: int


class ImportTarget(Protocol):
    """One transaction on the service's database; rolled back on exit unless committed."""

    async def __aenter__(self) -> Self:
        """Begin the transaction."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back what was not committed; EventImportFailed for a database failure."""
        ...

    async def check_ready(self) -> None:
        """TargetUnavailable unless the schema is the one the import writes."""
        ...

    async def lock_event(self, event_id: str) -> None:
        """Serialize with settings updates of the event, and with seat counts of its tiers,
        until the transaction ends."""
        ...

    async def registrations_of(self, event_id: str) -> list[ServiceRegistration]:
        """The registrations the service keeps at the event, cancelled ones too."""
        ...

    async def live_holds_of(self, event_id: str) -> list[ServiceHold]:
        """The live holds the service keeps at the event."""
        ...

    async def reservations_of(self, event_id: str) -> list[ServiceReservation]:
        """Every reservation the service keeps at the event, in any state."""
        ...

    async def tiers_of(self, event_id: str) -> list[Tier] | None:
        """The tiers of the event when the service has its settings; None when it has not."""
        ...

    async def write(self, plan: EventPlan) -> Written:
        """Write the plan: create what is missing, settle holds the source settled, and owe
        the refunds of what it settles as paid_unfulfilled now."""
        ...

    async def commit(self) -> None:
        """Make the event's changes durable."""
        ...


@dataclass(frozen=True, slots=True)
class MoimImport:
    """What the import needs: the source, the service's database, Moim's public URL, whether
    a payment without a seat is owed back by itself (TICKETING_AUTO_REFUND), how long
    reconciliation follows up an ended hold (TICKETING_RECONCILE_WINDOW_HOURS), and how long
    a hold lasts at most (TICKETING_HOLD_SECONDS)."""

    source: MoimSource
    target: Callable[[], ImportTarget]
    public_base_url: str
    auto_refund: bool = True
    reconcile_policy: ReconcilePolicy = field(default_factory=ReconcilePolicy)
    hold_length: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """One event: its plan and what writing it changed, or why it failed."""

    event_id: str
    title: str
    plan: EventPlan | None = None
    written: Written | None = None
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """Every event's outcome; with `dry_run` nothing was kept."""

    dry_run: bool
    outcomes: tuple[EventOutcome, ...]
    auto_refund: bool = True


async def import_moim(
    ports: MoimImport,
    *,
    dry_run: bool,
    imported: Callable[[EventOutcome], object] = lambda outcome: None,
    ready: Callable[[], object] = lambda: None,
) -> ImportReport:
    """Import every event of the source, each in its own transaction; `ready` hears once both
    databases could be used, `imported` of each event once its transaction ended, so what was
    done is known if the run is stopped."""
    await _check_target(ports)
    snapshot = await ports.source.read()
    ready()
    owners = payment_owners(snapshot.events)
    outcomes = []
    for event in snapshot.events:
        outcomes.append(outcome := await _import_event(ports, event, snapshot, owners, dry_run))
        imported(outcome)
    return ImportReport(dry_run, tuple(outcomes), ports.auto_refund)


async def _check_target(ports: MoimImport) -> None:
    try:
        async with ports.target() as target:
            await target.check_ready()
    except EventImportFailed as error:
        raise TargetUnavailable(f"The service's database cannot be used: {error}") from error


async def _import_event(
    ports: MoimImport,
    event: SourceEvent,
    snapshot: SourceSnapshot,
    owners: Mapping[str, str],
    dry_run: bool,
) -> EventOutcome:
    try:
        async with ports.target() as target:
            await target.lock_event(event.event_id)
            registered = await target.registrations_of(event.event_id)
            held = await target.live_holds_of(event.event_id)
            reserved = await target.reservations_of(event.event_id)
            service_tiers = await target.tiers_of(event.event_id)
            plan = plan_event(
                event,
                registered,
                ports.public_base_url,
                snapshot.read_time,
                auto_refund=ports.auto_refund,
                reconcile=ports.reconcile_policy,
                held=held,
                owners=owners,
                reserved=reserved,
                service_tiers=service_tiers,
                hold_length=ports.hold_length,
            )
            written = await target.write(plan)
            if not dry_run:
                await target.commit()
    except EventImportFailed as error:
        return EventOutcome(event.event_id, event.title, failure=str(error))
    return EventOutcome(event.event_id, event.title, plan, written)
