"""The reflection service's streams at a stop, on requests sent from a queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from grpc_reflection.v1alpha import reflection_pb2

from ticketing_service.entrypoints.grpc.public_services import ReflectionServicer

LIST = reflection_pb2.ServerReflectionRequest(list_services="")


async def sent(
    queue: asyncio.Queue[reflection_pb2.ServerReflectionRequest | None],
) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    """The requests put on `queue`, until a None."""
    while (request := await queue.get()) is not None:
        yield request


async def test_a_stream_answers_what_it_read_and_ends_at_the_stop_while_it_waits() -> None:
    servicer = ReflectionServicer(("moim.Example",))
    queue: asyncio.Queue[reflection_pb2.ServerReflectionRequest | None] = asyncio.Queue()
    answers = servicer.ServerReflectionInfo(sent(queue), None)
    queue.put_nowait(LIST)
    first = await anext(answers)
    waiting = asyncio.ensure_future(anext(answers))  # for a request that never comes
    await asyncio.sleep(0)  # one step: the stream now waits for its next request
    servicer.end_streams()
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert [s.name for s in first.list_services_response.service] == ["moim.Example"]


async def test_a_stream_ends_with_its_requests_and_one_opened_after_the_stop_at_once() -> None:
    servicer = ReflectionServicer(("moim.Example",))
    queue: asyncio.Queue[reflection_pb2.ServerReflectionRequest | None] = asyncio.Queue()
    for item in (LIST, LIST, None):
        queue.put_nowait(item)
    answered = [answer async for answer in servicer.ServerReflectionInfo(sent(queue), None)]
    servicer.end_streams()
    queue.put_nowait(LIST)  # sent, but the stream began after the stop
    after = [answer async for answer in servicer.ServerReflectionInfo(sent(queue), None)]
    assert len(answered) == 2
    assert after == []
