"""Alembic environment: runs the migrations through asyncpg, on the URL the runner gives."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ticketing_service.adapters.db.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_asyncpg() -> None:
    # The runner's engine, on the URL and session settings it was given (`migrations.py`).
    engine: AsyncEngine = context.config.attributes["engine"]()
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


asyncio.run(_run_on_asyncpg())
