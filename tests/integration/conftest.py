"""Integration fixtures: a real Postgres built by the migrations and the real gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.callbacks import running_shim, shim_config
from tests.postgres import provision_test_database, truncate_all
from ticketing_service.adapters.db.event_listener import PostgresEventSignal
from ticketing_service.adapters.db.pool import Database, PoolSettings
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork
from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.bootstrap import wake_and_observe
from ticketing_service.entrypoints.dev.payment_service import (
    create_payment_service_app,
    running_payment_service,
    state_of,
)
from ticketing_service.entrypoints.dev.payment_state import PaymentServiceState
from ticketing_service.entrypoints.grpc.server import RunningServer, start_server
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.events_handlers import run_event_sequencer

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub

DEFAULT_ACCOUNT = "store-default-account"
PAYMENT_TOKEN = "payment-service-token"


@dataclass(frozen=True)
class PaymentService:
    """The running payment service fake: its URL and its state (what it has seen and holds)."""

    url: str
    state: PaymentServiceState


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated database for the whole run."""
    return provision_test_database(tmp_path_factory.mktemp("postgres"))


@pytest.fixture
def database_url(migrated_database: str) -> str:
    """The test database, emptied before the test."""
    truncate_all(migrated_database)
    return migrated_database


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The connection pool on the test database."""
    database = Database(database_url, PoolSettings(lock_timeout_ms=2000))
    yield database
    await database.close()


@pytest.fixture
async def payment_service() -> AsyncIterator[PaymentService]:
    """The payment service fake on a real port."""
    app = create_payment_service_app(token=PAYMENT_TOKEN)
    async with running_payment_service(app) as base_url:
        yield PaymentService(base_url, state_of(app))


@pytest.fixture
async def checkouts(payment_service: PaymentService) -> AsyncIterator[HttpPaymentService]:
    """The real payment-service client, pointed at the fake."""
    gateway = HttpPaymentService(payment_service.url, PAYMENT_TOKEN, timeout_seconds=1.0)
    yield gateway
    await gateway.aclose()


@pytest.fixture
def sequencer_wakeup() -> asyncio.Event:
    """Set after each commit that appended events, as in a server process."""
    return asyncio.Event()


@pytest.fixture
async def event_signal(database: Database) -> AsyncIterator[PostgresEventSignal]:
    """The LISTEN connection that wakes event watchers, already listening."""
    signal = PostgresEventSignal(database)
    listener = asyncio.create_task(signal.run())
    async with asyncio.timeout(10):
        await signal.listening.wait()
    yield signal
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)


@pytest.fixture
def deps(
    database: Database,
    checkouts: HttpPaymentService,
    sequencer_wakeup: asyncio.Event,
    event_signal: PostgresEventSignal,
) -> Dependencies:
    """The service's real adapters."""
    return Dependencies(
        uow=lambda: SqlUnitOfWork(database, after_commit=wake_and_observe(sequencer_wakeup, None)),
        payment_service=checkouts,
        default_provider_account_id=DEFAULT_ACCOUNT,
        hold_seconds=600,
        callback_url="http://127.0.0.1:9/api/ticket-payment-callbacks",
        public_base_url="https://moim.example",
        event_signal=event_signal,
    )


@pytest.fixture
async def server(
    deps: Dependencies, sequencer_wakeup: asyncio.Event
) -> AsyncIterator[RunningServer]:
    """The real gRPC server on a free port, with its event sequencer."""
    running = await start_server(deps, "127.0.0.1:0")
    sequencer = asyncio.create_task(
        run_event_sequencer(deps, sequencer_wakeup, interval_seconds=0.5)
    )
    yield running
    sequencer.cancel()
    await asyncio.gather(sequencer, return_exceptions=True)
    await running.stop(0)


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[TicketingServiceAsyncStub]:
    """A client of the running server."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.TicketingServiceStub(channel)


@pytest.fixture
async def shim(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """The real webhook shim on a free port, forwarding to the running server; a client of it."""
    async with running_shim(shim_config(f"127.0.0.1:{server.port}")) as client:
        yield client
