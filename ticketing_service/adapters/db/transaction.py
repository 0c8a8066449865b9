"""One transaction on a pooled psycopg connection, in as few round trips as its code allows.

Round trips. In pipeline mode psycopg sends several statements and then waits once for all
their results. A transaction's BEGIN travels with its first statement; statements whose rows
nobody reads (`queue()`: an advisory lock, a delivery's record) travel with the next statement
or with the COMMIT; `first_rows()` sends statements together, such as a lock and the read
after it. They stay separate statements that the server runs one after the other, each with a
snapshot of its own: a read sent after a lock starts once the lock is granted and sees
everything committed before. When one fails the server skips the rest of the round trip, and
the transaction can only roll back. A transaction that sends nothing costs no round trip.

Statements are prepared on their first use on a connection and kept (`prepare_threshold=0`),
so their later runs skip parsing and planning; each runs on a cursor the connection keeps for
it, so psycopg sets up its parameters' and columns' conversions once. Parameters are named:
`%(name)s`.

Why no pre-ping. A ping costs a round trip per transaction. Instead, when the first round trip
of a transaction finds its pooled connection dead (Postgres restarted, an idle connection was
cut), nothing has happened in the transaction yet, so the connection is discarded and the round
trip sent again on another one. Any later failure is an error for the caller (`UNAVAILABLE`,
which every RPC may retry).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import AsyncCursor, generators, pq
from psycopg.rows import RowMaker

from ticketing_service.adapters.db.pool import Connection, Database
from ticketing_service.adapters.db.pool import Row as Row  # the repositories' row type

Params = Mapping[str, Any]
Statement = tuple[str, Params | None]

_BEGIN: Statement = ("BEGIN", None)
_COMMIT: Statement = ("COMMIT", None)
_IDLE = pq.TransactionStatus.IDLE
_ROWS = pq.ExecStatus.TUPLES_OK

# What a statement on a dead connection raises: psycopg's errors (the server's carry a SQLSTATE,
# such as a terminated backend's 57P01; a closed socket is an OperationalError without one) or
# the socket's.
_DRIVER_ERRORS = (psycopg.Error, OSError)

# Cursors a connection keeps at most: one per distinct statement text, and the service has a few
# dozen (the bound only guards against statements built with their values inline).
MAX_CURSORS = 200

# Every idle connection of a pool may be stale after a restart: this many attempts cover the
# default pool of 10 with room to spare.
STALE_CONNECTION_ATTEMPTS = 16

# Statements that may leave something in the session after their transaction ends: settings
# (any SET, even SET LOCAL: a false alarm only costs a new connection), a temporary table, a
# session advisory lock, a LISTEN, a prepared statement or cursor of its own. The service sends
# none of them; if one is ever sent, its connection is closed rather than lent again.
_SESSION_CHANGE = re.compile(
    r"^\s*(?:SET|RESET|LISTEN|PREPARE|DECLARE|LOAD|DISCARD)\b|\bTEMP(?:ORARY)?\b"
    r"|\bset_config\s*\(|\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(",
    re.IGNORECASE,
)
_CHANGES_SESSION: dict[str, bool] = {}


def changes_session(sql: str) -> bool:
    """Whether a statement may leave state in its session beyond its transaction."""
    known = _CHANGES_SESSION.get(sql)
    if known is None:
        known = _CHANGES_SESSION[sql] = _SESSION_CHANGE.search(sql) is not None
    return known


class Transaction:
    """A pooled connection in a transaction, rolled back on `close()` unless committed."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._connection: Connection | None = None
        # True until a round trip has succeeded: until then a dead connection can be swapped.
        self._fresh = True
        self._queued: list[Statement] = []
        self._session_changed = False

    async def open(self) -> None:
        """Check out a connection (the transaction begins with the first round trip)."""
        self._connection = await self._database.acquire()

    def queue(self, sql: str, params: Params | None = None) -> None:
        """Send a statement with the next round trip (the next statement's, or the COMMIT's).

        Its rows are not read; an error it raises is raised there.
        """
        self._queued.append((sql, params))

    async def one(self, sql: str, params: Params | None = None) -> Row | None:
        """The first row of a statement's result, or None."""
        [cursor] = await self._round_trip([(sql, params)])
        return await _first_row(cursor)

    async def first_rows(self, *statements: Statement) -> list[Row | None]:
        """The first row (or None) of each statement, all sent in one round trip."""
        cursors = await self._round_trip(list(statements))
        return [await _first_row(cursor) for cursor in cursors]

    async def all(self, sql: str, params: Params | None = None) -> list[Row]:
        """Every row of a statement's result."""
        [cursor] = await self._round_trip([(sql, params)])
        return await cursor.fetchall() if _has_rows(cursor) else []

    async def many(self, sql: str, params: Sequence[Params]) -> None:
        """One statement run once per parameter set, in one round trip; no rows."""
        await self._round_trip([(sql, p) for p in params])

    async def commit(self) -> None:
        """Commit the transaction with its queued statements (nothing to do if none was sent)."""
        if self._queued or self._live().pgconn.transaction_status != _IDLE:
            await self._round_trip([_COMMIT])

    async def close(self) -> None:
        """Roll back anything not committed and return the connection (closed instead if it is
        dead, still in a transaction, or its session was changed)."""
        connection, self._connection = self._connection, None
        self._queued = []
        if connection is None:
            return
        try:
            # A failed rollback leaves the connection dead or in its transaction: the pool
            # closes it rather than lend it again.
            with contextlib.suppress(*_DRIVER_ERRORS):
                if not connection.closed and connection.pgconn.transaction_status != _IDLE:
                    await _roll_back(connection)
        finally:
            await self._database.release(connection, session_changed=self._session_changed)

    async def _round_trip(self, statements: list[Statement]) -> list[AsyncCursor[Row]]:
        """Send BEGIN (if the transaction has not begun), the queued statements and
        `statements` in one round trip; the cursors of `statements`.

        The transaction's first round trip is sent again on another connection if it met a
        dead one.
        """
        for _ in range(STALE_CONNECTION_ATTEMPTS):
            connection = self._live()
            leading = list(self._queued)
            if connection.pgconn.transaction_status == _IDLE:
                leading.insert(0, _BEGIN)
            sent = leading + statements
            self._session_changed |= any(changes_session(sql) for sql, _ in sent)
            try:
                cursors = await _send(connection, sent)
            except _DRIVER_ERRORS as error:
                if not connection.closed:
                    raise
                if not self._fresh:
                    raise _lost(error) from error
                await self._swap()
                continue
            self._queued = []
            self._fresh = False
            return cursors[len(leading) :]
        raise _lost("every pooled connection tried was dead")

    async def _swap(self) -> None:
        """Give the dead connection back (the pool discards it) and take another."""
        dead, self._connection = self._live(), None
        await self._database.release(dead)
        self._connection = await self._database.acquire()

    def _live(self) -> Connection:
        assert self._connection is not None, "the transaction is not open"
        return self._connection


async def _send(connection: Connection, statements: list[Statement]) -> list[AsyncCursor[Row]]:
    """Run the statements in order; several of them in one pipeline (one round trip)."""
    cursors: list[AsyncCursor[Row]] = []
    for sql, _ in statements:
        cursor = _cursor_for(connection, sql)
        # A statement sent twice in one round trip (one per parameter set) needs a cursor for
        # each result.
        cursors.append(cursor if cursor not in cursors else connection.cursor())
    if len(statements) == 1:
        await cursors[0].execute(*statements[0])
        return cursors
    async with connection.pipeline():
        for cursor, (sql, params) in zip(cursors, statements, strict=True):
            await cursor.execute(sql, params)
    return cursors


def _cursor_for(connection: Connection, sql: str) -> AsyncCursor[Row]:
    """The cursor the connection keeps for a statement: made on its first run, then reused."""
    cursor = connection.cursors.get(sql)
    if cursor is None:
        if len(connection.cursors) >= MAX_CURSORS:
            connection.cursors.clear()
        cursor = connection.cursors[sql] = connection.cursor(row_factory=_RowsByName())
    return cursor


class _RowsByName:
    """The rows of one statement as dicts, its column names read from its first result only
    (psycopg's `dict_row` decodes them from every result)."""

    def __init__(self) -> None:
        self._names: list[str] | None = None

    def __call__(self, cursor: psycopg.AsyncCursor[Any]) -> RowMaker[Row]:
        names = self._names
        if names is None:
            names = self._names = [column.name for column in cursor.description or ()]

        def row(values: Sequence[Any]) -> Row:
            return dict(zip(names, values, strict=True))

        return row


async def _roll_back(connection: Connection) -> None:
    """ROLLBACK, keeping the connection's prepared statements.

    psycopg forgets every prepared statement of a connection after a ROLLBACK (and has the
    server deallocate them), in case it undid a table or type they use. The service's
    transactions create and drop nothing, and a ROLLBACK ends every read-only one: through
    psycopg's own path each would cost a DEALLOCATE ALL round trip, and the next transactions
    a new Parse of each statement. So it is sent on psycopg's libpq connection directly.
    """
    async with connection.lock:
        connection.pgconn.send_query(b"ROLLBACK")
        await connection.wait(generators.execute(connection.pgconn))


async def _first_row(cursor: AsyncCursor[Row]) -> Row | None:
    """The first row, or None when there is none or the statement returns no rows."""
    return await cursor.fetchone() if _has_rows(cursor) else None


def _has_rows(cursor: AsyncCursor[Row]) -> bool:
    """Whether the statement returns rows (an INSERT without RETURNING has none to fetch)."""
    return cursor.pgresult is not None and cursor.pgresult.status == _ROWS


def _lost(cause: object) -> psycopg.errors.ConnectionDoesNotExist:
    """A connection lost in the middle of a transaction, with the SQLSTATE of one (08003)
    whatever psycopg raised (its own error for a closed socket carries none)."""
    return psycopg.errors.ConnectionDoesNotExist(f"The database connection was lost: {cause}")
