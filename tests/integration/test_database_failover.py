"""A failover that leaves the service on a read-only Postgres: writes answer UNAVAILABLE, the
background tasks keep trying, health turns NOT_SERVING while they fail, and everything comes back
by itself once the database takes writes again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.conftest import PaymentService, listening_service, service_config
from tests.integration.flows import configure_event, hold, start
from tests.postgres import run
from tests.rich_errors import rich_error
from ticketing_service.entrypoints.grpc.server import SERVICE_NAME
from ticketing_service.entrypoints.serving import served

# Far above what a healthy run needs: supervision reports a task unhealthy after three failed
# passes, backing off 1 s then 2 s between them.
GUARD_SECONDS = 60
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def read_only(database_url: str, on: bool) -> str:
    """`ALTER DATABASE … SET default_transaction_read_only`, as a failover to a standby feels."""
    name = urlsplit(database_url).path.lstrip("/")
    return f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'


async def fail_over(database_url: str, to_read_only: bool) -> None:
    """Switch the database and cut every other session, so the service reconnects to it."""
    await run(
        database_url,
        "SET default_transaction_read_only = off",  # this session may be read-only already
        read_only(database_url, to_read_only),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )


@pytest.fixture
async def writable_again(database_url: str) -> AsyncIterator[None]:
    yield
    await run(
        database_url, "SET default_transaction_read_only = off", read_only(database_url, False)
    )


async def health_becomes(health: health_pb2_grpc.HealthStub, status: int) -> None:
    async with asyncio.timeout(GUARD_SECONDS):
        while True:
            check = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            if check.status == status:
                return
            await asyncio.sleep(0.1)


async def test_a_read_only_database_answers_unavailable_and_health_follows_the_tasks(
    database_url: str, payment_service: PaymentService, writable_again: None
) -> None:
    # The sweeper writes on every pass: make passes frequent, so its failures show quickly.
    config = service_config(
        database_url, payment_service.url, TICKETING_SWEEP_INTERVAL_SECONDS="0.2"
    )
    async with (
        listening_service(config) as service,
        served(service, config, "127.0.0.1:0") as running,
        grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel,
    ):
        stub = pb_grpc.TicketingServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await configure_event(stub)
        await fail_over(database_url, to_read_only=True)

        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await start(stub, "buyer")
        await health_becomes(health, NOT_SERVING)
        await fail_over(database_url, to_read_only=False)
        await health_becomes(health, SERVING)
        held = await hold(stub, "buyer")

    error = rich_error(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    assert held.checkout_url
