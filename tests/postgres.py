"""A real Postgres for tests: embedded (pgserver) or `TEST_DATABASE_URL`, built by migrations.

The tests reach it with the service's own driver and connect path (asyncpg, `Database.connect`).
The synchronous helpers (`sql`, used from sync and async tests alike) run their statements on
an event loop of their own in another thread, as a synchronous driver would block its caller.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ticketing_service.adapters.db import migrations
from ticketing_service.adapters.db.pool import Connection, Database, PoolSettings
from ticketing_service.adapters.db.schema import metadata
from ticketing_service.adapters.embedded_postgres import start_embedded_postgres

TEST_DATABASE = "ticketing_test"
T = TypeVar("T")


def provision_test_database(scratch_dir: Path) -> str:
    """Create an empty test database, run every migration on it, and return its URL."""
    server_url = os.environ.get("TEST_DATABASE_URL") or start_embedded_postgres(
        scratch_dir / "pgdata"
    )
    url = database_on(server_url, TEST_DATABASE)
    migrations.upgrade_to_head(url)
    return url


def database_on(server_url: str, name: str, template: str | None = None) -> str:
    """An empty database `name` on the server of `server_url` (dropped first if it exists),
    or a copy of the database `template`, to which nothing may be connected.

    Under pytest-xdist the name gets the worker's id: workers sharing one `TEST_DATABASE_URL`
    server never touch each other's databases.
    """
    if worker := os.environ.get("PYTEST_XDIST_WORKER"):
        name = f"{name}_{worker}"
    create = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    statements = (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', create)
    blocking(run(server_url, *statements))  # `name` is a constant of the tests
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


def truncate_all(database_url: str) -> None:
    """Empty every table, so each test starts from the migrated, empty schema."""
    # The sequencer's high-water row belongs to the migrated schema: reset it, keep it.
    kept = "registration_event_sequencer"
    names = ", ".join(t.name for t in metadata.sorted_tables if t.name != kept)
    blocking(
        run(
            database_url,
            f"TRUNCATE {names} CASCADE",  # names come from our metadata
            f"UPDATE {kept} SET last_sequence = 0",
        )
    )


async def connect(database_url: str) -> Connection:
    """A connection made as the service makes its own (jsonb read as Python values)."""
    return await Database(database_url, PoolSettings()).connect()


@asynccontextmanager
async def open_transaction(database_url: str) -> AsyncIterator[Connection]:
    """A connection of its own inside a transaction, e.g. to hold a lock while the service
    runs; rolled back at the end unless the test commits it."""
    connection = await connect(database_url)
    try:
        await connection.execute("BEGIN")
        yield connection
        if connection.is_in_transaction():
            await connection.execute("ROLLBACK")  # the locks are released before we go on
    finally:
        await connection.close()


async def run(database_url: str, *statements: str) -> None:
    """Run statements without parameters, each in a transaction of its own."""
    connection = await connect(database_url)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def fetch(database_url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    """Run one statement (`$1`, `$2`… for `params`) and return its rows, as tuples."""
    connection = await connect(database_url)
    try:
        return [tuple(row) for row in await connection.fetch(query, *params)]
    finally:
        await connection.close()


def sql(database_url: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    """`fetch`, waited for: for sync tests, and async ones that check the database between calls."""
    return blocking(fetch(database_url, query, *params))


def lock_waiters(database_url: str) -> int:
    """Sessions of the test database waiting for a lock now (any session, the service's too)."""
    [(count,)] = sql(
        database_url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    return int(count)


def blocking(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end on an event loop of its own, in another thread: the calling
    thread may be running a loop of its own (an async test) or none."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, work).result()
