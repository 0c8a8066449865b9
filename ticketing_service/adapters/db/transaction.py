"""One transaction on a pooled asyncpg connection, and what to do when that connection is dead.

Statements use named `%(name)s` placeholders, which read better than numbers; each is turned
into asyncpg's `$n` form once per process, and checked then for whether it may change its
session (`Positional.changes_session`: its connection is then closed rather than lent again,
see `pool.py`). asyncpg prepares every statement on first use per connection and keeps it, so a
statement's later runs skip parsing and planning.

The transaction begins with its first statement (a `BEGIN` round trip of its own: asyncpg does
not pipeline), so a unit of work that sends nothing costs no round trip.

Why no pre-ping. A ping costs a round trip per transaction. Instead, when the first statement of
a transaction finds its pooled connection dead (Postgres restarted, an idle connection was
cut), nothing has happened in the transaction yet, so the connection is discarded and the
statement retried on another one. Any later failure is an error for the caller
(`UNAVAILABLE`, which every RPC may retry).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import asyncpg

from ticketing_service.adapters.db.pool import Connection, Database

# A result row (`pool.Record`): columns by name (`row["status"]`).
Row = Any
Params = Mapping[str, Any]
T = TypeVar("T")

# What a statement on a dead connection raises: the server's errors (a terminated backend's
# 57P01), asyncpg's own (the connection was closed under it, or its protocol is out of step:
# InternalClientError, e.g. while it reads the error a terminated backend sent before closing),
# or the socket's.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)

# Every idle connection of a pool may be stale after a restart: this many attempts cover the
# default pool of 10 with room to spare.
STALE_CONNECTION_ATTEMPTS = 16

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
# Statements that may leave something in the session after their transaction ends: settings
# (any SET, even SET LOCAL: a false alarm only costs a new connection), a temporary table, a
# session advisory lock, a LISTEN, a prepared statement or cursor of its own.
_SESSION_CHANGE = re.compile(
    r"^\s*(?:SET|RESET|LISTEN|PREPARE|DECLARE|LOAD|DISCARD)\b|\bTEMP(?:ORARY)?\b"
    r"|\bset_config\s*\(|\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(",
    re.IGNORECASE,
)


class Positional(NamedTuple):
    """A statement in asyncpg's form: `$n` placeholders, the names they stand for in order,
    and whether it may change its session."""

    query: str
    names: tuple[str, ...]
    changes_session: bool


_POSITIONAL: dict[str, Positional] = {}


def positional(sql: str) -> Positional:
    """`sql` with `$1`, `$2`… for its `%(name)s` placeholders (worked out once per process)."""
    known = _POSITIONAL.get(sql)
    if known is None:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        query = _PLACEHOLDER.sub(number, sql).replace("%%", "%")
        known = Positional(query, tuple(names), _SESSION_CHANGE.search(sql) is not None)
        _POSITIONAL[sql] = known
    return known


def _arguments(names: tuple[str, ...], params: Params | None) -> list[Any]:
    return [params[name] for name in names] if params else []


class Transaction:
    """A pooled connection in a transaction, rolled back on `close()` unless committed."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: Connection | None = None
        # True until a statement has succeeded: until then a dead connection can be swapped.
        self._fresh = True
        # Set once a statement that may change the session was sent: the pool then closes the
        # connection instead of lending it again.
        self._session_changed = False
        self._begin = "BEGIN"

    async def open(self) -> None:
        """Check out a connection (the transaction begins with the first statement)."""
        self._connection = await self._database.acquire()

    def read_one_snapshot(self) -> None:
        """Begin as a read-only transaction whose every statement sees the database as of its
        first (REPEATABLE READ); before any statement only."""
        assert self._fresh, "the transaction has begun"
        self._begin = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"

    async def one(self, sql: str, params: Params | None = None) -> Row | None:
        """The first row of a statement's result, or None."""
        query, names, changes = positional(sql)
        self._session_changed |= changes
        arguments = _arguments(names, params)
        return await self._on_live_connection(lambda c: c.fetchrow(query, *arguments))

    async def all(self, sql: str, params: Params | None = None) -> list[Row]:
        """Every row of a statement's result."""
        query, names, changes = positional(sql)
        self._session_changed |= changes
        arguments = _arguments(names, params)
        return await self._on_live_connection(lambda c: c.fetch(query, *arguments))

    async def many(self, sql: str, params: Sequence[Params]) -> None:
        """One statement run once per parameter set; no rows."""
        query, names, changes = positional(sql)
        self._session_changed |= changes
        batch = [_arguments(names, p) for p in params]
        await self._on_live_connection(lambda c: c.executemany(query, batch))

    async def commit(self) -> None:
        """Commit the transaction (nothing to do if no statement was sent)."""
        connection = self._live()
        try:
            if connection.is_in_transaction():
                await connection.execute("COMMIT")
        except TimeoutError as error:
            # No answer within the bound: whether it committed is unknown, and the caller
            # retries (every state-changing call is safe to retry).
            connection.terminate()
            raise _lost(error) from error
        except _DRIVER_ERRORS as error:
            if _dead(connection):
                raise _lost(error) from error
            raise

    async def close(self) -> None:
        """Roll back anything not committed and return the connection (closed instead if it is
        dead or broken, or its session was changed)."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if not _dead(connection) and connection.is_in_transaction():
                await connection.execute("ROLLBACK")  # bounded by the command timeout
        except (*_DRIVER_ERRORS, TimeoutError):
            if not _dead(connection):
                connection.terminate()  # broken, busy or silent: the pool discards it
        finally:
            await self._database.release(connection, session_changed=self._session_changed)

    async def _on_live_connection(self, send: Callable[[Connection], Awaitable[T]]) -> T:
        """`send(connection)` in the transaction, retried on another connection if the
        transaction's first statement met a dead or broken one."""
        for _ in range(STALE_CONNECTION_ATTEMPTS):
            connection = self._live()
            try:
                if not connection.is_in_transaction():
                    await connection.execute(self._begin)
                result = await send(connection)
            except TimeoutError as error:
                # The command timeout: the connection went silent (or the server is stuck).
                # It cannot be trusted with another statement, and another may be as silent:
                # the call answers UNAVAILABLE rather than wait on the next one too.
                connection.terminate()
                raise _lost(error) from error
            except _DRIVER_ERRORS as error:
                if isinstance(error, asyncpg.InternalClientError) and not _dead(connection):
                    connection.terminate()  # out of step: it cannot run another statement
                if not _dead(connection):
                    raise
                if not self._fresh:
                    raise _lost(error) from error
                await self.close()
                await self.open()
                continue
            self._fresh = False
            return result
        raise _lost("every pooled connection tried was dead")

    def _live(self) -> Connection:
        assert self._connection is not None, "the transaction is not open"
        return self._connection


def _dead(connection: Connection) -> bool:
    """Whether the server or the network closed the connection."""
    return connection.is_closed()


def _lost(cause: object) -> asyncpg.ConnectionDoesNotExistError:
    """A connection lost in the middle of a transaction, with the SQLSTATE of one (08003)
    whatever asyncpg raised (its own errors for a closed connection carry none)."""
    return asyncpg.ConnectionDoesNotExistError(f"The database connection was lost: {cause}")
