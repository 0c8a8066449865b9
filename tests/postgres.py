"""A real Postgres for tests: embedded (pgserver) or `TEST_DATABASE_URL`, built by migrations."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
from psycopg import sql

from ticketing_service.adapters.db import migrations
from ticketing_service.adapters.db.schema import metadata
from ticketing_service.adapters.db.urls import as_string, sqlalchemy_url
from ticketing_service.adapters.embedded_postgres import start_embedded_postgres

TEST_DATABASE = "ticketing_test"


def provision_test_database(scratch_dir: Path) -> str:
    """Create an empty test database, run every migration on it, and return its URL."""
    server_url = os.environ.get("TEST_DATABASE_URL") or start_embedded_postgres(
        scratch_dir / "pgdata"
    )
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEST_DATABASE))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEST_DATABASE)))
    url = as_string(sqlalchemy_url(server_url).set(database=TEST_DATABASE))
    migrations.upgrade_to_head(url)
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def truncate_all(database_url: str) -> None:
    """Empty every table, so each test starts from the migrated, empty schema."""
    # The sequencer's high-water row belongs to the migrated schema: reset it, keep it.
    kept = "registration_event_sequencer"
    names = ", ".join(t.name for t in metadata.sorted_tables if t.name != kept)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {names} CASCADE")  # names come from our metadata
        conn.execute(f"UPDATE {kept} SET last_sequence = 0")
