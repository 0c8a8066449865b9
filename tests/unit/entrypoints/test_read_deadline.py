"""The shim's HTTP protocol past its cap on connections: which connection gives way to a new one.

A real uvicorn server in this process, with a cap of one or two connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from ticketing_service.entrypoints.listening import bind_socket
from ticketing_service.entrypoints.webhook.read_deadline import (
    WaitingConnections,
    with_read_deadline,
)
from ticketing_service.entrypoints.webhook.serve import ShimServer

WITHIN_SECONDS = 10.0  # the bound on every wait; nothing here takes near that long
SLOW = b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n"
QUICK = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


class SlowApp:
    """Answers `/slow` once released, anything else at once."""

    def __init__(self) -> None:
        self.serving = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            self.serving.set()
            await self.release.wait()
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serving(app: SlowApp, max_connections: int) -> AsyncIterator[int]:
    """The app on a free port, at most `max_connections` open, with a deadline past the test."""
    config = uvicorn.Config(
        app,
        http=with_read_deadline(60, max_connections),
        lifespan="off",
        log_config=None,
    )
    server = ShimServer(config)
    with bind_socket("127.0.0.1", 0) as sock:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(WITHIN_SECONDS):
                await server.listening.wait()
            yield server.port
        finally:
            app.release.set()
            server.should_exit = True
            await task


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(port: int, request: bytes = b"") -> Connection:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    return reader, writer


async def answer(connection: Connection) -> bytes:
    """What the server sends before it closes the connection or ends its answer (b"" if it
    closed it with nothing written)."""
    reader, _ = connection
    async with asyncio.timeout(WITHIN_SECONDS):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as closed:
            return closed.partial
        return head + await reader.readexactly(2)


async def test_a_new_connection_closes_the_longest_waiting_one_not_one_being_served() -> None:
    app = SlowApp()
    async with serving(app, max_connections=2) as port:
        served = await connect(port, SLOW)
        async with asyncio.timeout(WITHIN_SECONDS):
            await app.serving.wait()
        older = await connect(port)
        newer = await connect(port)  # three open: the longest-waiting one gives way

        assert await answer(older) == b""
        newer[1].write(QUICK)
        assert (await answer(newer)).startswith(b"HTTP/1.1 200 ")
        app.release.set()
        assert (await answer(served)).startswith(b"HTTP/1.1 200 ")


async def test_an_answered_connection_waits_again_and_gives_way_in_its_turn() -> None:
    app = SlowApp()
    async with serving(app, max_connections=2) as port:
        kept_alive = await connect(port, QUICK)
        assert (await answer(kept_alive)).startswith(b"HTTP/1.1 200 ")
        idle = await connect(port)  # arrived after the answer: it has waited less
        newest = await connect(port, QUICK)

        assert await answer(kept_alive) == b""
        assert (await answer(newest)).startswith(b"HTTP/1.1 200 ")
        idle[1].write(QUICK)
        assert (await answer(idle)).startswith(b"HTTP/1.1 200 ")


async def test_a_new_connection_gives_way_itself_when_every_other_is_being_served() -> None:
    app = SlowApp()
    async with serving(app, max_connections=1) as port:
        served = await connect(port, SLOW)
        async with asyncio.timeout(WITHIN_SECONDS):
            await app.serving.wait()
        newcomer = await connect(port, QUICK)

        assert await answer(newcomer) == b""
        app.release.set()
        assert (await answer(served)).startswith(b"HTTP/1.1 200 ")


class Timers:
    """An event loop's `call_later`, run by hand."""

    def __init__(self) -> None:
        self.due: list[Callable[[], Any]] = []

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        self.due.append(lambda: callback(*args))

    def run(self) -> None:
        due, self.due = self.due, []
        for callback in due:
            callback()


def test_evictions_are_logged_once_a_second_with_their_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    waiting = WaitingConnections(max_connections=128)
    timers = Timers()
    loop = cast(asyncio.AbstractEventLoop, timers)
    with caplog.at_level(logging.WARNING):
        for _ in range(500):
            waiting.count_eviction(loop, 8080)
        timers.run()
        waiting.count_eviction(loop, 8080)
        timers.run()
        timers.run()  # nothing more was evicted: no line

    assert [r.getMessage() for r in caplog.records] == [
        f"closed {n} connection(s) on port 8080 that had sent no complete request, oldest first,"
        " to keep 128 open at most"
        for n in (500, 1)
    ]
