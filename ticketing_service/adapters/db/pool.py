"""The process's pool of Postgres connections (asyncpg), with timeouts so nothing waits forever.

Why asyncpg. It is the service's one Postgres driver: the queries, the LISTEN connection
(`event_listener.py`) and the migrations (Alembic on `postgresql+asyncpg`) all use it. Measured
side by side under the benchmark's load against psycopg 3 used directly (prepared statements,
pipeline mode), it cost the server about a fifth less CPU per ConfirmPayment; pipelining saved
psycopg round trips but not CPU (docs/benchmarks.md, "One driver").

Why not asyncpg's own pool. Every transaction checks a connection out and back in, and
asyncpg's `Pool` does much there that this service never needs: a task of its own per
release (`asyncio.shield`), a reset and an inactivity timer per release, and a proxy object
per checkout that every statement then passes through. An acquire and release cost 31-37 µs
of CPU that way and 3-5 µs here, in a loop of 20,000; side by side under ConfirmPayment load,
the server's CPU per call fell 4.5 % (docs/benchmarks.md). What the pool here does is small:
a semaphore bounds the connections checked out, returned ones wait in a list, and a new one is
opened only when none is free and the bound allows it.

What a returned connection may carry: nothing. Not a transaction: a `Transaction` always ends
its transaction before returning its connection, and one returned inside a transaction anyway
is closed, not reused. Not session state: the service's statements set nothing in the session
and take only transaction-scoped locks, and a transaction that sends a statement which could
change its session (`SET`, `set_config`, a session advisory lock, `LISTEN`, a temporary
table...; `transaction.Positional`) has its connection closed when it is returned. That
check is made once per statement text, beside its `$n` numbering, so the hot path pays nothing
for it; a reset on every release (asyncpg's `RESET ALL`, `UNLISTEN *`, unlocking advisory
locks) would cost a round trip per transaction. And not for ever: a connection older than
`max_lifetime_seconds` is closed when returned, so a connection's server-side memory does not
grow without end and a failed-over or re-configured Postgres is met within that time.

A connection whose statement was cancelled is reused safely: asyncpg makes its next statement
wait until the cancellation has settled.

Why nothing waits on a silent network. When the path to Postgres drops without a word (no RST,
no FIN), a socket that waits for an answer waits until TCP gives up, about fifteen minutes. So
every statement, COMMIT and ROLLBACK has a client-side bound just past `statement_timeout`
(asyncpg's `command_timeout`): past it the connection is cut, never lent again, and the call
answers UNAVAILABLE. Idle connections carry TCP keepalive probes, so the kernel notices a dead
peer of a pooled connection and the pool drops it before lending it. On the server's side,
`idle_in_transaction_session_timeout` ends a session whose client vanished mid-transaction,
so its locks do not outlive it.

Why idle connections stay open. The pool is small and fixed (`pool_size` per process), as
HikariCP's default is: closing idle connections would save a few Postgres backends in quiet
hours and cost a connection setup (a fork and a login on the server) on the next busy second.
Postgres's `max_connections` must allow for them all (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg

from ticketing_service.adapters.db.urls import driver_url

# A pooled connection whose rows are `Record`s (generic in the type stubs only).
Connection: TypeAlias = "asyncpg.Connection[Record]"


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

    @property
    def command_timeout_seconds(self) -> float:
        """The client's bound on any one statement: the server's, plus a second for the way."""
        return self.statement_timeout_ms / 1000 + 1

    @property
    def idle_in_transaction_timeout_ms(self) -> int:
        """How long the server keeps a session that sits in a transaction sending nothing.

        The service's transactions never wait on anything between statements but this process
        (payment-service calls happen outside them), so twice the statement bound is only ever
        reached by a client that is gone.
        """
        return 2 * self.statement_timeout_ms


class PoolTimeout(Exception):
    """No pooled connection became free within the pool timeout."""


class Record(asyncpg.Record):
    """A result row: its columns by name (`row["status"]`).

    Not as attributes: a `__getattr__` here runs only after the attribute lookup has failed
    and raised an AttributeError, which made each column read cost about 1 µs. Mapping a
    reservation from its row took 28-34 µs that way, 9-14 µs by name.
    """


class Database:
    """The connection pool of one process: up to `pool_size` connections, each opened when a
    transaction first needs it and kept until its lifetime ends (the pool does not shrink).

    `connection_class` lets the benchmark record the statements a transaction sends
    (bench/recorder.py); the service never passes it.
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
        # One slot per connection that may be checked out; free connections wait in `_idle`.
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[Connection] = []
        # When each open connection is to be closed rather than reused (time.monotonic()).
        self._retire_at: dict[Connection, float] = {}
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
        lifetime, or whose session was changed is closed instead."""
        self._in_use -= 1
        if self._closed or session_changed or not self._reusable(connection):
            self._retire_at.pop(connection, None)
            connection.terminate()  # no round trip: the socket is closed
        else:
            self._idle.append(connection)
        self._slots.release()

    def usage(self) -> tuple[int, int]:
        """Connections checked out now, and the pool's size."""
        return self._in_use, self.settings.pool_size

    async def close(self) -> None:
        """Close the idle connections now, and each checked-out one when it is returned."""
        self._closed = True
        idle, self._idle = self._idle, []
        # All at once: a server gone silent never answers a goodbye, and each waits out the
        # timeout; one after the other, a pool of ten kept a stopping process 50 s.
        await asyncio.gather(*(self._say_goodbye(connection) for connection in idle))

    async def _say_goodbye(self, connection: Connection) -> None:
        self._retire_at.pop(connection, None)
        try:
            await connection.close(timeout=self.settings.connect_timeout_seconds)
        except Exception:  # it is being dropped either way: a broken one is cut instead
            connection.terminate()

    async def connect(self) -> Connection:
        """A new connection made as the pool makes its own, outside the pool: the caller
        closes it (the event listener's LISTEN connection is one, and import-moim's connection
        to Moim's database)."""
        settings = self.settings
        connection = await asyncpg.connect(
            self._url,
            timeout=settings.connect_timeout_seconds,
            command_timeout=settings.command_timeout_seconds,
            server_settings={
                "lock_timeout": str(settings.lock_timeout_ms),
                "statement_timeout": str(settings.statement_timeout_ms),
                "idle_in_transaction_session_timeout": str(settings.idle_in_transaction_timeout_ms),
            },
            record_class=Record,
            connection_class=self._connection_class,
        )
        try:
            _keep_alive(connection)
            await _add_codecs(connection)
        except BaseException:
            connection.terminate()
            raise
        return connection

    def _reusable(self, connection: Connection) -> bool:
        return (
            not connection.is_closed()
            and not connection.is_in_transaction()
            and time.monotonic() < self._retire_at.get(connection, 0.0)
        )

    async def _idle_or_new(self) -> Connection:
        """The most recently returned usable connection (its caches are warm), or a new one."""
        while self._idle:
            connection = self._idle.pop()
            if self._reusable(connection):
                return connection
            self._retire_at.pop(connection, None)
            connection.terminate()
        connection = await self.connect()
        self._retire_at[connection] = time.monotonic() + self.settings.max_lifetime_seconds
        return connection


# Probe an idle TCP connection after 30 s of silence, every 10 s, and give up after 3 misses:
# a dead peer of a pooled connection is noticed within a minute, not fifteen.
_KEEPALIVE = (
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", 0), 30),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", 0), 10),
    (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", 0), 3),
)


def _keep_alive(connection: asyncpg.Connection[Record]) -> None:
    """TCP keepalive on the connection's socket (a Unix socket has no peer to lose)."""
    # asyncpg has no option for it, and its transport (private, untyped) is the one way to the
    # socket.
    transport: asyncio.Transport = getattr(connection, "_transport")  # noqa: B009 - see above
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    for level, option, value in _KEEPALIVE:
        if option:  # a platform without TCP_KEEPIDLE & co. keeps its defaults
            sock.setsockopt(level, option, value)


async def _add_codecs(connection: asyncpg.Connection[Record]) -> None:
    """jsonb as Python values (a `str` parameter is taken as JSON text already)."""
    await connection.set_type_codec(
        "jsonb", schema="pg_catalog", encoder=_json_text, decoder=json.loads, format="text"
    )


def _json_text(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)
