"""The ports the use cases need: a unit of work over the repositories of the service's state."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from types import TracebackType
from typing import Protocol, Self

from ticketing_service.domain.settings import Settings


class SettingsRepository(Protocol):
    """Ticketing settings and tiers of events."""

    async def lock_event(self, event_id: str) -> None:
        """Serialize settings updates of one event until the transaction ends."""
        ...

    async def get(self, event_id: str) -> Settings | None:
        """The stored settings with their live (not deleted) tiers, or None."""
        ...

    async def lock_tiers_in_use(self, event_id: str, tier_ids: Collection[str]) -> set[str]:
        """Lock these tiers and return those with a live hold or an accepted registration."""
        ...

    async def save(self, settings: Settings, deleted_tier_ids: Sequence[str]) -> Settings:
        """Store the settings and tiers, delete the given tiers; return what is now stored."""
        ...


class UnitOfWork(Protocol):
    """One database transaction; it rolls back on exit unless `commit()` was called."""

    @property
    def settings(self) -> SettingsRepository:
        """Ticketing settings and tiers."""
        ...

    async def __aenter__(self) -> Self:
        """Begin the transaction."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back what was not committed and release the connection."""
        ...

    async def commit(self) -> None:
        """Make the transaction's changes durable."""
        ...


class UnitOfWorkFactory(Protocol):
    """Makes a fresh unit of work for each use case."""

    def __call__(self) -> UnitOfWork:
        """A new, not yet entered, unit of work."""
        ...
