"""Applies the Alembic migrations that build and evolve the schema (through asyncpg)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from ticketing_service.adapters.db.pool import PoolSettings
from ticketing_service.adapters.db.schema_revision import SchemaNotReady
from ticketing_service.adapters.db.unit_of_work import translate_database_error
from ticketing_service.adapters.db.urls import driver_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The advisory lock a process holds while it migrates (env.py), so that two never do at once.
MIGRATION_LOCK_KEY = "ticketing:migrations"


class MigrationLockTimeout(Exception):
    """Another process held the migration lock past the lock timeout."""


def alembic_config(database_url: str, lock_timeout_ms: int | None = None) -> Config:
    """An Alembic config for this project's migrations against a `postgresql://` URL.

    With `lock_timeout_ms`, a schema change that cannot get its lock in that time fails (and
    can be run again) instead of making every query of the running service wait behind it.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    settings = {} if lock_timeout_ms is None else {"lock_timeout": str(lock_timeout_ms)}
    config.attributes["engine"] = lambda: schema_engine(database_url, settings)  # for env.py
    return config


def schema_engine(database_url: str, server_settings: Mapping[str, str] = {}) -> AsyncEngine:
    """SQLAlchemy on an asyncpg connection made from `database_url` as the pool makes its own.

    asyncpg reads the URL's parameters (`sslmode=require`, `application_name`, ...) as every
    other command does; SQLAlchemy's dialect would pass each to asyncpg.connect as a keyword
    it does not take. One connection, closed after use.
    """
    dsn, settings = driver_url(database_url), dict(server_settings)

    async def connect() -> asyncpg.Connection[asyncpg.Record]:
        # The pool's connect timeout, not asyncpg's 60 s: a silent database fails a migration
        # as fast as it fails every other command.
        timeout = PoolSettings().connect_timeout_seconds
        return await asyncpg.connect(dsn, server_settings=settings, timeout=timeout)

    return create_async_engine("postgresql+asyncpg://", async_creator=connect, poolclass=NullPool)


def upgrade_to_head(database_url: str, lock_timeout_ms: int | None = None) -> None:
    """Apply every migration not yet applied; safe to run on every start.

    It runs its own event loop: call it where none runs (a command's start, or a thread). Every
    pending migration runs in one transaction: when one fails, none of them is applied, and what
    went wrong is a SchemaNotReady or a DatabaseUnavailable that says so in a line.
    """
    try:
        command.upgrade(alembic_config(database_url, lock_timeout_ms), "head")
    except MigrationLockTimeout as error:
        raise SchemaNotReady(
            f"Another process was migrating this database and did not finish within "
            f"{lock_timeout_ms} ms (TICKETING_DB_LOCK_TIMEOUT_MS); nothing was applied: "
            "run migrate again."
        ) from error
    except CommandError as error:  # e.g. a revision this version does not know
        raise SchemaNotReady(
            f"Cannot migrate: {error}. If a newer release migrated this database, leave "
            "migrating to it: this one still serves on it with `serve --no-migrate`."
        ) from error
    except (DBAPIError, asyncpg.PostgresError, OSError) as error:
        cause = error.orig if isinstance(error, DBAPIError) and error.orig else error
        if getattr(cause, "sqlstate", None) == "55P03":
            raise SchemaNotReady(
                f"A migration could not get its lock within {lock_timeout_ms} ms "
                "(TICKETING_DB_LOCK_TIMEOUT_MS) and nothing was applied: run migrate again."
            ) from error
        translated = translate_database_error(cause)
        if translated is not None:
            raise translated from cause
        # E.g. a table a migration creates is there already (a partial restore): one line,
        # with Postgres's own words, rather than SQLAlchemy's page-long traceback.
        raise SchemaNotReady(f"Migrating failed, and nothing was applied: {cause}") from cause
