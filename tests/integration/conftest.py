"""Integration fixtures: a real Postgres built by the migrations and the real gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.callbacks import running_shim, shim_config
from tests.postgres import provision_test_database, truncate_all
from ticketing_service import bootstrap
from ticketing_service.adapters.db.pool import Database
from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.bootstrap import Service
from ticketing_service.config import Config
from ticketing_service.entrypoints.dev.payment_service import (
    create_payment_service_app,
    running_payment_service,
    state_of,
)
from ticketing_service.entrypoints.dev.payment_state import PaymentServiceState
from ticketing_service.entrypoints.grpc.server import RunningServer
from ticketing_service.entrypoints.serving import served
from ticketing_service.service_layer.dependencies import Dependencies

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
async def payment_service() -> AsyncIterator[PaymentService]:
    """The payment service fake on a real port."""
    app = create_payment_service_app(token=PAYMENT_TOKEN)
    async with running_payment_service(app) as base_url:
        yield PaymentService(base_url, state_of(app))


def service_config(database_url: str, payment_url: str, **settings: str) -> Config:
    """The settings of a service under test, read as `serve` reads its environment."""
    env = {
        "DATABASE_URL": database_url,
        "TICKET_PAYMENT_SERVICE_URL": payment_url,
        "TICKET_PAYMENT_SERVICE_TOKEN": PAYMENT_TOKEN,
        # Bounds the tests that make the payment service hang; long enough for the fake to
        # answer on a machine loaded by other runs (1 s failed a checkout at a load of 5).
        "TICKET_PAYMENT_TIMEOUT_SECONDS": "3",
        "DEFAULT_PORTONE_PROVIDER_ACCOUNT_ID": DEFAULT_ACCOUNT,
        "TICKETING_CALLBACK_URL": "http://127.0.0.1:9/api/ticket-payment-callbacks",
        "MOIM_PUBLIC_BASE_URL": "https://moim.example",
        "TICKETING_DB_LOCK_TIMEOUT_MS": "2000",
        # The sweeper and the reconciler make one pass as the service starts, then only when a
        # test calls them: a test decides when holds end. Tests of the background passes
        # themselves shorten this.
        "TICKETING_SWEEP_INTERVAL_SECONDS": "3600",
    }
    return Config.from_env(env | settings)


@pytest.fixture
def config(database_url: str, payment_service: PaymentService) -> Config:
    """The settings of the service under test."""
    return service_config(database_url, payment_service.url)


@asynccontextmanager
async def listening_service(config: Config) -> AsyncIterator[Service]:
    """The service's life cycle as `serve` runs it, once its event listener listens."""
    assert config.database_url is not None
    async with bootstrap.running_service(config, config.database_url) as service:
        async with asyncio.timeout(10):
            await service.event_signal.listening.wait()
        yield service


@asynccontextmanager
async def serving(config: Config) -> AsyncIterator[tuple[TicketingServiceAsyncStub, Service]]:
    """The service as `serve` runs it, answering on a free port, and a client of it."""
    async with (
        listening_service(config) as service,
        served(service, config, "127.0.0.1:0") as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        yield pb_grpc.TicketingServiceStub(channel), service


@pytest.fixture
async def service(config: Config) -> AsyncIterator[Service]:
    """The service with its background tasks running, on the test database."""
    async with listening_service(config) as running:
        yield running


@pytest.fixture
def deps(service: Service) -> Dependencies:
    """The service's real adapters, as its handlers get them."""
    return service.deps


@pytest.fixture
def database(service: Service) -> Database:
    """The service's connection pool."""
    return service.database


@pytest.fixture
def checkouts(service: Service) -> HttpPaymentService:
    """The service's payment-service client, pointed at the fake."""
    return service.payment_service


@pytest.fixture
async def server(service: Service, config: Config) -> AsyncIterator[RunningServer]:
    """The real gRPC server on a free port."""
    async with served(service, config, "127.0.0.1:0") as running:
        yield running


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
