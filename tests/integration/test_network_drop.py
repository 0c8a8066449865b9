"""A silent network drop between the service and Postgres: every call ends within the
statement bound with UNAVAILABLE, nothing hangs, and the service recovers by itself."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.end_to_end.serving import serve_process, wait_for_line
from tests.end_to_end.test_serve_command import SERVING_LINE
from tests.integration.conftest import PaymentService, service_config, serving
from tests.integration.flows import EVENT, configure_event, hold
from tests.postgres import lock_waiters, open_transaction
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


# Calls that wait on a lock together: each holds one of the server's pooled connections.
POOL_SIZE = 8
# Far above one connect timeout (5 s), far below one per idle connection (POOL_SIZE x 5 s).
STOP_GUARD_SECONDS = 25


async def test_a_server_whose_database_went_silent_stops_on_sigterm_without_a_wait_per_connection(
    database_url: str, proxy: SilentProxy, tmp_path: Path
) -> None:
    # Each idle connection is closed with a goodbye the server answers; over a silent network
    # each waits out the connect timeout. One after the other, a pool of ten took 50 s: past an
    # orchestrator's grace period (Kubernetes': 30 s), so the process was killed mid-stop.
    through_proxy = f"postgresql://postgres@127.0.0.1:{proxy.port}{urlsplit(database_url).path}"
    env = {"DATABASE_URL": through_proxy, "TICKETING_DB_POOL_SIZE": str(POOL_SIZE)}
    with serve_process(tmp_path, "--no-migrate", **env) as process:
        port = int((await asyncio.to_thread(wait_for_line, process, SERVING_LINE)).group(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TicketingServiceStub(channel)
            await configure_event(stub)
            read = pb.GetTicketingSettingsRequest(event_id=EVENT)
            # Every pooled connection in use at once, then all idle: the calls wait on a lock.
            async with open_transaction(database_url) as holder:
                await holder.execute("LOCK TABLE ticketing_settings IN ACCESS EXCLUSIVE MODE")
                calls = [stub.GetTicketingSettings(read) for _ in range(POOL_SIZE)]
                async with asyncio.timeout(GUARD_SECONDS):
                    while lock_waiters(database_url) < POOL_SIZE:  # noqa: ASYNC110 - Postgres's state: no event reports it
                        await asyncio.sleep(0.05)
            await asyncio.gather(*calls)
        proxy.go_silent()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, STOP_GUARD_SECONDS)
        assert process.stderr is not None
        logged = process.stderr.read()
    assert process.returncode == 0
    assert "Traceback" not in logged, logged
