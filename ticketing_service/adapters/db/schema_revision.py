"""Whether a database's schema is one this version can serve on, read without Alembic.

A replica that does not migrate (`serve --no-migrate`, the one-off commands) never loads Alembic,
so the revision is read straight from its `alembic_version` table. Revisions are numbered 0001,
0002, ...: the order of their names is the order they apply in.
"""

from __future__ import annotations

import asyncpg

from ticketing_service.adapters.db.pool import Connection, Database
from ticketing_service.adapters.db.unit_of_work import translate_database_error

# The last migration in adapters/migrations/versions (a test keeps the two equal).
SCHEMA_REVISION = "0008"


class SchemaNotReady(Exception):
    """The database's schema is not one this version can use, and what to do about it."""


async def check_schema(database: Database) -> None:
    """SchemaNotReady when the schema is older than SCHEMA_REVISION, DatabaseUnavailable when
    the database cannot be reached. A newer schema passes: while a release runs, migrations only
    add to the schema it uses (expand, then contract: docs/operations.md)."""
    try:
        connection = await database.connect()
        try:
            revision = await _revision(connection)
        finally:
            connection.terminate()
    except (asyncpg.PostgresError, OSError) as error:
        raise translate_database_error(error) or error from error
    if revision is None:
        raise SchemaNotReady(
            "The database has no schema yet: run `ticketing-service migrate` first."
        )
    if revision < SCHEMA_REVISION:
        raise SchemaNotReady(
            f"The database's schema is at revision {revision}; this version needs "
            f"{SCHEMA_REVISION}: run `ticketing-service migrate` first."
        )


async def _revision(connection: Connection) -> str | None:
    if await connection.fetchval("SELECT to_regclass('alembic_version') IS NULL"):
        return None
    revision = await connection.fetchval("SELECT max(version_num) FROM alembic_version")
    return str(revision) if revision is not None else None
