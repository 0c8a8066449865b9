"""The async engine: one pool per process, with timeouts so no query can wait forever."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ticketing_service.adapters.db.urls import sqlalchemy_url


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool size and the per-connection timeouts, in the units Postgres uses."""

    pool_size: int = 10
    # No overflow: past `pool_size` busy connections a transaction waits for one to be
    # returned (up to `pool_timeout_seconds`) instead of opening one. An overflow connection is
    # closed as soon as it is returned, so under sustained load it meant a new Postgres backend
    # (a fork and a login) for nearly every transaction above the pool's size.
    max_overflow: int = 0
    pool_timeout_seconds: float = 5
    lock_timeout_ms: int = 5000
    statement_timeout_ms: int = 30000
    connect_timeout_seconds: int = 5


def create_engine(database_url: str, pool: PoolSettings) -> AsyncEngine:
    """An engine on psycopg 3 whose connections carry lock and statement timeouts.

    No pre-ping (a round trip per transaction): a unit of work that meets a dead pooled
    connection on its first statement swaps it for another (see `transaction.py`).
    """
    options = (
        f"-c lock_timeout={pool.lock_timeout_ms} -c statement_timeout={pool.statement_timeout_ms}"
    )
    return create_async_engine(
        sqlalchemy_url(database_url),
        pool_size=pool.pool_size,
        max_overflow=pool.max_overflow,
        pool_timeout=pool.pool_timeout_seconds,
        connect_args={"options": options, "connect_timeout": pool.connect_timeout_seconds},
    )
