"""The plaintext health port beside a TLS server: probes get answers, nothing else does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.certificates import CertificateAuthority
from tests.idle_connections import idle_connections
from tests.rich_errors import rich_error
from tests.stalled_calls import first_ended, never_sent
from ticketing_service.entrypoints.grpc.health_port import (
    MAX_CALLS_PER_CONNECTION,
    HealthPort,
    start_health_port,
)
from ticketing_service.entrypoints.grpc.server import ServerLimits
from ticketing_service.entrypoints.grpc.tls import server_credentials

SERVICE = "moim.ticketing.v1.TicketingService"
CHECK = "/grpc.health.v1.Health/Check"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
async def servicer() -> health.HealthServicer:
    servicer = health.HealthServicer()
    servicer.set(SERVICE, SERVING)
    return servicer


@pytest.fixture
async def health_port(servicer: health.HealthServicer) -> AsyncIterator[HealthPort]:
    port = await start_health_port("127.0.0.1:0", servicer)
    yield port
    await port.stop(0)


async def check(port: int, service: str = SERVICE) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        answer = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
    return int(answer.status)


async def test_a_plaintext_probe_is_answered_while_the_main_port_requires_mutual_tls(
    tmp_path: Path, servicer: health.HealthServicer, health_port: HealthPort
) -> None:
    authority = CertificateAuthority()
    cert, key = authority.issue("server", server=True).write(tmp_path, "server")
    client_ca = tmp_path / "client-ca.crt"
    client_ca.write_bytes(CertificateAuthority("clients").pem)
    main = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, main)
    main_port = main.add_secure_port("127.0.0.1:0", server_credentials(cert, key, client_ca))
    await main.start()
    try:
        with pytest.raises(grpc.aio.AioRpcError):  # control: the kubelet cannot use this port
            await check(main_port)
        assert await check(health_port.port) == SERVING
    finally:
        await main.stop(0)


async def test_the_health_port_follows_the_shared_status_into_graceful_shutdown(
    servicer: health.HealthServicer, health_port: HealthPort
) -> None:
    assert await check(health_port.port) == SERVING
    servicer.enter_graceful_shutdown()
    assert await check(health_port.port) == NOT_SERVING


async def test_the_health_port_serves_no_ticketing_call(health_port: HealthPort) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pb_grpc.TicketingServiceStub(channel).GetTicketingSettings(
                pb.GetTicketingSettingsRequest(event_id="e"), timeout=10
            )
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_health_port_that_cannot_bind_says_so(servicer: health.HealthServicer) -> None:
    with pytest.raises(OSError, match="health probes"):
        await start_health_port("256.0.0.1:1", servicer)


async def test_a_health_port_already_in_use_is_an_error_not_a_silent_share(
    servicer: health.HealthServicer, health_port: HealthPort
) -> None:
    with pytest.raises(OSError, match="health probes"):
        await start_health_port(f"127.0.0.1:{health_port.port}", servicer)


async def test_the_asyncio_health_servicer_can_be_shared_with_the_health_port_too() -> None:
    servicer = health.aio.HealthServicer()
    await servicer.set(SERVICE, SERVING)
    port = await start_health_port("127.0.0.1:0", servicer)
    try:
        assert await check(port.port) == SERVING
        await servicer.enter_graceful_shutdown()
        assert await check(port.port) == NOT_SERVING
    finally:
        await port.stop(0)


async def test_a_connection_may_not_pile_up_open_calls_on_the_health_port() -> None:
    servicer = health.aio.HealthServicer()  # as the server shares it
    await servicer.set(SERVICE, SERVING)
    port = await start_health_port("127.0.0.1:0", servicer)
    request = health_pb2.HealthCheckRequest(service=SERVICE)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port.port}") as piling:
            stub = health_pb2_grpc.HealthStub(piling)
            watches = [stub.Watch(request) for _ in range(MAX_CALLS_PER_CONNECTION)]
            for watch in watches:
                assert (await watch.read()).status == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as queued:
                await stub.Check(request, timeout=1)  # waits in its client for a free stream
            assert queued.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            own_connection = [("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port.port}", own_connection) as other:
                answer = await health_pb2_grpc.HealthStub(other).Check(request, timeout=10)
            assert answer.status == SERVING  # another connection is answered
            for watch in watches:
                watch.cancel()
    finally:
        await port.stop(0)


async def test_the_health_port_bounds_its_connections_as_the_main_port_does() -> None:
    servicer = health.aio.HealthServicer()
    await servicer.set(SERVICE, SERVING)
    limits = ServerLimits(max_connections=2)
    port = await start_health_port("127.0.0.1:0", servicer, limits=limits)
    try:
        with idle_connections(port.port, 5) as closed:
            assert closed == 3  # past the two it keeps, closed at once
        # Taken again once the server has seen them close (the channel retries until then).
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port.port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            request = health_pb2.HealthCheckRequest(service=SERVICE)
            answer = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
        assert answer.status == SERVING
    finally:
        await port.stop(0)


async def test_bytes_that_are_not_a_health_request_are_invalid_argument() -> None:
    port = await start_health_port("127.0.0.1:0", health.aio.HealthServicer())  # as served
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port.port}") as channel:
            raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
            raw = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=bytes)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await raw(b"\x0a\x02\xc3\x28", timeout=10)  # a service name not in UTF-8
    finally:
        await port.stop(0)
    error = rich_error(caught.value)  # UNKNOWN, with protobuf's exception text, before
    assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["request"])


async def test_calls_holding_back_their_request_are_bounded_per_host_here_too() -> None:
    port = await start_health_port("127.0.0.1:0", health.aio.HealthServicer())  # as served
    own_connection = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port.port}", own_connection) for _ in range(5)
    ]
    try:
        calls: list[asyncio.Task[bytes]] = [
            asyncio.ensure_future(
                channel.stream_unary(CHECK, request_serializer=bytes)(never_sent())
            )
            for channel in channels
            for _ in range(MAX_CALLS_PER_CONNECTION)
        ]
        # Four connections' worth wait; the fifth's calls are refused at once (they waited).
        refused = await first_ended(calls, MAX_CALLS_PER_CONNECTION)
        for call in refused:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert sum(call.done() for call in calls) == MAX_CALLS_PER_CONNECTION
    finally:
        for channel in channels:
            await channel.close()
        await port.stop(0)
