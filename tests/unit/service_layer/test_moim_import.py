"""ImportMoim on fakes of its ports: one transaction per event, kept only when not a dry run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import pytest

from ticketing_service.domain.moim_plan import (
    EventPlan,
    ServiceHold,
    ServiceRegistration,
    ServiceReservation,
)
from ticketing_service.domain.moim_source import SourceEvent, SourceSettings, SourceSnapshot
from ticketing_service.domain.settings import Tier
from ticketing_service.service_layer.moim_import import (
    EventImportFailed,
    MoimImport,
    TargetUnavailable,
    Written,
    import_moim,
)

NOW = datetime(2030, 5, 1, tzinfo=UTC)
FREE = SourceSettings("free", None, None, None, True, True)


@dataclass
class FakeSource:
    events: tuple[SourceEvent, ...]

    async def read(self) -> SourceSnapshot:
        return SourceSnapshot(NOW, self.events)


@dataclass
class TargetState:
    """What the fake target kept, and the events whose write fails."""

    failing: set[str] = field(default_factory=set)
    committed: list[str] = field(default_factory=list)
    ready: bool = True


class FakeTarget:
    def __init__(self, state: TargetState) -> None:
        self._state = state
        self._written: list[str] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._written.clear()  # a rollback: what was not committed is gone

    async def check_ready(self) -> None:
        if not self._state.ready:
            raise TargetUnavailable("not migrated")

    async def lock_event(self, event_id: str) -> None:
        """Nothing else runs."""

    async def registrations_of(self, event_id: str) -> list[ServiceRegistration]:
        return []

    async def live_holds_of(self, event_id: str) -> list[ServiceHold]:
        return []

    async def reservations_of(self, event_id: str) -> list[ServiceReservation]:
        return []

    async def tiers_of(self, event_id: str) -> list[Tier] | None:
        return None

    async def write(self, plan: EventPlan) -> Written:
        if plan.event_id in self._state.failing:
            raise EventImportFailed("the database refused a row")
        self._written.append(plan.event_id)
        return Written(settings_created=True)

    async def commit(self) -> None:
        self._state.committed.extend(self._written)
        self._written.clear()


def event(event_id: str) -> SourceEvent:
    return SourceEvent(event_id, event_id.title(), NOW, "", FREE)


def ports(state: TargetState, *event_ids: str) -> MoimImport:
    source = FakeSource(tuple(event(e) for e in event_ids))
    return MoimImport(source, lambda: FakeTarget(state), "https://moim.example")


async def test_each_event_is_committed_on_its_own_and_a_failing_one_is_reported() -> None:
    state = TargetState(failing={"b"})
    report = await import_moim(ports(state, "a", "b", "c"), dry_run=False)
    assert state.committed == ["a", "c"]
    assert [(o.event_id, o.failure) for o in report.outcomes] == [
        ("a", None),
        ("b", "the database refused a row"),
        ("c", None),
    ]


async def test_a_dry_run_plans_and_writes_every_event_and_commits_none() -> None:
    state = TargetState()
    report = await import_moim(ports(state, "a", "b"), dry_run=True)
    assert state.committed == []
    assert report.dry_run
    assert [o.written for o in report.outcomes] == [Written(settings_created=True)] * 2


async def test_an_unready_target_stops_the_import_before_any_event() -> None:
    state = TargetState(ready=False)
    with pytest.raises(TargetUnavailable):
        await import_moim(ports(state, "a"), dry_run=False)
    assert state.committed == []
