"""Alembic environment: runs the migrations through asyncpg, on the URL the runner gives."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ticketing_service.adapters.db.migrations import MIGRATION_LOCK_KEY, MigrationLockTimeout
from ticketing_service.adapters.db.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        _wait_for_other_migrations(connection)
        context.run_migrations()


def _wait_for_other_migrations(connection: Connection) -> None:
    """Take the migration lock for this transaction: one process migrates at a time, and the
    next finds what is already applied. Two processes migrating a fresh database at once both
    created its first tables, and one failed. The wait is bounded by the session's lock_timeout
    (TICKETING_DB_LOCK_TIMEOUT_MS under `migrate`)."""
    try:
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": MIGRATION_LOCK_KEY},
        )
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise MigrationLockTimeout from error
        raise


async def _run_on_asyncpg() -> None:
    # The runner's engine, on the URL and session settings it was given (`migrations.py`).
    engine: AsyncEngine = context.config.attributes["engine"]()
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


asyncio.run(_run_on_asyncpg())
