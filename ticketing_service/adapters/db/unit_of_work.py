"""The unit of work on Postgres: one transaction, rolled back unless committed.

Database failures are translated here into the domain's errors, so a lost connection answers
`UNAVAILABLE` and a lock wait past `lock_timeout` answers `ABORTED`, never `INTERNAL`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import asyncpg

from ticketing_service.adapters.db.events_repository import SqlEventsRepository
from ticketing_service.adapters.db.pool import Database, PoolTimeout
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
# What a database failure raises: the server's errors and asyncpg's connection errors (with a
# SQLSTATE), the socket's, and the pool's timeout.
_DATABASE_ERRORS = (asyncpg.PostgresError, OSError, PoolTimeout)


def translate_database_error(error: BaseException) -> TicketingError | None:
    """The domain error for a database error a client can act on, or None for a bug.

    The server's errors carry a SQLSTATE, and so does a lost connection (`transaction.py`
    reports it as asyncpg's 08003); a connection that cannot be made fails with the socket's
    OSError. A pool timeout means every connection of this process stayed busy. asyncpg's
    other client-side errors (a bad parameter type, a misused connection) are bugs.
    """
    if isinstance(error, PoolTimeout):
        return DatabaseUnavailable(
            "Every database connection of this process stayed busy; retry shortly."
        )
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate in _RETRYABLE_SQLSTATES:
        return ConcurrentUpdate("A concurrent change held a lock too long or conflicted; retry.")
    # OSError: the connection cannot be made (refused, timed out); 08: it was lost; 28 and 3D:
    # the server refused the login or has no such database; 53: it has no room for another
    # connection; 57P: it is shutting down or starting.
    lost = isinstance(error, OSError)
    if lost or (sqlstate is not None and sqlstate.startswith(("08", "28", "3D", "53", "57P"))):
        return DatabaseUnavailable("The database cannot be reached right now; retry shortly.")
    return None


class SqlUnitOfWork:
    """The UnitOfWork port on a pool of Postgres connections."""

    settings: SqlSettingsRepository
    reservations: SqlReservationRepository
    events: SqlEventsRepository

    def __init__(
        self,
        database: Database,
        *,
        after_events_commit: Callable[[], None] | None = None,
        locking: bool = True,
        pause: Pause = no_pause,
    ) -> None:
        # `locking` and `pause` are for the tests that prove each lock matters; the composition
        # root never passes them.
        self._database = database
        self._tx: Transaction | None = None
        self._locking = locking
        self._pause = pause
        self._after_events_commit = after_events_commit

    async def __aenter__(self) -> Self:
        """Check out a connection and begin the transaction."""
        tx = Transaction(self._database)
        try:
            await tx.open()
        except _DATABASE_ERRORS as error:
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
        if isinstance(exc, _DATABASE_ERRORS):
            translated = translate_database_error(exc)
            if translated is not None:
                raise translated from exc

    async def commit(self) -> None:
        """Commit the transaction."""
        assert self._tx is not None, "commit() outside of `async with`"
        await self._tx.commit()
        if self.reservations.appended_events and self._after_events_commit is not None:
            self._after_events_commit()
