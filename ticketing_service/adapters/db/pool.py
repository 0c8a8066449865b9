"""The process's pool of Postgres connections (asyncpg), with timeouts so nothing waits forever.

Why asyncpg. A statement through asyncpg costs the server about a third less CPU than through
psycopg (docs/benchmarks.md), and that CPU, not Postgres, was what limited the service's
throughput. SQLAlchemy and psycopg remain for the migrations (Alembic) and for the event
listener's LISTEN connection only.

Why no reset on release. asyncpg's default resets every returned connection with a round trip
(`RESET ALL`, `UNLISTEN *`, unlocking advisory locks). The service sets no session state and
takes only transaction-scoped locks, and a `Transaction` always ends its transaction before
returning its connection (asyncpg rolls back one that is still open), so the pool skips it.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from ticketing_service.adapters.db.urls import driver_url

# A checked-out connection whose rows are `Record`s (generic in the type stubs only).
Connection: TypeAlias = "PoolConnectionProxy[Record]"
# An idle connection is closed after this long (a new one is opened when needed).
IDLE_CONNECTION_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool size and the per-connection timeouts, in the units Postgres uses."""

    # Past `pool_size` busy connections a transaction waits for one to be returned (up to
    # `pool_timeout_seconds`) instead of opening one.
    pool_size: int = 10
    pool_timeout_seconds: float = 5
    lock_timeout_ms: int = 5000
    statement_timeout_ms: int = 30000
    connect_timeout_seconds: float = 5


class PoolTimeout(Exception):
    """No pooled connection became free within the pool timeout."""


class Record(asyncpg.Record):
    """A result row: its columns by name (`row["status"]`).

    Not as attributes: a `__getattr__` here runs only after the attribute lookup has failed
    and raised an AttributeError, which made each column read cost about 1 µs. Mapping a
    reservation from its row took 28-34 µs that way, 9-14 µs by name.
    """


class Database:
    """The connection pool of one process, opened by its first transaction.

    `connection_class` lets the benchmark record the statements a transaction sends
    (scripts/bench_limit.py); the service never passes it.
    """

    def __init__(
        self,
        database_url: str,
        settings: PoolSettings,
        *,
        connection_class: type[asyncpg.Connection[Any]] = asyncpg.Connection,
    ) -> None:
        self.settings = settings
        self._url = driver_url(database_url)
        self._connection_class = connection_class
        self._pool: asyncpg.Pool[Record] | None = None
        self._opening = asyncio.Lock()

    async def acquire(self) -> Connection:
        """A pooled connection; PoolTimeout if none is returned within the pool timeout."""
        pool = self._pool or await self._open()
        waited = self.settings.pool_timeout_seconds
        try:
            # Timed here rather than by `acquire(timeout=...)`, which runs the wait as a task
            # of its own: one task more per transaction, for the same bound.
            async with asyncio.timeout(waited):
                return await pool.acquire()
        except TimeoutError as error:
            raise PoolTimeout(f"No pooled connection was free within {waited} s.") from error

    async def release(self, connection: Connection) -> None:
        """Return a connection to the pool (a closed one is discarded)."""
        assert self._pool is not None, "a connection comes from the pool"
        await self._pool.release(connection)

    def usage(self) -> tuple[int, int]:
        """Connections checked out now, and the pool's size."""
        pool = self._pool
        if pool is None:
            return 0, self.settings.pool_size
        return pool.get_size() - pool.get_idle_size(), pool.get_max_size()

    async def close(self) -> None:
        """Close every connection once it is returned."""
        if self._pool is not None:
            await self._pool.close()

    async def _open(self) -> asyncpg.Pool[Record]:
        """The pool, created on first use inside the event loop that runs it (no connection
        is made until a transaction needs one)."""
        async with self._opening:
            if self._pool is None:
                settings = self.settings
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=0,
                    max_size=settings.pool_size,
                    max_inactive_connection_lifetime=IDLE_CONNECTION_SECONDS,
                    timeout=settings.connect_timeout_seconds,
                    server_settings={
                        "lock_timeout": str(settings.lock_timeout_ms),
                        "statement_timeout": str(settings.statement_timeout_ms),
                    },
                    init=_add_codecs,
                    reset=_keep_as_is,
                    record_class=Record,
                    connection_class=self._connection_class,
                )
            return self._pool


async def _add_codecs(connection: asyncpg.Connection[Record]) -> None:
    """jsonb as Python values (a `str` parameter is taken as JSON text already)."""
    await connection.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_json_text, decoder=json.loads, format="text"
    )


def _json_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def _keep_as_is(connection: asyncpg.Connection[Record]) -> None:
    """The pool's reset: none (see the module's docstring)."""
