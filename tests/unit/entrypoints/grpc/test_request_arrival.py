"""RequestArrival on a fake call: the request read by the service, waiting calls bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from ticketing_service.entrypoints.grpc.arrival import (
    NO_REQUEST,
    TOO_MANY_WAITING,
    RequestArrival,
    client_address,
)


class Aborted(Exception):
    """What a fake call's abort raises, as gRPC's does: its code and details."""


class FakeCall:
    """A call's context from `peer`, whose request arrives when `send` (or `end`) is called."""

    def __init__(self, peer: str = "ipv4:10.0.0.7:50123") -> None:
        self._peer = peer
        self._request: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.reads = 0

    def peer(self) -> str:
        return self._peer

    async def read(self) -> Any:
        self.reads += 1
        return await self._request

    def send(self, request: object) -> None:
        self._request.set_result(request)

    def end(self) -> None:
        self._request.set_result(grpc.aio.EOF)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


async def echo(request: object, context: object) -> object:
    return request


async def waiting(arrival: RequestArrival, call: FakeCall) -> asyncio.Task[Any]:
    """The call served, up to where it waits for its request."""
    task = asyncio.create_task(arrival.awaited("/s/M", echo)(None, call))
    for _ in range(100):  # a few turns of the loop
        if call.reads:
            return task
        await asyncio.sleep(0)
    raise AssertionError("the call never read its request")


async def test_the_request_that_arrives_is_what_the_behaviour_serves() -> None:
    call = FakeCall()
    served = await waiting(RequestArrival(per_address=1), call)
    call.send("the request")
    assert await served == "the request"


async def test_a_streaming_behaviour_serves_the_request_that_arrives() -> None:
    async def twice(request: str, context: object) -> AsyncIterator[str]:
        yield request
        yield request

    call = FakeCall()
    call.send("r")
    streamed = RequestArrival(per_address=1).iterated("/s/M", twice)(None, call)
    assert [message async for message in streamed] == ["r", "r"]


async def test_a_stream_that_ends_without_a_request_is_served_no_request() -> None:
    call = FakeCall()
    served = await waiting(RequestArrival(per_address=1), call)
    call.end()
    assert await served is NO_REQUEST


async def test_past_the_bound_a_host_s_call_is_refused_unread_and_other_hosts_wait_on() -> None:
    arrival = RequestArrival(per_address=2)
    held = [await waiting(arrival, FakeCall("ipv4:10.0.0.7:1000")) for _ in range(2)]

    another_connection = FakeCall("ipv4:10.0.0.7:2000")  # the same host
    assert await arrival.awaited("/s/M", echo)(None, another_connection) is TOO_MANY_WAITING
    assert another_connection.reads == 0

    other_host = FakeCall("ipv4:10.0.0.8:1000")
    served = await waiting(arrival, other_host)
    other_host.send("served")
    assert await served == "served"
    for task in held:
        task.cancel()


@pytest.mark.parametrize("ending", ["arrives", "cancelled"])
async def test_a_call_no_longer_waiting_gives_its_place_back(ending: str) -> None:
    arrival = RequestArrival(per_address=1)
    first = FakeCall()
    served = await waiting(arrival, first)
    if ending == "arrives":
        first.send("r")
        await served
    else:
        served.cancel()
        with pytest.raises(asyncio.CancelledError):
            await served

    second = FakeCall()
    again = await waiting(arrival, second)
    second.send("next")
    assert await again == "next"


@dataclass
class Details:
    """What gRPC tells an interceptor about a call."""

    method: str = "/s/M"
    invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


async def test_an_open_client_streaming_call_holds_a_place_of_its_host_until_it_ends() -> None:
    async def reflect(requests: AsyncIterator[object], context: object) -> AsyncIterator[object]:
        async for request in requests:
            yield request

    arrival = RequestArrival(per_address=1)
    streamed: Any = arrival.wrap("/s/Reflect", handler_of("stream_stream", reflect)).stream_stream
    requests: asyncio.Queue[object] = asyncio.Queue()

    async def sent() -> AsyncIterator[object]:
        while (request := await requests.get()) is not None:
            yield request

    held = streamed(sent(), FakeCall())
    await requests.put("first")
    assert await anext(held) == "first"  # open, and waiting for its next request

    with pytest.raises(Aborted) as caught:
        await anext(streamed(sent(), FakeCall()))
    assert caught.value.args == (TOO_MANY_WAITING.code, TOO_MANY_WAITING.description)

    await requests.put(None)  # the held call ends: its place is free
    assert [message async for message in held] == []
    assert await arrival.awaited("/s/M", echo)(None, arrived_with("next")) == "next"


def arrived_with(request: object) -> FakeCall:
    call = FakeCall()
    call.send(request)
    return call


def handler_of(kind: str, behaviour: Any = None) -> grpc.RpcMethodHandler[Any, Any]:
    async def unary(request: object, context: object) -> object:
        return request

    async def streamed(request: object, context: object) -> AsyncIterator[object]:
        yield request

    makers = {
        "unary_unary": (grpc.unary_unary_rpc_method_handler, unary),
        "unary_stream": (grpc.unary_stream_rpc_method_handler, streamed),
        "stream_stream": (grpc.stream_stream_rpc_method_handler, streamed),
    }
    make, default = makers[kind]
    return make(behaviour or default, bytes, bytes)


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

    served = await RequestArrival(per_address=1).intercept_service(continuation, Details())

    assert served is not None
    assert getattr(served, served_as) is not None
    assert served.request_deserializer is bytes
    assert served is not handler


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:50123", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:50123", "ipv6:[::1]"),
        ("ipv6:[2001:db8::1]:443", "ipv6:[2001:db8::1]"),
        ("unix:/run/ticketing.sock", "unix"),
    ],
)
async def test_a_client_address_is_its_host_without_the_port(peer: str, address: str) -> None:
    assert client_address(FakeCall(peer)) == address  # type: ignore[arg-type]
