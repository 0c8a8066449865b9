"""The process's pool of Postgres connections (psycopg 3), with timeouts so nothing waits forever.

Why psycopg, used directly. It pipelines: a transaction's BEGIN, a lock and the read after it
travel in one round trip (`transaction.py`), which asyncpg cannot do. Side by side under the
benchmark's load its server CPU per ConfirmPayment was within the bound the project set
against asyncpg's (docs/benchmarks.md), and one driver now serves the queries, the LISTEN
connection and Alembic.

Why a pool of our own. Every transaction checks a connection out and back in; what that needs
is small: a semaphore bounds the connections checked out, returned ones wait in a list, and a
new one is opened only when none is free and the bound allows it. No task per release, no
reset round trip, no background workers (an acquire and release cost a few µs).

What a returned connection may carry. Nothing of a transaction: one returned inside a
transaction is closed, not reused (`Transaction.close` ends its transaction first). Nothing of
a session either: the service's statements set no session state and take only
transaction-scoped locks, and a transaction that sent a statement which could change its
session (`SET`, `set_config`, a session advisory lock, `LISTEN`, a temporary table...: see
`transaction.changes_session`) marks its connection, which is then closed instead of being
returned. That check is made once per distinct statement text, so the hot path pays a dict
lookup, not a `DISCARD ALL` round trip (which would also drop the prepared statements).
Connections are also closed once older than `max_lifetime_seconds`, when returned: a
connection's server-side caches and memory do not grow for ever, and a replaced or
re-configured Postgres (a failover, a changed setting) is picked up within that time.

Why idle connections stay open. The pool is small and fixed (`pool_size` per process), as
HikariCP's default is: closing idle connections would save a few Postgres backends in quiet
hours and cost a connection setup (a fork and a login on the server) on the next busy second.
Postgres's `max_connections` must allow for them all (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any, TypeAlias

import psycopg
from psycopg import AsyncCursor, pq
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from ticketing_service.adapters.db.urls import driver_url

# A result row: its columns by name (`row["status"]`).
Row: TypeAlias = dict[str, Any]

_IDLE = pq.TransactionStatus.IDLE


class Connection(psycopg.AsyncConnection[Row]):
    """A pooled connection, with a cursor kept for each statement it runs (`transaction.py`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursors: dict[str, AsyncCursor[Row]] = {}
        # When the pool closes it instead of lending it again (time.monotonic()).
        self.retire_at = 0.0


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool size, the connections' lifetime and timeouts, in the units Postgres uses."""

    # Past `pool_size` busy connections a transaction waits for one to be returned (up to
    # `pool_timeout_seconds`) instead of opening one.
    pool_size: int = 10
    pool_timeout_seconds: float = 5
    lock_timeout_ms: int = 5000
    statement_timeout_ms: int = 30000
    connect_timeout_seconds: float = 5
    max_lifetime_seconds: float = 1800


class PoolTimeout(Exception):
    """No pooled connection became free within the pool timeout."""


class Database:
    """The connection pool of one process: up to `pool_size` connections, each opened when a
    transaction first needs it and kept open until its lifetime ends (the pool does not shrink).

    `connection_class` lets the benchmark record the statements a transaction sends
    (scripts/bench_limit.py); the service never passes it.
    """

    def __init__(
        self,
        database_url: str,
        settings: PoolSettings,
        *,
        connection_class: type[Connection] = Connection,
    ) -> None:
        self.settings = settings
        self._conninfo = driver_url(database_url)
        self._connect_options = _connect_options(self._conninfo, settings)
        self._connection_class = connection_class
        # One slot per connection that may be checked out; free connections wait in `_idle`.
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[Connection] = []
        self._in_use = 0
        self._closed = False

    async def acquire(self) -> Connection:
        """A connection of the pool; PoolTimeout if none is returned within the pool timeout."""
        if self._closed:
            raise PoolTimeout("The database pool is closed.")
        if self._slots.locked():
            waited = self.settings.pool_timeout_seconds
            try:
                async with asyncio.timeout(waited):
                    await self._slots.acquire()
            except TimeoutError as error:
                raise PoolTimeout(f"No pooled connection was free within {waited} s.") from error
        else:
            await self._slots.acquire()  # a slot is free: this returns without waiting
        try:
            connection = await self._idle_or_new()
        except BaseException:
            self._slots.release()
            raise
        self._in_use += 1
        return connection

    async def release(self, connection: Connection, *, session_changed: bool = False) -> None:
        """Return a connection to the pool; one that is closed, inside a transaction, past its
        lifetime or whose session was changed is closed instead."""
        self._in_use -= 1
        try:
            if self._closed or session_changed or not self._reusable(connection):
                await self._discard(connection)
            else:
                self._idle.append(connection)
        finally:
            self._slots.release()

    def usage(self) -> tuple[int, int]:
        """Connections checked out now, and the pool's size."""
        return self._in_use, self.settings.pool_size

    async def close(self) -> None:
        """Close the idle connections now, and each checked-out one when it is returned."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            await self._discard(connection)

    def _reusable(self, connection: Connection) -> bool:
        return (
            not connection.closed
            and connection.pgconn.transaction_status == _IDLE
            and time.monotonic() < connection.retire_at
        )

    async def _discard(self, connection: Connection) -> None:
        await connection.close()  # no round trip: libpq sends Terminate and closes the socket

    async def _idle_or_new(self) -> Connection:
        """The most recently returned usable connection (its caches are warm), or a new one."""
        while self._idle:
            connection = self._idle.pop()
            if self._reusable(connection):
                return connection
            await self._discard(connection)
        connection = await self._connection_class.connect(self._conninfo, **self._connect_options)
        connection.retire_at = time.monotonic() + self.settings.max_lifetime_seconds
        return connection


def _connect_options(conninfo: str, settings: PoolSettings) -> dict[str, Any]:
    """psycopg's connect arguments: autocommit (`Transaction` sends its own BEGIN, pipelined),
    every statement prepared on first use, rows as dicts, and the timeouts as server settings
    (after any `options` the URL carries)."""
    timeouts = (
        f"-c lock_timeout={settings.lock_timeout_ms}"
        f" -c statement_timeout={settings.statement_timeout_ms}"
    )
    given = conninfo_to_dict(conninfo).get("options")
    return {
        "autocommit": True,
        "prepare_threshold": 0,
        "row_factory": dict_row,
        "connect_timeout": math.ceil(settings.connect_timeout_seconds),
        "options": f"{given} {timeouts}" if given else timeouts,
    }
