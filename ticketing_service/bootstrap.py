"""The composition root: the one place that knows the concrete adapters, and the service's life
cycle: wired, its background tasks running supervised, and everything closed at the end.

`serve`, `dev`, the CLI's one-off commands and the test fixtures all run the service through
`running_service` (or `wired` for a command that runs no background work); nothing is assembled
anywhere else, and nothing is patched after it is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from typing import Any

from ticketing_service.adapters.db.event_listener import PostgresEventSignal
from ticketing_service.adapters.db.moim_import_writer import SqlImportTarget
from ticketing_service.adapters.db.pool import Database, PoolSettings
from ticketing_service.adapters.db.schema_revision import check_schema
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork
from ticketing_service.adapters.embedded_postgres import (
    EmbeddedPostgresError,
    start_embedded_postgres,
)
from ticketing_service.adapters.moim_source import PostgresMoimSource
from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.config import Config, ConfigError, database_url_problem
from ticketing_service.domain.reconciliation import ReconcilePolicy
from ticketing_service.domain.refunds import RefundRetryPolicy
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.events_handlers import Sequencer
from ticketing_service.service_layer.expiry import sweep
from ticketing_service.service_layer.moim_import import MoimImport
from ticketing_service.service_layer.observer import NO_OBSERVER, ObservedPaymentService, Observer
from ticketing_service.service_layer.ports import AfterCommit, Committed
from ticketing_service.service_layer.reconciliation import reconcile_due
from ticketing_service.service_layer.refund_handlers import cancel_batch
from ticketing_service.service_layer.refund_worker import (
    MIN_LEASE,
    REFUND_BATCH,
    send_due_refunds,
)
from ticketing_service.service_layer.supervision import HealthBoard, every, supervise

# The sequencer numbers this process's events as soon as they commit; this interval only
# catches events whose writer died before it could wake its sequencer.
SEQUENCER_FALLBACK_SECONDS = 2.0
# The least time between two of a process's sequencer passes: how much later than its commit
# an event may be numbered under load (after a quiet spell a commit is numbered at once), and
# why one pass then numbers many commits' events.
SEQUENCER_MIN_PASS_SECONDS = 0.05

# One pass of a background task, or the wait between two.
Pass = Callable[[], Awaitable[object]]


@dataclass(slots=True)
class Service:
    """The wired service: what the entrypoints hand their calls to, and what it is made of."""

    deps: Dependencies
    database: Database
    payment_service: HttpPaymentService
    event_signal: PostgresEventSignal
    sequencer: Sequencer
    # Whether every background task does its work (the gRPC health service follows it).
    health: HealthBoard = field(default_factory=HealthBoard)

    def pool_usage(self) -> tuple[int, int]:
        """Connections checked out of the database pool now, and the pool's size."""
        return self.database.usage()

    def background_tasks(self, config: Config) -> dict[str, Coroutine[Any, Any, None]]:
        """Every background task of a server process, by name, each one supervised."""
        deps, sequencer = self.deps, self.sequencer
        interval = every(config.sweep_interval_seconds)
        passes: dict[str, tuple[Pass, Pass]] = {
            "sweeper": (partial(sweep, deps), interval),
            "reconciler": (partial(reconcile_due, deps), interval),
            "refund sender": (partial(send_due_refunds, deps, refund_lease(config)), interval),
            "event canceller": (partial(cancel_events, deps), interval),
            "event sequencer": (partial(sequencer.one_pass, deps), sequencer.wait),
            # Its own loop reconnects after a lost connection; supervision catches the rest.
            "event listener": (self.event_signal.run, every(1.0)),
        }
        return {
            name: supervise(name, one_pass, wait, self.health)
            for name, (one_pass, wait) in passes.items()
        }

    async def aclose(self) -> None:
        """Close the payment service's connections and the database pool."""
        await self.payment_service.aclose()
        await self.database.close()


def resolve_database_url(config: Config) -> str:
    """`DATABASE_URL`, or an embedded Postgres in `TICKETING_DATA_DIR` when it is unset."""
    if config.database_url:
        return config.database_url
    try:
        return start_embedded_postgres(config.data_dir)
    except EmbeddedPostgresError as error:
        raise ConfigError(str(error)) from None


def migrate(config: Config, database_url: str) -> None:
    """Apply every pending migration, each lock waited for at most the database lock timeout."""
    # Imported here, not at the top: Alembic brings SQLAlchemy, which only a migration uses.
    # A replica started with `--no-migrate` (and every worker of `serve --workers N`) never
    # loads either: each process starts about 0.8 s sooner, with 22 MB less.
    from ticketing_service.adapters.db import migrations

    migrations.upgrade_to_head(database_url, config.db_lock_timeout_ms)


async def require_schema(config: Config, database_url: str) -> None:
    """For a process that does not migrate: SchemaNotReady unless the database was migrated to
    this version's schema (or a later one), DatabaseUnavailable when it cannot be reached."""
    await check_schema(Database(database_url, _pool_settings(config)))


@asynccontextmanager
async def wired(
    config: Config, database_url: str, observer: Observer = NO_OBSERVER
) -> AsyncIterator[Service]:
    """The service's adapters, closed when the block ends (for one-off commands)."""
    service = _wire(config, database_url, observer)
    try:
        yield service
    finally:
        await service.aclose()


@asynccontextmanager
async def running_service(
    config: Config, database_url: str, observer: Observer = NO_OBSERVER
) -> AsyncIterator[Service]:
    """The service with every background task running supervised, until the block ends."""
    async with wired(config, database_url, observer) as service:
        tasks = [
            asyncio.create_task(task, name=name)
            for name, task in service.background_tasks(config).items()
        ]
        try:
            yield service
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def wake_and_observe(sequencer: Sequencer, observer: Observer) -> AfterCommit:
    """After each commit: wake this process's event sequencer if events were appended, and
    tell the observer (the metrics) what was committed."""

    def after_commit(committed: Committed) -> None:
        if committed.events:
            sequencer.wakeup.set()
        observer.committed(committed)

    return after_commit


def reconcile_policy(config: Config) -> ReconcilePolicy:
    """How reconciliation paces its questions, from the settings."""
    return ReconcilePolicy(
        payment_grace=timedelta(seconds=config.payment_grace_seconds),
        ask_after=timedelta(seconds=config.reconcile_after_seconds),
        first_backoff=timedelta(seconds=config.reconcile_backoff_seconds),
        window=timedelta(hours=config.reconcile_window_hours),
    )


def refund_lease(config: Config) -> timedelta:
    """How long a refund sender keeps a batch of refunds: twice its calls' timeouts at most."""
    batch_calls = timedelta(seconds=REFUND_BATCH * config.payment_timeout_seconds)
    return max(MIN_LEASE, 2 * batch_calls)


# Holds and registrations an event's cancellation cancels per transaction.
CANCEL_BATCH = 200


async def cancel_events(deps: Dependencies) -> None:
    """Carry out every event cancellation under way, a bounded batch per transaction."""
    while await cancel_batch(deps, CANCEL_BATCH):
        pass


def check_source_database_url(url: str) -> str:
    """`url` when it is a Postgres URL asyncpg takes; ConfigError saying what is wrong (and
    none of the URL, which may hold a password)."""
    if problem := database_url_problem(url):
        raise ConfigError(
            "--source-database-url must be a postgresql:// or postgres:// URL of Moim's "
            f"database; {problem}."
        )
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
            auto_refund=config.auto_refund,
            reconcile_policy=reconcile_policy(config),
            hold_length=timedelta(seconds=config.hold_seconds),
        )
    finally:
        await database.close()


def _pool_settings(config: Config) -> PoolSettings:
    return PoolSettings(
        pool_size=config.db_pool_size,
        lock_timeout_ms=config.db_lock_timeout_ms,
        statement_timeout_ms=config.db_statement_timeout_ms,
        max_lifetime_seconds=config.db_max_connection_lifetime_seconds,
    )


def _wire(config: Config, database_url: str, observer: Observer) -> Service:
    database = Database(database_url, _pool_settings(config))
    payment_service = HttpPaymentService(
        # `serve` refuses to start without it; the other commands never open a checkout.
        config.payment_service_url or "",
        config.payment_service_token,
        config.payment_timeout_seconds,
    )
    sequencer = Sequencer(SEQUENCER_FALLBACK_SECONDS, SEQUENCER_MIN_PASS_SECONDS)
    event_signal = PostgresEventSignal(database)
    after_commit = wake_and_observe(sequencer, observer)
    deps = Dependencies(
        uow=lambda: SqlUnitOfWork(database, after_commit=after_commit),
        payment_service=ObservedPaymentService(payment_service, observer),
        default_provider_account_id=config.default_provider_account_id,
        hold_seconds=config.hold_seconds,
        callback_url=config.callback_url,
        public_base_url=config.public_base_url,
        event_signal=event_signal,
        reconcile_policy=reconcile_policy(config),
        auto_refund=config.auto_refund,
        refund_retry=RefundRetryPolicy(
            backoff=timedelta(seconds=config.refund_backoff_seconds),
            max_attempts=config.refund_max_attempts,
        ),
        observer=observer,
    )
    return Service(deps, database, payment_service, event_signal, sequencer)
