"""RequestArrival on fake calls: the request read by the service, a host's places bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from ticketing_service.entrypoints.grpc.arrival import (
    CLOSED,
    NO_REQUEST,
    STOPPING,
    TOO_MANY_WAITING,
    RequestArrival,
    client_address,
)
from ticketing_service.entrypoints.grpc.auth import UNAUTHENTICATED, BearerToken

HOST = "ipv4:10.0.0.7"


class Aborted(Exception):
    """What a fake call's abort raises, as gRPC's does: its code and details."""


class FakeCall:
    """A call's context from `peer`, with `metadata`, whose request arrives when `send` (or
    `end`) is called."""

    def __init__(
        self, peer: str = f"{HOST}:50123", metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self._peer = peer
        self._metadata = metadata
        self._request: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.reads = 0
        self.written: list[object] = []

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def read(self) -> Any:
        self.reads += 1
        return await self._request

    async def write(self, message: object) -> None:
        self.written.append(message)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)

    def send(self, request: object) -> None:
        self._request.set_result(request)

    def end(self) -> None:
        self._request.set_result(grpc.aio.EOF)


def arrived_with(request: object) -> FakeCall:
    call = FakeCall()
    call.send(request)
    return call


async def echo(request: object, context: object) -> object:
    return request


def handler_of(kind: str, behaviour: Any = None) -> grpc.RpcMethodHandler[Any, Any]:
    async def streamed(request: object, context: object) -> AsyncIterator[object]:
        yield request

    makers = {
        "unary_unary": (grpc.unary_unary_rpc_method_handler, echo),
        "unary_stream": (grpc.unary_stream_rpc_method_handler, streamed),
        "stream_stream": (grpc.stream_stream_rpc_method_handler, streamed),
    }
    make, default = makers[kind]
    return make(behaviour or default, bytes, bytes)


def served(arrival: RequestArrival, kind: str, behaviour: Any = None, method: str = "/s/M") -> Any:
    """The behaviour `arrival` serves a `kind` method with."""
    handler = arrival.wrap(method, handler_of(kind, behaviour))
    return handler.stream_unary or handler.stream_stream


async def waiting(
    arrival: RequestArrival, call: FakeCall, method: str = "/s/M"
) -> asyncio.Task[Any]:
    """A unary call served, up to where it waits for its request."""
    task = asyncio.create_task(served(arrival, "unary_unary", method=method)(None, call))
    for _ in range(100):  # a few turns of the loop
        if call.reads:
            return task
        await asyncio.sleep(0)
    raise AssertionError("the call never read its request")


async def test_the_request_that_arrives_is_what_the_behaviour_serves() -> None:
    call = FakeCall()
    answer = await waiting(RequestArrival(per_address=1), call)
    call.send("the request")
    assert await answer == "the request"


async def test_a_stream_that_ends_without_a_request_is_served_no_request() -> None:
    call = FakeCall()
    answer = await waiting(RequestArrival(per_address=1), call)
    call.end()
    assert await answer is NO_REQUEST


async def test_past_the_bound_a_host_s_call_is_refused_unread_and_other_hosts_wait_on() -> None:
    arrival = RequestArrival(per_address=2)
    held = [await waiting(arrival, FakeCall(f"{HOST}:1000")) for _ in range(2)]

    another_connection = FakeCall(f"{HOST}:2000")  # the same host
    assert await served(arrival, "unary_unary")(None, another_connection) is TOO_MANY_WAITING
    assert another_connection.reads == 0

    other_host = FakeCall("ipv4:10.0.0.8:1000")
    answer = await waiting(arrival, other_host)
    other_host.send("served")
    assert await answer == "served"
    for task in held:
        task.cancel()


async def test_at_the_stop_a_call_waiting_for_its_request_is_refused_and_its_place_freed() -> None:
    arrival = RequestArrival(per_address=2)
    stalled = await waiting(arrival, FakeCall())
    arrived = FakeCall()
    in_flight = await waiting(arrival, arrived)
    arrived.send("served")  # its request is in: it is served, stop or not
    arrival.end_waits()
    assert await stalled is STOPPING
    assert await in_flight == "served"
    # A call that comes after the stop began is refused unread, to be sent again.
    assert await served(arrival, "unary_unary")(None, arrived_with("next")) is CLOSED


async def test_a_call_whose_request_does_not_arrive_in_time_is_refused_and_its_place_freed() -> (
    None
):
    arrival = RequestArrival(per_address=1, arrival_seconds=0.05)
    late = await waiting(arrival, FakeCall())
    async with asyncio.timeout(10):  # before, it waited for as long as its client liked
        refused = await late
    assert refused.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert refused.description == (
        "The call's request did not arrive within 0.05 s of the call's start;"
        " send the call again, its request with it."
    )
    on_time = FakeCall()
    answer = await waiting(arrival, on_time)  # the place is free again
    on_time.send("served")
    assert await answer == "served"


TOKEN = "correct-horse"
GUARDED = "/moim.ticketing.v1.TicketingService/GetReservation"


async def test_a_call_without_the_token_is_refused_unread_at_once_holding_no_place() -> None:
    arrival = RequestArrival(per_address=1, token=BearerToken([TOKEN]))
    with_token = FakeCall(metadata=(("authorization", f"Bearer {TOKEN}"),))
    held = await waiting(arrival, with_token, GUARDED)  # the host's only place

    for metadata in [(), (("authorization", "Bearer wrong"),)]:
        without = FakeCall(metadata=metadata)
        # Not TOO_MANY_WAITING: the place is not even asked for.
        refused = await served(arrival, "unary_unary", method=GUARDED)(None, without)
        assert (refused, without.reads) == (UNAUTHENTICATED, 0)
    streamed = served(arrival, "unary_stream", method=GUARDED)(None, FakeCall())
    assert await anext(streamed) is UNAUTHENTICATED  # a watch too

    with_token.send("served")
    assert await held == "served"


async def test_health_and_reflection_need_no_token() -> None:
    arrival = RequestArrival(per_address=1, token=BearerToken([TOKEN]))
    check = served(arrival, "unary_unary", method="/grpc.health.v1.Health/Check")
    assert await check(None, arrived_with("status")) == "status"


@pytest.mark.parametrize("ending", ["arrives", "cancelled"])
async def test_a_call_no_longer_waiting_gives_its_place_back(ending: str) -> None:
    arrival = RequestArrival(per_address=1)
    first = FakeCall()
    answer = await waiting(arrival, first)
    if ending == "arrives":
        first.send("r")
        await answer
    else:
        answer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await answer

    assert await served(arrival, "unary_unary")(None, arrived_with("next")) == "next"


async def test_a_watch_holds_its_place_while_it_streams_then_gives_it_back() -> None:
    ended = asyncio.Event()

    async def watch(request: str, context: object) -> AsyncIterator[str]:
        yield request
        await ended.wait()

    arrival = RequestArrival(per_address=1)
    streaming = served(arrival, "unary_stream", watch)(None, arrived_with("status"))
    assert await anext(streaming) == "status"
    assert await served(arrival, "unary_unary")(None, FakeCall()) is TOO_MANY_WAITING

    ended.set()
    assert [message async for message in streaming] == []
    assert await served(arrival, "unary_unary")(None, arrived_with("next")) == "next"


async def test_a_watch_that_writes_serves_the_request_and_holds_its_place_until_it_returns() -> (
    None
):
    ended = asyncio.Event()

    async def watch(request: str, context: FakeCall) -> None:  # as health's Watch is written
        await context.write(request)
        await ended.wait()

    arrival = RequestArrival(per_address=1)
    call = arrived_with("status")
    watching = asyncio.create_task(served(arrival, "unary_stream", watch)(None, call))
    for _ in range(100):
        if call.written:
            break
        await asyncio.sleep(0)
    assert call.written == ["status"]
    assert await served(arrival, "unary_unary")(None, FakeCall()) is TOO_MANY_WAITING

    ended.set()
    await watching
    assert await served(arrival, "unary_unary")(None, arrived_with("next")) == "next"


async def reflect(requests: AsyncIterator[object], context: object) -> AsyncIterator[object]:
    """A client-streaming behaviour, as reflection's: an answer to each request."""
    async for request in requests:
        yield request


async def sent(requests: asyncio.Queue[object]) -> AsyncIterator[object]:
    """A client's stream of the requests put on `requests`, ended by a None."""
    while (request := await requests.get()) is not None:
        yield request


async def test_an_open_client_streaming_call_holds_a_place_of_its_host_until_it_ends() -> None:
    arrival = RequestArrival(per_address=1)
    reflecting = served(arrival, "stream_stream", reflect)
    requests: asyncio.Queue[object] = asyncio.Queue()

    held = reflecting(sent(requests), FakeCall())
    await requests.put("first")
    assert await anext(held) == "first"  # open, and waiting for its next request

    with pytest.raises(Aborted) as caught:
        await anext(reflecting(sent(requests), FakeCall()))
    assert caught.value.args == (TOO_MANY_WAITING.code, TOO_MANY_WAITING.description)

    await requests.put(None)  # the held call ends: its place is free
    assert [message async for message in held] == []
    assert await served(arrival, "unary_unary")(None, arrived_with("next")) == "next"


async def test_at_the_stop_a_client_stream_answers_what_it_read_and_ends_while_it_waits() -> None:
    arrival = RequestArrival(per_address=1)
    requests: asyncio.Queue[object] = asyncio.Queue()
    answers = served(arrival, "stream_stream", reflect)(sent(requests), FakeCall())
    await requests.put("first")
    first = await anext(answers)
    waiting = asyncio.ensure_future(anext(answers))  # for a request that never comes
    await asyncio.sleep(0)  # one step: the stream now waits for its next request
    arrival.end_waits()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(10):  # a stream the stop did not end waits for good
            await waiting
    assert first == "first"
    assert await served(arrival, "unary_unary")(None, arrived_with("next")) is CLOSED


async def test_a_client_stream_opened_after_the_stop_is_refused_at_once() -> None:
    arrival = RequestArrival(per_address=1)
    requests: asyncio.Queue[object] = asyncio.Queue()
    await requests.put("sent, but after the stop")
    arrival.end_waits()
    answers = served(arrival, "stream_stream", reflect)(sent(requests), FakeCall())
    with pytest.raises(Aborted) as caught:
        await anext(answers)
    assert caught.value.args == (CLOSED.code, CLOSED.description)


@dataclass
class Details:
    """What gRPC tells an interceptor about a call."""

    method: str = "/s/M"
    invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


@pytest.mark.parametrize(
    ("kind", "served_as"),
    [
        ("unary_unary", "stream_unary"),
        ("unary_stream", "stream_stream"),
        ("stream_stream", "stream_stream"),  # client-streaming already, as reflection's
    ],
)
async def test_every_method_is_served_client_streaming(kind: str, served_as: str) -> None:
    handler = handler_of(kind)

    async def continuation(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any]:
        return handler

    wrapped = await RequestArrival(per_address=1).intercept_service(continuation, Details())

    assert wrapped is not None
    assert getattr(wrapped, served_as) is not None
    assert wrapped.request_deserializer is bytes
    assert wrapped is not handler


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:50123", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:50123", "ipv6:[::1]"),
        ("ipv6:[2001:db8::1]:443", "ipv6:[2001:db8::1]"),
        ("unix:/run/ticketing.sock", "unix"),
    ],
)
def test_a_client_address_is_its_host_without_the_port(peer: str, address: str) -> None:
    assert client_address(peer) == address
