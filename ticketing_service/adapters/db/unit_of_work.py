"""The unit of work on Postgres: one transaction, rolled back unless committed.

Database failures are translated here into the domain's errors, so a lost connection answers
`UNAVAILABLE` and a lock wait past `lock_timeout` answers `ABORTED`, never `INTERNAL`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine

from ticketing_service.adapters.db.events_repository import SqlEventsRepository
from ticketing_service.adapters.db.reservation_repository import (
    Pause,
    SqlReservationRepository,
    no_pause,
)
from ticketing_service.adapters.db.settings_repository import SqlSettingsRepository
from ticketing_service.adapters.db.transaction import Transaction
from ticketing_service.domain.errors import ConcurrentUpdate, DatabaseUnavailable, TicketingError

# SQLSTATEs a client should retry: serialization failure, deadlock, lock or statement timeout.
# A unique violation is retryable too: the row a concurrent transaction just committed is there
# for the retry to find.
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03", "57014", "23505"}


def translate_database_error(
    error: DBAPIError | psycopg.Error | PoolTimeout,
) -> TicketingError | None:
    """The domain error for a database error a client can act on, or None for a bug.

    Checking out a pooled connection (SQLAlchemy) fails with its DBAPIError, statements
    (sent straight to psycopg) with psycopg's own errors; both carry the same SQLSTATE. A pool
    timeout means every connection of this process stayed busy.
    """
    if isinstance(error, PoolTimeout):
        return DatabaseUnavailable(
            "Every database connection of this process stayed busy; retry shortly."
        )
    driver_error = error.orig if isinstance(error, DBAPIError) else error
    sqlstate = getattr(driver_error, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return ConcurrentUpdate("A concurrent change held a lock too long or conflicted; retry.")
    lost = isinstance(error, DBAPIError) and error.connection_invalidated
    if lost or sqlstate is None or sqlstate.startswith(("08", "57P")):
        return DatabaseUnavailable("The database cannot be reached right now; retry shortly.")
    return None


class SqlUnitOfWork:
    """The UnitOfWork port on an async SQLAlchemy engine."""

    settings: SqlSettingsRepository
    reservations: SqlReservationRepository
    events: SqlEventsRepository

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        after_events_commit: Callable[[], None] | None = None,
        locking: bool = True,
        pause: Pause = no_pause,
    ) -> None:
        # `locking` and `pause` are for the tests that prove each lock matters; the composition
        # root never passes them.
        self._engine = engine
        self._tx: Transaction | None = None
        self._locking = locking
        self._pause = pause
        self._after_events_commit = after_events_commit

    async def __aenter__(self) -> Self:
        """Check out a connection and begin the transaction."""
        tx = Transaction(self._engine)
        try:
            await tx.open()
        except (DBAPIError, PoolTimeout) as error:
            await tx.close()
            raise translate_database_error(error) or error from error
        self._tx = tx
        self.settings = SqlSettingsRepository(tx)
        self.events = SqlEventsRepository(tx)
        self.reservations = SqlReservationRepository(tx, locking=self._locking, pause=self._pause)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Roll back anything not committed, return the connection, translate driver errors."""
        tx, self._tx = self._tx, None
        if tx is not None:
            await tx.close()
        # A pool timeout here: a stale connection's replacement waited too long.
        if isinstance(exc, DBAPIError | psycopg.Error | PoolTimeout):
            translated = translate_database_error(exc)
            if translated is not None:
                raise translated from exc

    async def commit(self) -> None:
        """Commit the transaction."""
        assert self._tx is not None, "commit() outside of `async with`"
        await self._tx.commit()
        if self.reservations.appended_events and self._after_events_commit is not None:
            self._after_events_commit()
