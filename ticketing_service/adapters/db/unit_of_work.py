"""The unit of work on Postgres: one transaction, rolled back unless committed.

Database failures are translated here into the domain's errors, so a lost connection answers
`UNAVAILABLE` and a lock wait past `lock_timeout` answers `ABORTED`, never `INTERNAL`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import asyncpg

from ticketing_service.adapters.db.cancellation_repository import SqlCancellationRepository
from ticketing_service.adapters.db.changes import Changes, Protections
from ticketing_service.adapters.db.events_repository import SqlEventsRepository
from ticketing_service.adapters.db.hold_repository import SqlHoldRepository
from ticketing_service.adapters.db.payment_repository import SqlPaymentRepository
from ticketing_service.adapters.db.pool import Database, PoolTimeout
from ticketing_service.adapters.db.reconciliation_repository import SqlReconciliationRepository
from ticketing_service.adapters.db.refund_repository import SqlRefundRepository
from ticketing_service.adapters.db.settings_repository import SqlSettingsRepository
from ticketing_service.adapters.db.sweep_repository import SqlSweepRepository
from ticketing_service.adapters.db.transaction import Transaction
from ticketing_service.domain.errors import ConcurrentUpdate, DatabaseUnavailable, TicketingError
from ticketing_service.service_layer.ports import AfterCommit, Committed

# SQLSTATEs a client should retry: serialization failure, deadlock, lock timeout.
_RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
# The unique constraints two transactions can race on, where the retry finds the row the other
# one committed: only the live-hold-per-user index, the backstop behind the user lock. Any other
# unique violation, and a statement that ran past statement_timeout, is a bug or an overload a
# person must look at: it answers INTERNAL and is logged, never an endless client retry.
_RACED_CONSTRAINTS = {"uq_reservations_live_per_user_event"}
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
    raced = sqlstate == "23505" and getattr(error, "constraint_name", None) in _RACED_CONSTRAINTS
    if raced or sqlstate in _RETRYABLE_SQLSTATES:
        return ConcurrentUpdate("A concurrent change held a lock too long or conflicted; retry.")
    # 28 and 3D: the server refused the login or has no such database, which no retry mends.
    if sqlstate is not None and sqlstate.startswith(("28", "3D")):
        return DatabaseUnavailable(
            "The database refused the service's login, or has no such database: check the"
            " user, password and database name of DATABASE_URL."
        )
    # OSError: the connection cannot be made (refused, timed out); 08: it was lost; 53: it has
    # no room for another connection; 57P: it is shutting down or starting; 25006: it is a
    # read-only standby (a failover left us on one until the connection is replaced).
    lost = isinstance(error, OSError)
    if lost or (sqlstate is not None and sqlstate.startswith(("08", "53", "57P", "25006"))):
        return DatabaseUnavailable("The database cannot be reached right now; retry shortly.")
    return None


class SqlUnitOfWork:
    """The UnitOfWork port on a pool of Postgres connections."""

    settings: SqlSettingsRepository
    holds: SqlHoldRepository
    payments: SqlPaymentRepository
    sweeps: SqlSweepRepository
    reconciliation: SqlReconciliationRepository
    refunds: SqlRefundRepository
    cancellations: SqlCancellationRepository
    events: SqlEventsRepository

    def __init__(
        self,
        database: Database,
        *,
        after_commit: AfterCommit | None = None,
        protections: Protections = Protections(),  # noqa: B008 - frozen, so safe to share
    ) -> None:
        # `protections` is for the tests that prove each protection matters; the composition
        # root never passes it.
        self._database = database
        self._tx: Transaction | None = None
        self._changes: Changes | None = None
        self._protections = protections
        self._after_commit = after_commit
        self.late_payment = False

    async def __aenter__(self) -> Self:
        """Check out a connection and begin the transaction."""
        tx = Transaction(self._database)
        try:
            await tx.open()
        except _DATABASE_ERRORS as error:
            await tx.close()
            raise translate_database_error(error) or error from error
        self._tx = tx
        self._changes = changes = Changes(tx)
        self.settings = SqlSettingsRepository(tx)
        self.events = SqlEventsRepository(tx)
        self.holds = SqlHoldRepository(changes, self._protections)
        self.payments = SqlPaymentRepository(changes)
        self.sweeps = SqlSweepRepository(changes)
        self.reconciliation = SqlReconciliationRepository(changes)
        self.refunds = SqlRefundRepository(changes, self._protections.pause)
        self.cancellations = SqlCancellationRepository(changes, self._protections)
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

    def read_one_snapshot(self) -> None:
        """Have every read of this (read-only) unit of work see the database at one moment."""
        assert self._tx is not None, "read_one_snapshot() outside of `async with`"
        if self._protections.one_snapshot:
            self._tx.read_one_snapshot()

    async def commit(self) -> None:
        """Commit the transaction."""
        assert self._tx is not None, "commit() outside of `async with`"
        await self._tx.commit()
        if self._after_commit is not None and self._changes is not None:
            self._after_commit(Committed(self._changes.appended, self.late_payment))
