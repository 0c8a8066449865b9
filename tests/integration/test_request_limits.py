"""The real gRPC server against requests built to hurt it: bombs, floods of bad fields, crowds.

Each is refused with a status a default client can read, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.flows import EVENT, configure_event, hold
from tests.rich_errors import rich_error
from tests.stalled_calls import never_sent
from tests.tcp_proxy import SilentProxy, from_another_host
from ticketing_service.domain.reservations import MAX_ANSWERS_BYTES
from ticketing_service.entrypoints.grpc.server import (
    MAX_REQUEST_BYTES,
    ServerLimits,
    start_server,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.events_handlers import sequence_events

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

T = TypeVar("T")
Watch = grpc.aio.UnaryStreamCall[
    pb.WatchRegistrationEventsRequest, pb.WatchRegistrationEventsResponse
]


def settings_with(tiers: list[settings_pb2.TierInput]) -> pb.UpdateTicketingSettingsRequest:
    return pb.UpdateTicketingSettingsRequest(event_id=EVENT, event_title="Launch", tiers=tiers)


async def test_a_million_empty_tiers_are_refused_unread_and_the_server_keeps_serving(
    stub: Stub,
) -> None:
    bomb = settings_with([settings_pb2.TierInput() for _ in range(1_000_000)])
    assert bomb.ByteSize() > MAX_REQUEST_BYTES

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateTicketingSettings(bomb)

    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await configure_event(stub)  # still serving
    assert (
        await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id=EVENT))
    ).settings


async def test_a_list_too_long_is_refused_by_its_length_before_any_element_is_read(
    stub: Stub,
) -> None:
    # Just under the size limit; the last tier's NUL is only found by reading every element.
    tiers = [settings_pb2.TierInput() for _ in range(500_000)]
    tiers[-1].tier_id = "\x00"
    bomb = settings_with(tiers)
    assert bomb.ByteSize() < MAX_REQUEST_BYTES

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateTicketingSettings(bomb)

    error = rich_error(caught.value)
    assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["tiers"])


async def test_a_hundred_bad_tiers_give_a_default_client_invalid_argument_with_20_violations(
    stub: Stub,
) -> None:
    # 100 blank ids and names: 299 violations, which once made a 25 KB error that a default
    # client read as RESOURCE_EXHAUSTED ("metadata size exceeds hard limit").
    request = settings_with([settings_pb2.TierInput() for _ in range(100)])

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateTicketingSettings(request)

    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert len(error.fields) == 20
    assert error.fields[:2] == ["tiers[0].tier_id", "tiers[0].name"]
    assert caught.value.details() == (
        "The request has invalid fields (tiers[0].tier_id, tiers[0].name, tiers[1].tier_id"
        " and 296 more); correct them and retry."
    )


def answers_of(total_bytes: int) -> list[reservation_pb2.Answer]:
    """Five answers whose question ids and texts add up to exactly `total_bytes`."""
    each, rest = divmod(total_bytes - 5 * 2, 5)
    sizes = [each + (1 if i < rest else 0) for i in range(5)]
    return [
        reservation_pb2.Answer(question_id=f"q{i}", answer="가" * (n // 3) + "a" * (n % 3))
        for i, n in enumerate(sizes)
    ]


@pytest.mark.parametrize(
    ("total", "accepted"), [(MAX_ANSWERS_BYTES, True), (MAX_ANSWERS_BYTES + 1, False)]
)
async def test_answers_are_capped_in_total_size(stub: Stub, total: int, accepted: bool) -> None:
    await configure_event(stub)
    request = pb.StartPaidRegistrationRequest(
        event_id=EVENT, tier_id="vip", user_id="talkative", answers=answers_of(total)
    )
    assert (
        sum(len(a.question_id.encode()) + len(a.answer.encode()) for a in request.answers) == total
    )

    if accepted:
        assert (await stub.StartPaidRegistration(request)).requires_payment
        return
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartPaidRegistration(request)
    assert rich_error(caught.value).fields == ["answers"]


@asynccontextmanager
async def limited_server(deps: Dependencies, limits: ServerLimits) -> AsyncIterator[Stub]:
    """A client of a second server, on the same database, that takes on only `limits`."""
    running = await start_server(deps, "127.0.0.1:0", limits=limits)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.TicketingServiceStub(channel)
    finally:
        await running.stop(0)


@pytest.fixture
async def one_event(stub: Stub, deps: Dependencies) -> None:
    """A numbered event on the feed, so a watcher receives something as soon as it is open."""
    await configure_event(stub)
    await hold(stub, "first")
    await sequence_events(deps)


async def watching(stub: Stub) -> Watch:
    """A watcher that has received the first event: the server counts it as open."""
    call = stub.WatchRegistrationEvents(pb.WatchRegistrationEventsRequest())
    async with asyncio.timeout(30):
        await call.read()
    return call


async def once_a_place_is_free(attempt: Callable[[], Awaitable[T]]) -> T:
    """`attempt`, retried while the server is still releasing a place (bounded)."""
    async with asyncio.timeout(30):
        while True:
            try:
                return await attempt()
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
            await asyncio.sleep(0.05)


@pytest.mark.usefixtures("one_event")
async def test_past_the_watcher_limit_a_watcher_is_refused_until_one_leaves(
    deps: Dependencies,
) -> None:
    limits = ServerLimits(max_concurrent_rpcs=10, max_watchers=2)
    async with limited_server(deps, limits) as stub:
        watchers = [await watching(stub), await watching(stub)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await watching(stub)
        watchers.pop().cancel()
        watchers.append(await once_a_place_is_free(lambda: watching(stub)))
        for call in watchers:
            call.cancel()
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS")
    assert error.metadata == {"maxWatchers": "2"}


@pytest.mark.usefixtures("one_event")
async def test_past_the_concurrent_call_limit_a_call_is_refused_until_one_ends(
    deps: Dependencies,
) -> None:
    get = pb.GetTicketingSettingsRequest(event_id=EVENT)
    limits = ServerLimits(max_concurrent_rpcs=2, max_watchers=10)
    async with limited_server(deps, limits) as stub:
        watchers = [await watching(stub), await watching(stub)]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTicketingSettings(get)
        watchers.pop().cancel()
        answered = await once_a_place_is_free(lambda: stub.GetTicketingSettings(get))
        for call in watchers:
            call.cancel()
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
    assert answered.settings.event_id == EVENT


@pytest.mark.usefixtures("one_event")
async def test_a_watcher_whose_client_went_silent_gives_its_place_back(deps: Dependencies) -> None:
    # A consumer whose machine died, or whose network dropped without a reset, kept its place
    # among the watchers for hours: nothing ended its call. The server now pings each connection
    # that carries calls, and closes one whose ping goes unanswered.
    limits = ServerLimits(max_watchers=1, keepalive_seconds=1, keepalive_timeout_seconds=1)
    running = await start_server(deps, "127.0.0.1:0", limits=limits)
    try:
        async with (
            SilentProxy(from_another_host(running.port)).running() as proxy,
            grpc.aio.insecure_channel(f"127.0.0.1:{proxy.port}") as far,
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as near,
        ):
            lost = await watching(pb_grpc.TicketingServiceStub(far))
            proxy.go_silent()
            stub = pb_grpc.TicketingServiceStub(near)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await watching(stub)
            replacement = await once_a_place_is_free(lambda: watching(stub))
            replacement.cancel()
            lost.cancel()
    finally:
        await running.stop(0)
    assert rich_error(refused.value).reason == "TOO_MANY_WATCHERS"


async def test_a_client_may_ping_every_few_seconds_through_a_quiet_watch(
    deps: Dependencies,
) -> None:
    # A client that pings to learn that the server is gone (the shim does) had its connection
    # closed "too_many_pings", its calls failing, once the server had sent nothing for a while.
    running = await start_server(deps, "127.0.0.1:0")
    pinging = [("grpc.keepalive_time_ms", 2000), ("grpc.http2.max_pings_without_data", 0)]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=pinging) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            first = await watch.read()
            # The server has nothing more to send; the client pings four times meanwhile.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(8):
                    await watch.read()  # a closed connection ends it at once
            watch.cancel()
    finally:
        await running.stop(0)
    assert isinstance(first, health_pb2.HealthCheckResponse)


async def test_a_call_whose_request_does_not_come_is_refused_and_leaves_its_connection_idle(
    deps: Dependencies,
) -> None:
    # A call that sent its headers and never its request stayed open for as long as its client
    # liked (one was still open after 420 s), and its connection was never idle, never closed.
    limits = ServerLimits(request_arrival_seconds=0.5, connection_idle_seconds=1)
    running = await start_server(deps, "127.0.0.1:0", limits=limits)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            send: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
            send = channel.stream_unary(
                "/moim.ticketing.v1.TicketingService/GetReservation", request_serializer=bytes
            )
            stalled = send(never_sent())
            async with asyncio.timeout(10):
                code, details = await stalled.code(), await stalled.details()
            stalled.cancel()
            async with asyncio.timeout(30):  # no call left: the server closes it once idle
                while (state := channel.get_state()) == grpc.ChannelConnectivity.READY:
                    await channel.wait_for_state_change(state)
    finally:
        await running.stop(0)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert details == (
        "The call's request did not arrive within 0.5 s of the call's start;"
        " send the call again, its request with it."
    )
