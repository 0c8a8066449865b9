"""Integration fixtures: a real Postgres built by the migrations and the real gRPC server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.postgres import provision_test_database, truncate_all
from ticketing_service.adapters.db.engine import PoolSettings, create_engine
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork
from ticketing_service.entrypoints.grpc.server import RunningServer, start_server
from ticketing_service.service_layer.dependencies import Dependencies

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub

DEFAULT_ACCOUNT = "store-default-account"


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
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A pooled engine on the test database."""
    engine = create_engine(database_url, PoolSettings(lock_timeout_ms=2000))
    yield engine
    await engine.dispose()


@pytest.fixture
def deps(engine: AsyncEngine) -> Dependencies:
    """The service's real adapters."""
    return Dependencies(
        uow=lambda: SqlUnitOfWork(engine), default_provider_account_id=DEFAULT_ACCOUNT
    )


@pytest.fixture
async def server(deps: Dependencies) -> AsyncIterator[RunningServer]:
    """The real gRPC server on a free port."""
    running = await start_server(deps, "127.0.0.1:0", token=None)
    yield running
    await running.stop(0)


@pytest.fixture
async def stub(server: RunningServer) -> AsyncIterator[TicketingServiceAsyncStub]:
    """A client of the running server."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.TicketingServiceStub(channel)
