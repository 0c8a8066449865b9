"""The optional bearer token: required on TicketingService, never on health."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.rich_errors import rich_error
from ticketing_service.entrypoints.grpc.server import start_server
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
