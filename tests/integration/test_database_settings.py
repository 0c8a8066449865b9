"""The database settings an operator tunes, as the composition root applies them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ticketing_service import bootstrap
from ticketing_service.adapters.db.pool import Database, PoolSettings
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork, translate_database_error
from ticketing_service.config import Config, ConfigError
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics

SETTINGS = {
    "TICKETING_DB_POOL_SIZE": "3",
    "TICKETING_DB_LOCK_TIMEOUT_MS": "1234",
    "TICKETING_DB_STATEMENT_TIMEOUT_MS": "300",
}


@pytest.fixture
async def wiring(database_url: str) -> AsyncIterator[bootstrap.Service]:
    async with bootstrap.wired(Config.from_env(SETTINGS), database_url) as service:
        yield service


async def test_the_pool_size_and_both_timeouts_reach_every_connection(
    wiring: bootstrap.Service,
) -> None:
    conn = await wiring.database.acquire()
    try:
        lock = await conn.fetchval("SHOW lock_timeout")
        statement = await conn.fetchval("SHOW statement_timeout")
        idle = await conn.fetchval("SHOW idle_in_transaction_session_timeout")
    finally:
        await wiring.database.release(conn)
    assert (lock, statement, idle) == ("1234ms", "300ms", "600ms")
    assert wiring.database.usage() == (0, 3)


async def test_a_statement_past_the_statement_timeout_is_cut_and_is_not_a_retryable_race(
    wiring: bootstrap.Service,
) -> None:
    conn = await wiring.database.acquire()
    try:
        with pytest.raises(asyncpg.QueryCanceledError) as caught:
            await conn.execute("SELECT pg_sleep(5)")
    finally:
        await wiring.database.release(conn)
    # A statement this slow is a bug or an overload a person must see (INTERNAL, logged), not
    # a conflict a client should retry forever.
    assert translate_database_error(caught.value) is None


@pytest.mark.parametrize("name", sorted(SETTINGS))
@pytest.mark.parametrize("bad", ["0", "-5", "ten", "0.5", "1e3"])
def test_a_bad_database_setting_fails_at_start_naming_it(name: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: bad})


async def test_the_pool_gauges_follow_connections_in_use(wiring: bootstrap.Service) -> None:
    metrics = TicketingMetrics(process_collectors=False)
    metrics.watch_pool(wiring.pool_usage)
    in_use = "ticketing_db_pool_connections_in_use"
    conn = await wiring.database.acquire()
    try:
        await conn.execute("SELECT 1")
        assert metrics.registry.get_sample_value(in_use) == 1
    finally:
        await wiring.database.release(conn)
    assert metrics.registry.get_sample_value(in_use) == 0
    assert metrics.registry.get_sample_value("ticketing_db_pool_size") == 3


def test_a_pool_made_outside_an_event_loop_serves_in_the_loop_that_uses_it(
    database_url: str,
) -> None:
    # The composition root may be built before the loop runs: the pool must bind to the loop
    # of its first transaction, not to whichever loop existed when it was made.
    database = Database(database_url, PoolSettings())

    async def read() -> object:
        try:
            async with SqlUnitOfWork(database) as uow:
                return await uow.settings.get("an-event")
        finally:
            await database.close()

    assert asyncio.run(read()) is None
