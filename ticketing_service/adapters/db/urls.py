"""Turns a user's `postgresql://` URL into the URLs the service's drivers take."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url


def sqlalchemy_url(database_url: str) -> URL:
    """The psycopg 3 dialect URL for a `postgresql://` or `postgres://` URL."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    raise ValueError(
        f"DATABASE_URL must start with postgresql:// (got a {url.drivername}:// URL); "
        "point it at a Postgres 14+ database."
    )


def as_string(url: URL) -> str:
    """The URL with its password, for handing to Alembic and engines."""
    return url.render_as_string(hide_password=False)


def driver_url(database_url: str) -> str:
    """The plain `postgresql://` URL (with its password) for asyncpg, checked as above."""
    return as_string(sqlalchemy_url(database_url).set(drivername="postgresql"))
