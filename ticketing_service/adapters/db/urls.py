"""Checks a user's `DATABASE_URL` and gives the forms asyncpg and Alembic take."""

from __future__ import annotations

_SCHEMES = ("postgresql", "postgres")


def driver_url(database_url: str) -> str:
    """The `postgresql://` URL for asyncpg, from a `postgresql://` or `postgres://` one."""
    scheme, separator, rest = database_url.partition("://")
    if not separator or scheme not in _SCHEMES:
        # The URL itself is not repeated: it may hold a password.
        raise ValueError(
            "DATABASE_URL must start with postgresql:// or postgres://;"
            " point it at a Postgres 14+ database."
        )
    return f"postgresql://{rest}"


def sqlalchemy_url(database_url: str) -> str:
    """The same URL with SQLAlchemy's asyncpg dialect, for Alembic and schema tools."""
    return "postgresql+asyncpg" + driver_url(database_url).removeprefix("postgresql")
