"""Applies the Alembic migrations that build and evolve the schema (through asyncpg)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from ticketing_service.adapters.db.urls import sqlalchemy_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str, lock_timeout_ms: int | None = None) -> Config:
    """An Alembic config for this project's migrations against a `postgresql://` URL.

    With `lock_timeout_ms`, a schema change that cannot get its lock in that time fails (and
    can be run again) instead of making every query of the running service wait behind it.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    if lock_timeout_ms is not None:
        server_settings = {"lock_timeout": str(lock_timeout_ms)}
        config.attributes["connect_args"] = {"server_settings": server_settings}
    return config


def upgrade_to_head(database_url: str, lock_timeout_ms: int | None = None) -> None:
    """Apply every migration not yet applied; safe to run on every start.

    It runs its own event loop: call it where none runs (a command's start, or a thread).
    """
    command.upgrade(alembic_config(database_url, lock_timeout_ms), "head")
