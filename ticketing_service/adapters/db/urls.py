"""Gives the form of a user's `DATABASE_URL` asyncpg takes (config.py checks it first)."""

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
