"""Alembic environment: runs the migrations through asyncpg, on the URL the runner gives."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from ticketing_service.adapters.db.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_asyncpg() -> None:
    config = context.config
    engine = create_async_engine(
        config.get_main_option("sqlalchemy.url") or "",
        poolclass=NullPool,
        # asyncpg's settings for the session, e.g. the lock timeout (`migrations.py`).
        connect_args=config.attributes.get("connect_args", {}),
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


asyncio.run(_run_on_asyncpg())
