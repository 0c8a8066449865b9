"""The optional bearer token: required on TicketingService, never on health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.rich_errors import rich_error
from tests.stalled_calls import never_sent
from ticketing_service.entrypoints.grpc.server import ServerLimits, start_server
from ticketing_service.service_layer.dependencies import Dependencies

TOKEN = "correct-horse"


@pytest.fixture
async def channel(deps: Dependencies) -> AsyncIterator[grpc.aio.Channel]:
    running = await start_server(deps, "127.0.0.1:0", tokens=[TOKEN])
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel
    await running.stop(0)


REQUEST = pb.GetTicketingSettingsRequest(event_id="nope")


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),), (("x-token", TOKEN),)],
)
async def test_a_call_without_the_right_bearer_token_is_unauthenticated(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.TicketingServiceStub(channel).GetTicketingSettings(REQUEST, metadata=metadata)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")


async def test_the_right_token_reaches_the_handler(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pb_grpc.TicketingServiceStub(channel).GetTicketingSettings(
            REQUEST, metadata=(("authorization", f"Bearer {TOKEN}"),)
        )
    assert rich_error(caught.value).reason == "EVENT_NOT_FOUND"


async def test_health_needs_no_token(channel: grpc.aio.Channel) -> None:
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_lower_case_scheme_is_the_same_bearer_token(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # UNAUTHENTICATED before
        await pb_grpc.TicketingServiceStub(channel).GetTicketingSettings(
            REQUEST, metadata=(("authorization", f"bearer {TOKEN}"),)
        )
    assert rich_error(caught.value).reason == "EVENT_NOT_FOUND"


GET_RESERVATION = "/moim.ticketing.v1.TicketingService/GetReservation"
ONE_CONNECTION_EACH = [("grpc.use_local_subchannel_pool", 1)]


async def no_longer_connected(channel: grpc.aio.Channel) -> None:
    """Once the server has closed `channel`'s connection (bounded)."""
    async with asyncio.timeout(30):
        while (state := channel.get_state()) == grpc.ChannelConnectivity.READY:
            await channel.wait_for_state_change(state)


async def test_calls_without_the_token_holding_back_their_request_hold_no_connection(
    deps: Dependencies,
) -> None:
    # Calls that sent their headers and never their request, from a client with no token, kept
    # their connections from ever being idle: as many as the server takes (1000 by default),
    # and every new client of any host was refused UNAVAILABLE for as long as they stayed.
    limits = ServerLimits(max_connections=2, connection_idle_seconds=1)
    running = await start_server(deps, "127.0.0.1:0", [TOKEN], limits=limits)
    target = f"127.0.0.1:{running.port}"
    held = [grpc.aio.insecure_channel(target, options=ONE_CONNECTION_EACH) for _ in range(2)]
    try:
        stalled = []
        for channel in held:
            send: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
            send = channel.stream_unary(GET_RESERVATION, request_serializer=bytes)
            stalled += [send(never_sent()) for _ in range(3)]
        async with asyncio.timeout(5):  # at once: far less than the wait for a request
            codes = [await call.code() for call in stalled]
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * len(stalled)
        for channel in held:  # with no call left, each connection is closed once idle
            await no_longer_connected(channel)
        async with grpc.aio.insecure_channel(target, options=ONE_CONNECTION_EACH) as another:
            with pytest.raises(grpc.aio.AioRpcError) as served:
                await pb_grpc.TicketingServiceStub(another).GetTicketingSettings(
                    REQUEST, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=10
                )
        assert rich_error(served.value).reason == "EVENT_NOT_FOUND"
        for call in stalled:
            call.cancel()
    finally:
        for channel in held:
            await channel.close()
        await running.stop(0)
