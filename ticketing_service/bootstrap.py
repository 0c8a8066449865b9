"""The composition root: the one place that knows the concrete adapters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from ticketing_service.adapters.db import migrations
from ticketing_service.adapters.db.event_listener import PostgresEventSignal
from ticketing_service.adapters.db.moim_import_writer import SqlImportTarget
from ticketing_service.adapters.db.pool import Database, PoolSettings
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork
from ticketing_service.adapters.embedded_postgres import start_embedded_postgres
from ticketing_service.adapters.moim_source import PostgresMoimSource, source_driver_url
from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.config import Config
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.events_handlers import run_event_sequencer
from ticketing_service.service_layer.expiry import run_expiry_sweeper
from ticketing_service.service_layer.moim_import import MoimImport
from ticketing_service.service_layer.ports import AfterCommit, Committed

# The sequencer numbers this process's events as soon as they commit; this interval only
# catches events whose writer died before it could wake its sequencer.
SEQUENCER_FALLBACK_SECONDS = 2.0
# The least time between two of a process's sequencer passes: how much later than its commit
# an event may be numbered under load (after a quiet spell a commit is numbered at once), and
# why one pass then numbers many commits' events.
SEQUENCER_MIN_PASS_SECONDS = 0.05


@dataclass(slots=True)
class Wiring:
    """The dependencies handed to the entrypoints, and what must be closed at the end."""

    deps: Dependencies
    database: Database
    payment_service: HttpPaymentService
    event_signal: PostgresEventSignal
    sequencer_wakeup: asyncio.Event

    def workers(self, config: Config) -> list[Coroutine[Any, Any, None]]:
        """The background loops of a server process: sweeper, sequencer, event listener."""
        return [
            run_expiry_sweeper(self.deps, config.sweep_interval_seconds),
            run_event_sequencer(
                self.deps,
                self.sequencer_wakeup,
                SEQUENCER_FALLBACK_SECONDS,
                SEQUENCER_MIN_PASS_SECONDS,
            ),
            self.event_signal.run(),
        ]

    def pool_usage(self) -> tuple[int, int]:
        """Connections checked out of the database pool now, and the pool's size."""
        return self.database.usage()

    async def aclose(self) -> None:
        """Close the payment service's connections and the database pool."""
        await self.payment_service.aclose()
        await self.database.close()


def wake_and_observe(sequencer_wakeup: asyncio.Event, observe: AfterCommit | None) -> AfterCommit:
    """After each commit: wake this process's event sequencer if events were appended, and
    tell `observe` (the metrics) what was committed."""

    def after_commit(committed: Committed) -> None:
        if committed.events:
            sequencer_wakeup.set()
        if observe is not None:
            observe(committed)

    return after_commit


def resolve_database_url(config: Config) -> str:
    """`DATABASE_URL`, or an embedded Postgres in `TICKETING_DATA_DIR` when it is unset."""
    return config.database_url or start_embedded_postgres(config.data_dir)


def migrate(config: Config, database_url: str) -> None:
    """Apply every pending migration, each lock waited for at most the database lock timeout."""
    migrations.upgrade_to_head(database_url, config.db_lock_timeout_ms)


def _pool_settings(config: Config) -> PoolSettings:
    return PoolSettings(
        pool_size=config.db_pool_size,
        lock_timeout_ms=config.db_lock_timeout_ms,
        statement_timeout_ms=config.db_statement_timeout_ms,
        max_lifetime_seconds=config.db_max_connection_lifetime_seconds,
    )


def wire(config: Config, database_url: str, observe: AfterCommit | None = None) -> Wiring:
    """Build the adapters for a running service; `observe` is told of every commit."""
    database = Database(database_url, _pool_settings(config))
    payment_service = HttpPaymentService(
        # `serve` refuses to start without it; the other commands never open a checkout.
        config.payment_service_url or "",
        config.payment_service_token,
        config.payment_timeout_seconds,
    )
    sequencer_wakeup = asyncio.Event()
    event_signal = PostgresEventSignal(database)
    after_commit = wake_and_observe(sequencer_wakeup, observe)
    deps = Dependencies(
        uow=lambda: SqlUnitOfWork(database, after_commit=after_commit),
        payment_service=payment_service,
        default_provider_account_id=config.default_provider_account_id,
        hold_seconds=config.hold_seconds,
        callback_url=config.callback_url,
        public_base_url=config.public_base_url,
        event_signal=event_signal,
    )
    return Wiring(deps, database, payment_service, event_signal, sequencer_wakeup)


def check_source_database_url(url: str) -> str:
    """`url` when it is a Postgres URL; ValueError saying what is wrong."""
    source_driver_url(url)
    return url


@asynccontextmanager
async def moim_import(
    config: Config, database_url: str, source_url: str
) -> AsyncIterator[MoimImport]:
    """The adapters of import-moim: the original's tables, and the service's database through
    a pool of one connection (events are imported one after the other)."""
    settings = replace(_pool_settings(config), pool_size=1)
    database = Database(database_url, settings)
    try:
        yield MoimImport(
            source=PostgresMoimSource(source_url, settings),
            target=lambda: SqlImportTarget(database),
            public_base_url=config.public_base_url,
        )
    finally:
        await database.close()
