"""The connection pool: at most its size, connections used again, never one in an unknown state.

Each test runs against the real Postgres and watches its backends (`pg_backend_pid()`,
`pg_stat_activity`), so "the same connection" means the same server process.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.flows import sql
from ticketing_service.adapters.db.pool import Connection, Database, PoolSettings, PoolTimeout
from ticketing_service.adapters.db.transaction import Transaction

WAIT_SECONDS = 10


async def backend_of(connection: Connection) -> int:
    pid = await connection.fetchval("SELECT pg_backend_pid()")
    assert isinstance(pid, int)
    return pid


def active_sleeps(database_url: str) -> int:
    [(count,)] = sql(
        database_url,
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
        " AND query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()",
    )
    return int(count)


async def test_a_returned_connection_is_used_again(database_url: str) -> None:
    database = Database(database_url, PoolSettings(pool_size=2))
    try:
        first = await database.acquire()
        pid = await backend_of(first)
        await database.release(first)
        again = await database.acquire()
        assert await backend_of(again) == pid
        await database.release(again)
        assert database.usage() == (0, 2)
    finally:
        await database.close()


async def test_the_pool_never_opens_more_connections_than_its_size(database_url: str) -> None:
    database = Database(database_url, PoolSettings(pool_size=3))
    gate, three_held = asyncio.Event(), asyncio.Event()
    pids: list[int] = []

    async def hold() -> None:
        connection = await database.acquire()
        try:
            pids.append(await backend_of(connection))
            if len(pids) == 3:
                three_held.set()
            await gate.wait()
        finally:
            await database.release(connection)

    try:
        holders = [asyncio.create_task(hold()) for _ in range(12)]
        async with asyncio.timeout(WAIT_SECONDS):
            await three_held.wait()
        await asyncio.sleep(0)  # let the other nine reach the pool: none of them gets in
        assert database.usage() == (3, 3)
        assert not any(task.done() for task in holders)  # nine are waiting for a connection
        gate.set()
        await asyncio.gather(*holders)
        assert len(pids) == 12
        assert len(set(pids)) == 3
        assert database.usage() == (0, 3)
    finally:
        await database.close()


async def test_a_connection_past_its_lifetime_is_closed_when_returned_not_reused(
    database_url: str,
) -> None:
    # A lifetime shorter than one round trip: the connection is past it when returned. The
    # control is `test_a_returned_connection_is_used_again`, with the default lifetime.
    database = Database(database_url, PoolSettings(pool_size=1, max_lifetime_seconds=1e-6))
    try:
        first = await database.acquire()
        pid = await backend_of(first)
        await database.release(first)
        assert first.is_closed()
        again = await database.acquire()
        assert await backend_of(again) != pid
        await database.release(again)
        assert database.usage() == (0, 1)
    finally:
        await database.close()


async def test_a_connection_returned_inside_a_transaction_is_closed_not_reused(
    database_url: str,
) -> None:
    database = Database(database_url, PoolSettings(pool_size=1))
    try:
        connection = await database.acquire()
        pid = await backend_of(connection)
        await connection.execute("BEGIN")
        await database.release(connection)
        assert connection.is_closed()
        fresh = await database.acquire()
        assert await backend_of(fresh) != pid
        assert not fresh.is_in_transaction()
        await database.release(fresh)
    finally:
        await database.close()


async def test_a_call_cancelled_mid_statement_leaves_no_busy_connection_behind(
    database_url: str,
) -> None:
    # The cancelled statement may still be running on its connection when it is returned; the
    # next transaction on it must work (asyncpg waits for the cancellation to settle), not
    # fail as "another operation is in progress".
    database = Database(database_url, PoolSettings(pool_size=1, pool_timeout_seconds=2))

    async def slow() -> None:
        tx = Transaction(database)
        await tx.open()
        try:
            await tx.one("SELECT pg_sleep(30)")
        finally:
            await tx.close()

    try:
        task = asyncio.create_task(slow())
        async with asyncio.timeout(WAIT_SECONDS):
            while not active_sleeps(database_url):  # noqa: ASYNC110 - Postgres's state: no event reports it
                await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert database.usage() == (0, 1)
        tx = Transaction(database)
        await tx.open()
        try:
            row = await tx.one("SELECT 1 AS one")
            assert row is not None
            assert row["one"] == 1
        finally:
            await tx.close()
    finally:
        await database.close()


async def test_a_failed_connect_gives_its_place_back(database_url: str) -> None:
    # Nothing listens on port 1: each acquire fails to connect, and neither leaves its slot
    # taken (the second would otherwise time out waiting instead of failing the same way).
    database = Database(
        "postgresql://nobody@127.0.0.1:1/none",
        PoolSettings(pool_size=1, pool_timeout_seconds=0.5, connect_timeout_seconds=2),
    )
    for _ in range(2):
        with pytest.raises(OSError):  # noqa: PT011 - refused, or timed out: both are OSErrors
            await database.acquire()
    assert database.usage() == (0, 1)
    await database.close()


async def test_closing_the_pool_closes_idle_connections_and_each_one_returned_later(
    database_url: str,
) -> None:
    database = Database(database_url, PoolSettings(pool_size=2))
    idle, busy = await database.acquire(), await database.acquire()
    await database.release(idle)
    await database.close()
    assert idle.is_closed()
    assert not busy.is_closed()  # a transaction may still be finishing on it
    await database.release(busy)
    assert busy.is_closed()
    with pytest.raises(PoolTimeout, match="closed"):
        await database.acquire()
