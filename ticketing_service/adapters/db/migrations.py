"""Applies the Alembic migrations that build and evolve the schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(sync_url: str) -> Config:
    """An Alembic config for this project's migrations against a sync SQLAlchemy URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", sync_url.replace("%", "%%"))
    return config


def upgrade_to_head(sync_url: str) -> None:
    """Apply every migration not yet applied; safe to run on every start."""
    command.upgrade(alembic_config(sync_url), "head")
