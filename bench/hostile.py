"""Measure how the real server and shim hold up against hostile and careless clients.

    scripts/bench hostile [--sockets 140] [--callbacks 200]

Starts Postgres (embedded in a temporary directory, or `DATABASE_URL`), the payment service
fake, then `python -m ticketing_service serve` and the webhook shim as subprocesses with
their default limits, and measures:

1. request bombs: UpdateTicketingSettings with 1,000,000 empty tiers (over the 1 MiB limit),
   500,000 (just under it) and 100 blank tiers: the status a default client sees, the time to
   refuse and the server's resident memory before and after;
2. `--sockets` hostile connections held open on the shim (silent, half headers, headers
   without a body, a body dripped a byte at a time) while `--callbacks` signed callbacks are
   sent by 16 senders: their answers, callbacks per second, latency, and /healthz;
3. how long the shim takes to cut a silent connection (TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS,
   10 s by default).

Everything listens on 127.0.0.1 and every wait is bounded. Figures go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import grpc
import httpx
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from bench.callbacks import CALLBACK_PATH, callback_body, moim_hmac_headers
from bench.stack import (
    PAYMENT_TOKEN,
    Child,
    PaymentServiceThread,
    database,
    ticketing_server,
    webhook_shim,
)
from bench.webhook import HMAC_SECRET, open_holds
from ticketing_service.entrypoints import event_loop

UPDATE_SETTINGS = "/moim.ticketing.v1.TicketingService/UpdateTicketingSettings"
REQUEST_LINE = f"POST {CALLBACK_PATH} HTTP/1.1\r\nHost: shim\r\n".encode()
SENDERS = 16
CUT_BOUND_SECONDS = 60.0


def rss_mib(server: Child) -> float:
    return server.process.memory_info().rss / 2**20


async def refuse(channel: grpc.aio.Channel, tiers: int) -> str:
    """One bomb, encoded beforehand: what a default client sees and how long it took."""
    encoded = pb.UpdateTicketingSettingsRequest(
        event_id="bomb", tiers=[settings_pb2.TierInput() for _ in range(tiers)]
    ).SerializeToString()
    # Bytes in, bytes out: nothing to encode now.
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(UPDATE_SETTINGS)
    began = time.perf_counter()
    try:
        await call(encoded, timeout=120)
        answer = "OK (not refused!)"
    except grpc.aio.AioRpcError as error:
        answer = f"{error.code().name}: {(error.details() or '')[:70]}"
    took = time.perf_counter() - began
    return f"{tiers:>9} tiers ({len(encoded):>9} B): {took * 1000:8.1f} ms  {answer}"


async def bombs(server: Child) -> None:
    print(f"server RSS before: {rss_mib(server):.1f} MiB")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        for tiers in (1_000_000, 500_000, 100):
            print(await refuse(channel, tiers))
            print(f"  server RSS after: {rss_mib(server):.1f} MiB")


async def _drip(writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(100_000):
            writer.write(b"{")
            await writer.drain()
            await asyncio.sleep(0.5)
    except ConnectionError:
        return


async def _open_hostile(port: int, kind: int, stack: AsyncExitStack) -> asyncio.StreamReader:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    stack.callback(writer.close)
    if kind == 1:
        writer.write(REQUEST_LINE)
    elif kind == 2:
        writer.write(REQUEST_LINE + b"Content-Length: 100\r\n\r\n")
    elif kind == 3:
        writer.write(REQUEST_LINE + b"Content-Length: 60000\r\n\r\n")
        drip = asyncio.create_task(_drip(writer))
        stack.callback(drip.cancel)
    return reader


@asynccontextmanager
async def hostile(port: int, count: int) -> AsyncIterator[list[asyncio.StreamReader]]:
    """`count` connections: silent, half headers, no body, dripping body, in turn."""
    async with AsyncExitStack() as stack:
        yield [await _open_hostile(port, n % 4, stack) for n in range(count)]


async def callbacks_while_hostile(server: Child, shim: Child, args: argparse.Namespace) -> None:
    _, holds = await open_holds(server.port, args.callbacks, SENDERS, dict)
    answers: Counter[str] = Counter()
    latencies: list[float] = []
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{shim.port}", timeout=30) as http,
        hostile(shim.port, args.sockets) as sockets,
    ):
        pending = iter(holds)

        async def sender() -> None:
            for hold in pending:
                body = callback_body(hold, f"pay-{hold.reservation_id}")
                headers = moim_hmac_headers(HMAC_SECRET, body, f"delivery-{uuid.uuid4()}")
                began = time.perf_counter()
                response = await http.post(CALLBACK_PATH, content=body, headers=headers)
                latencies.append(time.perf_counter() - began)
                answers[str(response.status_code)] += 1

        began = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(SENDERS)))
        seconds = time.perf_counter() - began
        health = (await http.get("/healthz")).status_code
        still_open = sum(not r.at_eof() for r in sockets)
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{args.callbacks} callbacks with {args.sockets} hostile sockets open: answers"
        f" {dict(answers)}, {args.callbacks / seconds:.1f} callbacks/s, p50 {q[49] * 1000:.1f} ms,"
        f" p95 {q[94] * 1000:.1f} ms; /healthz {health}; hostile sockets still open"
        f" afterwards: {still_open}"
    )


async def time_to_cut(shim: Child) -> None:
    began = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", shim.port)
    try:
        async with asyncio.timeout(CUT_BOUND_SECONDS):
            while await reader.read(4096):
                pass
        print(f"a silent connection was cut after {time.perf_counter() - began:.2f} s")
    finally:
        writer.close()


async def measure(server: Child, shim: Child, args: argparse.Namespace) -> None:
    await bombs(server)
    await callbacks_while_hostile(server, shim, args)
    await time_to_cut(shim)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench hostile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sockets", type=int, default=140, help="hostile connections (140)")
    parser.add_argument("--callbacks", type=int, default=200, help="signed callbacks (200)")
    args = parser.parse_args(argv)
    with (
        database() as url,
        PaymentServiceThread() as payments,
        ticketing_server(url, payments.url, PAYMENT_TOKEN, 1, 10) as server,
        webhook_shim(f"127.0.0.1:{server.port}", HMAC_SECRET) as shim,
    ):
        event_loop.run(measure(server, shim, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
