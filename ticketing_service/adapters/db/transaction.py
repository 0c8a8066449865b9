"""One transaction's connection: statements sent straight to psycopg, and stale connections.

Why not `conn.execute(text(...))`. SQLAlchemy's statement path (building the clause, its cache
key, the execution context and result wrapping, a greenlet switch) costs about 240 µs of CPU
per statement on the benchmark machine, twice what psycopg itself needs and more than Postgres
spends on most of these statements; it was the largest cost of the server (docs/benchmarks.md).
So every statement of the repositories goes to the psycopg connection under SQLAlchemy's pooled
one, and psycopg prepares it after a few uses; psycopg begins the transaction with the first
statement and the `Transaction` commits or rolls back on the same connection. SQLAlchemy owns
only the pool (and Alembic's migrations).

Why no pre-ping. A pool pre-ping costs a round trip per transaction. Instead, when the first
statement of a transaction finds its pooled connection dead (Postgres restarted, an idle
connection was cut), nothing has happened in the transaction yet, so the connection is
discarded and the statement retried on another one. Any later failure is an error for the
caller (`UNAVAILABLE`, which every RPC may retry).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import pq
from psycopg.rows import RowFactory, RowMaker, namedtuple_row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# A row with attribute access by column name (a named tuple built per result shape).
Row = Any
Params = Mapping[str, Any]
Driver = psycopg.AsyncConnection[Any]
T = TypeVar("T")

# Every idle connection of a pool may be stale after a restart: this many attempts cover the
# default pool of 10 with room to spare.
STALE_CONNECTION_ATTEMPTS = 16

# The named tuple type of each statement's rows. A statement always returns the same columns,
# so its row type is built from the first result only, instead of reading every column's name
# from every result (which cost more than the statement's own parameters).
_ROW_MAKERS: dict[str, RowMaker[Row]] = {}


def _rows_of(sql: str) -> RowFactory[Row]:
    """The row factory of `sql`: named tuples, with the row type kept after the first result."""
    known = _ROW_MAKERS.get(sql)
    if known is not None:
        return lambda _cursor: known

    # Any: psycopg types a row factory's cursor with its private base class.
    def first_result(cursor: Any) -> RowMaker[Row]:
        maker = namedtuple_row(cursor)
        if _returns_rows(cursor):
            _ROW_MAKERS[sql] = maker
        return maker

    return first_result


def _returns_rows(cursor: psycopg.AsyncCursor[Row]) -> bool:
    result = cursor.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


class Transaction:
    """A pooled connection in a transaction, rolled back on `close()` unless committed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pooled: AsyncConnection | None = None
        self._driver: psycopg.AsyncConnection[Any] | None = None
        # True until a statement has succeeded: until then a dead connection can be swapped.
        self._fresh = True

    async def open(self) -> None:
        """Check out a connection; psycopg begins the transaction with the first statement."""
        self._pooled = await self._engine.connect()
        sync = self._pooled.sync_connection
        assert sync is not None, "a connected AsyncConnection has its sync connection"
        # The checked-out DB-API connection, read without a detour through a greenlet.
        self._driver = sync.connection.driver_connection

    async def one(self, sql: str, params: Params | None = None) -> Row | None:
        """The first row of a statement's result, or None."""
        cursor = await self._execute(sql, params)
        return await cursor.fetchone() if _returns_rows(cursor) else None

    async def all(self, sql: str, params: Params | None = None) -> list[Row]:
        """Every row of a statement's result."""
        cursor = await self._execute(sql, params)
        return await cursor.fetchall() if _returns_rows(cursor) else []

    async def many(self, sql: str, params: Sequence[Params]) -> None:
        """One statement run once per parameter set (psycopg pipelines them); no rows."""

        async def send(driver: Driver) -> None:
            async with driver.cursor() as cursor:
                await cursor.executemany(sql, params)

        await self._on_live_connection(send)

    async def pair(
        self, first: str, first_params: Params, second: str, second_params: Params
    ) -> tuple[Row | None, Row | None]:
        """Two statements in one round trip (a pipeline); the first row of each.

        They remain two statements: the second starts when the first has finished, with a
        snapshot of its own, exactly as if it had been sent afterwards. If the first fails, the
        second does not run.
        """

        async def send(driver: Driver) -> tuple[Row | None, Row | None]:
            async with driver.pipeline():
                a = driver.cursor(row_factory=_rows_of(first))
                b = driver.cursor(row_factory=_rows_of(second))
                await a.execute(first, first_params)
                await b.execute(second, second_params)
            return await a.fetchone(), await b.fetchone()

        return await self._on_live_connection(send)

    async def commit(self) -> None:
        """Commit the transaction."""
        await self._connection().commit()

    async def close(self) -> None:
        """Roll back anything not committed and return the connection (discarded if dead)."""
        conn, driver = self._pooled, self._driver
        self._pooled = self._driver = None
        if conn is None:
            return
        try:
            if driver is None or driver.broken or driver.closed:
                await conn.invalidate()
            else:
                await driver.rollback()  # no round trip unless a transaction is open
        except (DBAPIError, psycopg.Error):
            # The connection is already gone; closing below discards it from the pool.
            pass
        finally:
            await conn.close()

    async def _execute(self, sql: str, params: Params | None) -> psycopg.AsyncCursor[Row]:
        async def send(driver: Driver) -> psycopg.AsyncCursor[Row]:
            cursor = driver.cursor(row_factory=_rows_of(sql))
            await cursor.execute(sql, params)
            return cursor

        return await self._on_live_connection(send)

    async def _on_live_connection(self, send: Callable[[Driver], Awaitable[T]]) -> T:
        """`send(connection)`, retried on another if the first statement met a dead connection."""
        for _ in range(STALE_CONNECTION_ATTEMPTS):
            try:
                result = await send(self._connection())
            except psycopg.Error:
                if not self._stale():
                    raise
                await self._replace()
                continue
            self._fresh = False
            return result
        raise psycopg.OperationalError("Every pooled connection tried was dead.")

    def _connection(self) -> Driver:
        assert self._driver is not None, "the transaction is not open"
        return self._driver

    def _stale(self) -> bool:
        """A dead connection met by the transaction's first statement: safe to retry."""
        driver = self._driver
        return self._fresh and driver is not None and (driver.broken or driver.closed)

    async def _replace(self) -> None:
        await self.close()
        await self.open()
