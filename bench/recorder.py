"""Every statement the service's own code sends, recorded at the driver, by transaction.

`bench/limit.py` turns the recorded transactions into pgbench scripts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ticketing_service.adapters.db.pool import Database, PoolSettings
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork

# Sent by the `Transaction` around the statements; the pgbench script writes its own.
_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK"}


@dataclass
class Transaction:
    """The statements of one recorded transaction, each with its parameters ($1, $2, …)."""

    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    end: str = "COMMIT"


class StatementRecorder:
    """Records every statement a pool's connections send, grouped into transactions.

    Recording is at the driver: the pool's connections are of a class that notes each
    statement and its parameters before sending them. Transactions are the units of work
    (`unit_of_work()` wraps them). A statement run per parameter set (`Transaction.many`, the
    settings' tiers) has no pgbench form here: recording one fails rather than leaving it out
    of the limit.
    """

    def __init__(self, database_url: str) -> None:
        self.transactions: list[Transaction] = []
        self._open: Transaction | None = None
        recorder = self

        class RecordingConnection(asyncpg.Connection):
            async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
                if query not in _CONTROL:
                    recorder._statement(query, args)
                return await super().execute(query, *args, **kwargs)

            async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
                recorder._statement(query, args)
                return await super().fetch(query, *args, **kwargs)

            async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
                recorder._statement(query, args)
                return await super().fetchrow(query, *args, **kwargs)

            async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
                if recorder._open is not None:
                    raise TypeError(f"executemany is not recorded for pgbench: {command!r}")
                await super().executemany(command, args, **kwargs)

        self.database = Database(
            database_url, PoolSettings(pool_size=1), connection_class=RecordingConnection
        )

    def unit_of_work(self) -> _RecordedUnitOfWork:
        """A unit of work on the recorder's pool whose transaction is recorded as one."""
        return _RecordedUnitOfWork(SqlUnitOfWork(self.database), self)

    def _begin(self) -> None:
        self._open = Transaction()

    def _statement(self, sql: str, params: tuple[Any, ...]) -> None:
        if self._open is None:
            return  # the driver's own queries when a connection is first made
        self._open.statements.append((sql, params))

    def _end(self, how: str) -> None:
        if self._open is not None and self._open.statements:
            self._open.end = how
            self.transactions.append(self._open)
        self._open = None

    def take(self) -> list[Transaction]:
        """The transactions recorded since the last call."""
        taken, self.transactions = self.transactions, []
        return taken


class _RecordedUnitOfWork:
    """A unit of work that tells the recorder where its transaction begins and ends."""

    def __init__(self, uow: SqlUnitOfWork, recorder: StatementRecorder) -> None:
        self._uow = uow
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:  # the repositories
        return getattr(self._uow, name)

    async def __aenter__(self) -> _RecordedUnitOfWork:
        await self._uow.__aenter__()
        self._recorder._begin()
        return self

    async def commit(self) -> None:
        await self._uow.commit()
        self._recorder._end("COMMIT")

    async def __aexit__(self, *exc: Any) -> None:
        self._recorder._end("ROLLBACK")
        await self._uow.__aexit__(*exc)
