"""A silent network drop between the service and Postgres: every call ends within the
statement bound with UNAVAILABLE, nothing hangs, and the service recovers by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import grpc
import pytest
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.conftest import PaymentService, service_config, serving
from tests.integration.flows import configure_event, hold
from tests.rich_errors import rich_error
from tests.tcp_proxy import SilentProxy, unix_socket, unix_socket_of

# Short bounds, so the test sees a drop noticed in seconds: the client gives a statement
# this long plus a second.
STATEMENT_TIMEOUT_MS = "1000"
# Far above the bounds: only a broken run waits this long.
GUARD_SECONDS = 30


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[SilentProxy]:
    async with SilentProxy(unix_socket(unix_socket_of(database_url))).running() as running:
        yield running


async def test_a_silent_drop_answers_unavailable_within_the_bound_and_the_pool_recovers(
    database_url: str, payment_service: PaymentService, proxy: SilentProxy
) -> None:
    through_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}{urlsplit(database_url).path}"
    config = service_config(
        through_proxy,
        payment_service.url,
        TICKETING_DB_STATEMENT_TIMEOUT_MS=STATEMENT_TIMEOUT_MS,
        TICKETING_DB_LOCK_TIMEOUT_MS="500",
    )
    async with serving(config) as (stub, _):
        await configure_event(stub)
        held = await hold(stub, "payer")
        read = pb.GetReservationRequest(reservation_id=held.reservation_id)

        proxy.go_silent()
        with pytest.raises(grpc.aio.AioRpcError) as dropped:
            async with asyncio.timeout(GUARD_SECONDS):
                await stub.GetReservation(read)
        proxy.resume()
        async with asyncio.timeout(GUARD_SECONDS):
            recovered = await stub.GetReservation(read)

    error = rich_error(dropped.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    assert recovered.reservation == held
