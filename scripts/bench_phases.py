"""Timed phases of calls at a fixed concurrency, and the clients that make them.

A phase sends a list of calls with N concurrent callers and keeps each call's latency and
answer. Callers spread over several gRPC channels (one HTTP/2 connection each), as many clients
of a real deployment would, so `serve --workers N` behind SO_REUSEPORT receives connections on
every worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import psutil
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from ticketing_service.entrypoints.webhook.signatures import sign_moim_hmac

T = TypeVar("T")
# CPU seconds used so far, per group of processes (server, shim, postgres, driver).
CpuSampler = Callable[[], dict[str, float]]
CALL_SECONDS = 30.0
CALLBACK_PATH = "/api/ticket-payment-callbacks"


def quantiles_ms(latencies: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 in milliseconds (latencies in seconds)."""
    if len(latencies) < 2:
        only = latencies[0] * 1000 if latencies else 0.0
        return only, only, only
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return q[49] * 1000, q[94] * 1000, q[98] * 1000


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call, or its bare status code."""
    return reason_of_status(error.code().value[0], rpc_status.from_call(error))


def reason_of_status(code: int, status: status_pb2.Status | None) -> str:
    """The ErrorInfo reason among a failure's details, or the name of its status code."""
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status is not None else ():
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
            return str(info.reason)
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), f"code {code}")


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    seconds: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def calls(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def cpu_ms_per_call(self, group: str) -> float:
        return self.cpu_seconds.get(group, 0.0) * 1000 / max(self.calls, 1)

    def cpu_busy(self) -> float:
        """The share of the machine's CPUs the measured processes kept busy."""
        used = sum(seconds for name, seconds in self.cpu_seconds.items() if "/" not in name)
        return used / (self.seconds * (os.cpu_count() or 1))

    def split(self, prefix: str) -> list[float]:
        """The shares of the groups named `prefix…` (parts of one group) in their sum."""
        parts = [seconds for name, seconds in self.cpu_seconds.items() if name.startswith(prefix)]
        total = sum(parts)
        return [part / total for part in parts] if total else []


async def run_phase(
    phase: Phase,
    count: int,
    call: Callable[[int], Awaitable[T]],
    concurrency: int,
    limit_seconds: float,
    cpu: CpuSampler,
) -> list[T | None]:
    """Make calls 0..count-1 with `concurrency` callers; the answers in call order.

    A failed call is counted under its error (the gRPC reason when there is one), never hidden.
    """
    answers: list[T | None] = [None] * count
    indexes = iter(range(count))

    async def caller() -> None:
        for i in indexes:
            began = time.perf_counter()
            try:
                answers[i] = await call(i)
            except grpc.aio.AioRpcError as error:
                phase.errors[reason_of(error)] += 1
            except (OSError, asyncio.IncompleteReadError, CallbackRefused) as error:
                phase.errors[str(error)[:80]] += 1
            phase.latencies.append(time.perf_counter() - began)

    began, cpu_began = time.perf_counter(), cpu()
    async with asyncio.timeout(limit_seconds):
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - began
    phase.cpu_seconds = {name: used - cpu_began[name] for name, used in cpu().items()}
    return answers


class Stubs:
    """TicketingService stubs over several channels, handed out round-robin."""

    def __init__(self, stubs: Sequence[pb_grpc.TicketingServiceStub]) -> None:
        self._cycle: Iterator[Any] = itertools.cycle(stubs)

    def next(self) -> Any:
        """The stub for the next call (typed Any: the async stub types are stubs-only)."""
        return next(self._cycle)


@asynccontextmanager
async def grpc_stubs(
    port: int, channels: int, workers: Sequence[psutil.Process] = ()
) -> AsyncIterator[Stubs]:
    """`channels` channels to the server, each on a connection of its own.

    With the processes of `serve --workers N` as `workers`, the connections are spread evenly
    over them (see `_balanced`).
    """
    opened: list[grpc.aio.Channel] = []
    try:
        if len(workers) > 1:
            await _balanced(opened, port, channels, workers)
        else:
            opened += [_channel(port) for _ in range(channels)]
        yield Stubs([pb_grpc.TicketingServiceStub(c) for c in opened])
    finally:
        await asyncio.gather(*(c.close() for c in opened))


def _channel(port: int) -> grpc.aio.Channel:
    # A local subchannel pool per channel: otherwise channels to one target share a connection.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def _balanced(
    opened: list[grpc.aio.Channel], port: int, count: int, workers: Sequence[psutil.Process]
) -> None:
    """Open `count` connected channels into `opened`, as evenly over `workers` as they go.

    SO_REUSEPORT gives each new connection to a worker by a hash of its addresses, so 32
    connections over 2 workers split 19:13 or worse in nearly four runs out of ten (splits as
    far as 19:81 of the server's CPU were seen), and the busier worker can set the pace of a
    run. Each new connection is looked up among the workers' sockets (by this process's port
    of it) and closed again if its worker already has its share.
    """
    shares = EvenShares(count, len(workers))
    for _ in range(count * 20):
        if shares.full:
            return
        before = _ports_to(port)
        channel = _channel(port)
        await asyncio.wait_for(channel.channel_ready(), CALL_SECONDS)
        ours = _ports_to(port) - before
        if shares.keep(owner_of(ours, (peer_ports(worker, port) for worker in workers))):
            opened.append(channel)
        else:
            await channel.close()
    raise RuntimeError(f"Could not spread {count} connections over {len(workers)} workers.")


class EvenShares:
    """Which connections to keep: `count` in all, at most an even share per worker."""

    def __init__(self, count: int, workers: int) -> None:
        self._count = count
        self._share = -(-count // workers)  # rounded up
        self.placed = [0] * workers

    @property
    def full(self) -> bool:
        return sum(self.placed) == self._count

    def keep(self, owner: int | None) -> bool:
        """Whether to keep a connection that worker `owner` accepted (None: not found)."""
        if owner is None or self.full or self.placed[owner] >= self._share:
            return False
        self.placed[owner] += 1
        return True


def owner_of(local_ports: set[int], peers: Iterable[set[int]]) -> int | None:
    """The worker (by index) whose peer ports include one of `local_ports`, if any."""
    return next((n for n, ports in enumerate(peers) if local_ports & ports), None)


def _ports_to(port: int) -> set[int]:
    """This process's local ports of its TCP connections to `port`."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port
    }


def peer_ports(worker: psutil.Process, port: int) -> set[int]:
    """The remote ports of the connections `worker` accepted on `port`."""
    return {c.raddr.port for c in worker.net_connections("tcp") if c.raddr and c.laddr.port == port}


class CallbackRefused(Exception):
    """The shim answered a signed callback with something other than 200."""


def callback_body(reservation: reservation_pb2.Reservation, payment_id: str) -> bytes:
    """The payment service's `ticket_payment.paid` callback for a reservation."""
    return json.dumps(
        {
            "type": "ticket_payment.paid",
            "reservationId": reservation.reservation_id,
            "checkoutId": reservation.checkout_id,
            "paymentId": payment_id,
            "txId": f"tx-{payment_id}",
            "provider": "portone",
            "amount": reservation.amount,
            "currency": reservation.currency_code,
            "paidAt": datetime.now(UTC).isoformat(),
        }
    ).encode()


def moim_hmac_headers(secret: str, body: bytes, delivery_id: str) -> dict[str, str]:
    """moim-payment's signature: lowercase hex HMAC-SHA256 of the raw body."""
    signature = sign_moim_hmac(secret, body)
    return {
        "Content-Type": "application/json",
        "X-Ticket-Payment-Signature": signature,
        "X-Ticket-Payment-Event-Id": delivery_id,
    }


class ShimConnections:
    """Keep-alive HTTP/1.1 connections to the shim, one per concurrent caller.

    A minimal client on asyncio streams: a general-purpose one (httpx) spent about 6 ms of CPU
    per callback here, more than the shim and the server together, so the load generator and
    not the service set the pace.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one request; the status and the body of the answer."""
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n"
            f"Content-Length: {len(body)}\r\n{lines}\r\n"
        ).encode() + body
        reader, writer = self._idle.pop() if self._idle else await self._connect()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length = _status_and_length(head)
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer))
        return status, answer

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self._port)

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


def _status_and_length(head: bytes) -> tuple[int, int]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, length


async def post_callback(
    shim: ShimConnections, secret: str, reservation: reservation_pb2.Reservation, n: int
) -> str:
    """Send one signed callback; the outcome the shim answered."""
    payment_id = f"pay-{reservation.reservation_id}"
    body = callback_body(reservation, payment_id)
    headers = moim_hmac_headers(secret, body, f"delivery-{reservation.reservation_id}-{n}")
    status, answer = await shim.post(CALLBACK_PATH, body, headers)
    if status != 200:
        raise CallbackRefused(f"HTTP {status} {answer[:60]!r}")
    return str(json.loads(answer)["outcome"])
