"""The real shim on a real port against clients that connect and then stall, drip or flood.

Every hostile connection must be cut once the read deadline passes, and while such connections
are open, real callbacks and /healthz must still be answered.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import resource
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.integration.callbacks import (
    HMAC_SECRET,
    count_rows,
    encode,
    hmac_signed,
    hold_for_payment,
    paid_event,
    post,
    running_shim,
    shim_config,
)
from tests.integration.flows import configure_event, hold, paid_tier
from tests.integration.test_webhook_shim import _listening_port, shim_environment, started_shim
from ticketing_service.entrypoints.grpc.server import RunningServer
from ticketing_service.entrypoints.listening import bind_socket
from ticketing_service.entrypoints.observability.sampling import CALLER_NOISE_FLAG
from ticketing_service.entrypoints.webhook.app import CALLBACK_PATH
from ticketing_service.entrypoints.webhook.serve import ShimServer

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

HOSTILE_SOCKETS = 140  # more than the 128 that locked every callback out
CALLBACKS = 20
CUT_WITHIN_SECONDS = 20.0  # the bound on waiting for a cut; the deadlines below are far shorter
REQUEST_LINE = f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: shim\r\n".encode()


@dataclass
class Hostile:
    """An open connection to the shim and the task (if any) that keeps it dripping."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    drip: asyncio.Task[None] | None = None

    async def cut_by_server(self) -> bool:
        """Whether the server closes this connection within CUT_WITHIN_SECONDS."""
        try:
            async with asyncio.timeout(CUT_WITHIN_SECONDS):
                while await self.reader.read(4096):
                    pass  # an answer (e.g. a 413) may come first; the close is what counts
        except TimeoutError:
            return False
        except ConnectionError:
            pass  # a reset is a cut too
        return True

    async def still_open(self) -> bool:
        """Whether the server has neither closed this connection nor written to it."""
        try:
            async with asyncio.timeout(0.05):
                await self.reader.read(1)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        if self.drip is not None:
            self.drip.cancel()
            await asyncio.gather(self.drip, return_exceptions=True)
        self.writer.close()


async def _drip(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send `data` a byte every 50 ms, the way a slowloris client keeps a connection busy."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        return  # the server cut the connection: what the test waits for


async def _silent(writer: asyncio.StreamWriter) -> asyncio.Task[None] | None:
    return None


async def _half_headers(writer: asyncio.StreamWriter) -> asyncio.Task[None] | None:
    writer.write(REQUEST_LINE + b"Content-Type: application/json\r\n")  # no blank line: unfinished
    return None


async def _headers_without_body(writer: asyncio.StreamWriter) -> asyncio.Task[None] | None:
    writer.write(REQUEST_LINE + b"Content-Length: 100\r\n\r\n")
    return None


async def _dripped_headers(writer: asyncio.StreamWriter) -> asyncio.Task[None] | None:
    return asyncio.create_task(_drip(writer, REQUEST_LINE + b"X-Padding: " + b"a" * 4000))


async def _dripped_body(writer: asyncio.StreamWriter) -> asyncio.Task[None] | None:
    writer.write(REQUEST_LINE + b"Content-Length: 4000\r\n\r\n")
    return asyncio.create_task(_drip(writer, b"{" * 4000))


async def _dripped_chunks(writer: asyncio.StreamWriter) -> asyncio.Task[None] | None:
    writer.write(REQUEST_LINE + b"Transfer-Encoding: chunked\r\n\r\n")
    return asyncio.create_task(_drip(writer, b"1\r\n{\r\n" * 1000))


Opening = Callable[[asyncio.StreamWriter], Awaitable[asyncio.Task[None] | None]]
KINDS: dict[str, Opening] = {
    "sends nothing": _silent,
    "half its headers": _half_headers,
    "headers, never the body": _headers_without_body,
    "headers a byte at a time": _dripped_headers,
    "a body a byte at a time": _dripped_body,
    "chunks a byte at a time": _dripped_chunks,
}


@asynccontextmanager
async def hostile_connections(
    port: int, count: int, *kinds: Opening
) -> AsyncIterator[list[Hostile]]:
    """`count` connections of `kinds` (all, by default) in turn, closed when the block ends."""
    opened: list[Hostile] = []
    kinds = kinds or tuple(KINDS.values())
    async with AsyncExitStack() as cleanup:
        for index in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            hostile = Hostile(reader, writer, await kinds[index % len(kinds)](writer))
            cleanup.push_async_callback(hostile.close)
            opened.append(hostile)
        yield opened


def port_of(client: httpx.AsyncClient) -> int:
    port = client.base_url.port
    assert port is not None
    return port


@pytest.fixture
async def patient_shim(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """A shim whose read deadline outlasts the test: hostile sockets stay open throughout."""
    config = replace(shim_config(f"127.0.0.1:{server.port}"), read_timeout_seconds=120)
    async with running_shim(config) as client:
        yield client


@pytest.fixture
async def strict_shim(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """A shim with a two-second read deadline."""
    config = replace(shim_config(f"127.0.0.1:{server.port}"), read_timeout_seconds=2)
    async with running_shim(config) as client:
        yield client


async def test_callbacks_and_healthz_are_answered_while_140_hostile_sockets_are_open(
    patient_shim: httpx.AsyncClient, stub: Stub, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=CALLBACKS))
    holds = [await hold(stub, f"buyer-{n}") for n in range(CALLBACKS)]
    async with hostile_connections(port_of(patient_shim), HOSTILE_SOCKETS) as hostile:
        answers = await asyncio.gather(
            *(
                post(patient_shim, hmac_signed(encode(paid_event(r)), f"delivery-{n}"))
                for n, r in enumerate(holds)
            )
        )
        health = await patient_shim.get("/healthz")
        open_throughout = await asyncio.gather(*(h.still_open() for h in hostile))

    assert all(open_throughout)  # the callbacks were answered while every one was open
    assert [a.status_code for a in answers] == [200] * CALLBACKS
    assert {a.json()["outcome"] for a in answers} == {"CONFIRMED"}
    assert health.status_code == 200
    assert count_rows(database_url, "registrations") == CALLBACKS


async def test_the_control_uvicorns_own_concurrency_limit_is_taken_by_idle_sockets() -> None:
    """What the shim ran before: `limit_concurrency` counts idle connections, so they win."""

    async def ok(request: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/healthz", ok)])
    config = uvicorn.Config(app, http="h11", lifespan="off", log_config=None, limit_concurrency=128)
    server = ShimServer(config)
    with bind_socket("127.0.0.1", 0) as sock:
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with asyncio.timeout(10):
                await server.listening.wait()
            url = f"http://127.0.0.1:{server.port}"
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                before = (await client.get("/healthz")).status_code
                async with hostile_connections(server.port, HOSTILE_SOCKETS):
                    during = (await client.get("/healthz")).status_code
        finally:
            server.should_exit = True
            await serving
    assert (before, during) == (200, 503)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_connection_that_does_not_deliver_its_request_in_time_is_cut(
    strict_shim: httpx.AsyncClient, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ticketing_service.entrypoints.webhook.read_deadline")
    async with hostile_connections(port_of(strict_shim), 1, KINDS[kind]) as [hostile]:
        # Left alone, a dripping client would keep sending for over three minutes.
        assert await hostile.cut_by_server()
    [cut] = [r for r in caplog.records if r.msg.startswith("closed a connection")]
    assert vars(cut)[CALLER_NOISE_FLAG]  # any client can open these: sampled


async def test_the_deadline_runs_per_request_not_per_connection(
    strict_shim: httpx.AsyncClient,
) -> None:
    """A kept-alive connection gets a fresh deadline after each answer, then is cut idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(strict_shim))
    try:
        statuses = []
        for _ in range(3):  # the third starts past one deadline (2 s) after connecting
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: shim\r\n\r\n")
            statuses.append(await _status_and_body(reader))
            await asyncio.sleep(1.2)
        assert await Hostile(reader, writer).cut_by_server()
    finally:
        writer.close()
    assert statuses == [200, 200, 200]


async def _status_and_body(reader: asyncio.StreamReader) -> int:
    async with asyncio.timeout(CUT_WITHIN_SECONDS):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def test_a_chunked_body_over_64_kib_without_content_length_answers_413(
    patient_shim: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(64):  # 256 KiB, 4 KiB at a time, with no Content-Length
            yield b"x" * 4096

    response = await patient_shim.post(CALLBACK_PATH, content=chunks())

    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")


async def test_a_request_framed_both_ways_is_refused_and_nothing_after_it_is_read(
    strict_shim: httpx.AsyncClient,
) -> None:
    """Content-Length and Transfer-Encoding together (RFC 9112 §6.3): a proxy in front reading
    the other header would see a different request after it, so the shim answers 400 and closes."""
    # A proxy framing by Content-Length sees one request; one framing by chunks, two.
    body = b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: shim\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(strict_shim))
    try:
        writer.write(
            REQUEST_LINE
            + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + body
        )
        async with asyncio.timeout(CUT_WITHIN_SECONDS):
            answered = await reader.read()  # everything until the server closes
    finally:
        writer.close()

    assert answered.count(b"HTTP/1.1 ") == 1  # the smuggled GET got no answer
    assert answered.startswith(b"HTTP/1.1 400 ")
    assert b'"error":"ambiguous_body_length"' in answered


def test_the_command_cuts_an_idle_connection_after_its_read_timeout() -> None:
    process = started_shim(
        9,
        {"TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS": "0.5"},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = _listening_port(process)

        async def idle_connection_is_cut() -> bool:
            async with hostile_connections(port, 1) as [hostile]:
                return await hostile.cut_by_server()

        assert asyncio.run(idle_connection_is_cut())
    finally:
        process.terminate()
        process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()


def webhook_under_a_file_limit(ulimit: str, **settings: str) -> subprocess.Popen[str]:
    """The `webhook` command, its open-file limit lowered by `ulimit {ulimit}` before it starts."""
    command = [sys.executable, "-m", "ticketing_service", "webhook", "--listen", "127.0.0.1:0"]
    return subprocess.Popen(  # noqa: S603 - our own interpreter and a constant program
        # bash from PATH: its ulimit lowers the limit before our command starts
        ["bash", "-c", f'ulimit {ulimit} && exec "$@"', "bash", *command],  # noqa: S607
        env=shim_environment(TICKET_PAYMENT_CALLBACK_SECRET=HMAC_SECRET, **settings),
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_command_answers_past_a_low_soft_limit_of_open_files() -> None:
    # Started under `ulimit -Sn 256` (as under systemd's soft 1,024 with its hard 524,288), 400
    # idle sockets took every file the shim had: it accepted no request until they were cut.
    process = webhook_under_a_file_limit("-Sn 256", TICKETING_GRPC_TARGET="127.0.0.1:9")
    try:
        port = _listening_port(process)
        soft, hard = resource.prlimit(process.pid, resource.RLIMIT_NOFILE)

        async def answer_past_idle_sockets() -> int:
            async with (
                hostile_connections(port, 400, KINDS["sends nothing"]),
                httpx.AsyncClient(timeout=CUT_WITHIN_SECONDS) as http,
            ):
                return (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code

        status = asyncio.run(answer_past_idle_sockets())
    finally:
        process.terminate()
        process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()
    assert hard > 512, "this machine's hard limit is too low to show the flood"
    assert soft == hard
    assert status == 503  # answered: its gRPC server, at a refused port, is not serving


FILE_LIMIT = 256
IDLE_SOCKETS = 400  # enough to take every file the process may open, and more


class LoggedLines:
    """The lines a process logs, read on a thread of their own so that its pipe never fills."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._seen: list[str] = []
        self._stream = process.stderr
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:  # ends when the process exits
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The next line that matches `pattern`; fails if the process exits or stays silent."""
        while (line := self._lines.get(timeout=CUT_WITHIN_SECONDS)) is not None:
            self._seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError("the shim exited:\n" + "".join(self._seen))

    def close(self) -> None:
        """Once the process has exited: the rest of its lines read, the pipe closed."""
        self._reader.join(timeout=CUT_WITHIN_SECONDS)
        self._stream.close()


@contextmanager
def shim_under_a_hard_file_limit(backend_port: int) -> Iterator[tuple[dict[str, int], LoggedLines]]:
    """The `webhook` command with a metrics port, started under `ulimit -n 256`, soft and hard,
    so that it cannot raise it; its read deadline outlasts the test. Yields its ports."""
    process = webhook_under_a_file_limit(
        f"-Sn {FILE_LIMIT} -Hn {FILE_LIMIT}",
        TICKETING_GRPC_TARGET=f"127.0.0.1:{backend_port}",
        TICKETING_METRICS_LISTEN="127.0.0.1:0",
        TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS="120",
    )
    lines = LoggedLines(process)
    try:
        metrics = int(lines.wait_for(r"metrics on 127\.0\.0\.1:(\d+)").group(1))
        webhook = int(lines.wait_for(r"webhook shim listening on 127\.0\.0\.1:(\d+)").group(1))
        assert resource.prlimit(process.pid, resource.RLIMIT_NOFILE) == (FILE_LIMIT, FILE_LIMIT)
        yield {"webhook": webhook, "metrics": metrics}, lines
    finally:
        process.terminate()
        process.wait(timeout=30)
        lines.close()


@pytest.mark.parametrize("flooded", ["webhook", "metrics"])
async def test_idle_sockets_past_a_hard_file_limit_give_way_to_a_callback_and_a_scrape(
    server: RunningServer, stub: Stub, database_url: str, flooded: str
) -> None:
    # Uncapped, idle sockets on either port took every file of the process, and neither port
    # answered anything (a connection was closed unanswered) until the read deadline cut them.
    reservation = await hold_for_payment(stub)
    with shim_under_a_hard_file_limit(server.port) as (ports, lines):
        url = f"http://127.0.0.1:{ports['webhook']}"
        idle_sockets = hostile_connections(ports[flooded], IDLE_SOCKETS, KINDS["sends nothing"])
        async with (
            idle_sockets as idle,
            httpx.AsyncClient(base_url=url, timeout=CUT_WITHIN_SECONDS) as shim,
        ):
            callback = await post(shim, hmac_signed(encode(paid_event(reservation))))
            scrape = await shim.get(f"http://127.0.0.1:{ports['metrics']}/metrics")
            oldest_open, newest_open = [await idle[i].still_open() for i in (0, -1)]
        evictions = await asyncio.to_thread(lines.wait_for, r"closed (\d+) connection")

    assert (callback.status_code, callback.json()["outcome"]) == (200, "CONFIRMED")
    assert count_rows(database_url, "registrations") == 1
    assert scrape.status_code == 200
    assert (oldest_open, newest_open) == (False, True)  # the longest-waiting ones gave way
    assert int(evictions.group(1)) > 0
