"""Measure StartPaidRegistration and ConfirmPayment throughput against the real server.

    uv run python scripts/load.py [--concurrency 32] [--calls 3000]

Starts an embedded Postgres in a temporary directory (or uses `DATABASE_URL`), the payment
service fake on its own thread and event loop, and `python -m ticketing_service serve` as a
subprocess (which migrates), so the load generator shares no event loop with the server. It then
offers one paid tier with a large capacity, opens `--calls` holds from distinct users with
`--concurrency` workers, confirms every one of them, and prints each phase's calls/s, p50/p95/p99
latency and the server process's CPU per call (on a small machine that CPU is the ceiling).
Everything listens on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psutil  # installed with pgserver
import uvicorn
from bench_stack import child_process
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from ticketing_service.entrypoints import event_loop
from ticketing_service.entrypoints.dev.payment_service import (
    ReadyServer,
    create_payment_service_app,
    loopback_socket,
)

Request = TypeVar("Request")
Response = TypeVar("Response")

TOKEN = "load-test-token"  # noqa: S105 - the loopback fake's, nothing real
PRICE = 10000
CALL_SECONDS = 30.0
SERVING = re.compile(r"serving \S+ on [\d.]+:(\d+)")


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def report(self) -> str:
        calls = len(self.latencies)
        q = statistics.quantiles(self.latencies, n=100) if calls > 1 else [0.0] * 99
        ms = [q[i] * 1000 for i in (49, 94, 98)]
        errors = sum(self.errors.values())
        rate = calls / self.seconds
        cpu_ms = self.server_cpu_seconds * 1000 / max(calls, 1)
        return (
            f"{self.name:<22} {calls:>6} {errors:>6} {self.seconds:>8.2f} {rate:>9.1f}"
            f" {ms[0]:>8.1f} {ms[1]:>8.1f} {ms[2]:>8.1f} {cpu_ms:>8.2f}"
        )


HEADER = (
    f"{'phase':<22} {'calls':>6} {'errors':>6} {'seconds':>8} {'calls/s':>9}"
    f" {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'srv cpu':>8}"
)
FOOTNOTE = "srv cpu: the server process's CPU ms per call (user + system), excluding Postgres."


async def run_phase(
    phase: Phase,
    requests: Sequence[Request],
    call: Callable[[Request], Awaitable[Response]],
    concurrency: int,
    limit_seconds: float,
    server_cpu: Callable[[], float],
) -> list[Response | None]:
    """Send every request with `concurrency` workers; the answers in request order."""
    answers: list[Response | None] = [None] * len(requests)
    next_index = iter(range(len(requests)))

    async def worker() -> None:
        for i in next_index:
            began = time.perf_counter()
            try:
                answers[i] = await call(requests[i])
            except grpc.aio.AioRpcError as error:
                phase.errors[error.code().name] += 1
            phase.latencies.append(time.perf_counter() - began)

    began, cpu_began = time.perf_counter(), server_cpu()
    async with asyncio.timeout(limit_seconds):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - began
    phase.server_cpu_seconds = server_cpu() - cpu_began
    return answers


async def load(served: Served, args: argparse.Namespace) -> list[Phase]:
    event_id = f"load-{uuid.uuid4()}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.port}") as channel:
        stub = pb_grpc.TicketingServiceStub(channel)
        tier = settings_pb2.TierInput(tier_id="rush", name="Rush", price_amount=PRICE)
        tier.capacity = args.capacity
        await stub.UpdateTicketingSettings(
            pb.UpdateTicketingSettingsRequest(event_id=event_id, tiers=[tier]), timeout=CALL_SECONDS
        )
        starts = [
            pb.StartPaidRegistrationRequest(event_id=event_id, tier_id="rush", user_id=f"u-{i}")
            for i in range(args.calls)
        ]
        start_phase = Phase("StartPaidRegistration")
        held = await run_phase(
            start_phase,
            starts,
            lambda r: stub.StartPaidRegistration(r, timeout=CALL_SECONDS),
            args.concurrency,
            args.phase_seconds,
            served.cpu_seconds,
        )
        confirms = [
            pb.ConfirmPaymentRequest(
                reservation_id=h.reservation.reservation_id,
                checkout_id=h.reservation.checkout_id,
                payment_id=f"pay-{h.reservation.reservation_id}",
                provider="portone",
                amount=PRICE,
                currency_code="KRW",
            )
            for h in held
            if h is not None
        ]
        confirm_phase = Phase("ConfirmPayment")
        confirmed = await run_phase(
            confirm_phase,
            confirms,
            lambda r: stub.ConfirmPayment(r, timeout=CALL_SECONDS),
            args.concurrency,
            args.phase_seconds,
            served.cpu_seconds,
        )
    outcomes = Counter(pb.ConfirmPaymentOutcome.Name(c.outcome) for c in confirmed if c)
    print(f"confirm outcomes: {dict(outcomes)}")
    return [start_phase, confirm_phase]


@dataclass(frozen=True)
class Served:
    """The running server: its port and its process."""

    port: int
    process: psutil.Process

    def cpu_seconds(self) -> float:
        times = self.process.cpu_times()
        return float(times.user + times.system)


class StandIn:
    """The payment service fake on a thread with its own event loop."""

    def __init__(self) -> None:
        self.url = ""
        self._ready = threading.Event()
        self._server: ReadyServer | None = None
        self._thread = threading.Thread(target=lambda: event_loop.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        sock = loopback_socket()
        app = create_payment_service_app(token=TOKEN)
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self._server = server = ReadyServer(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        async with asyncio.timeout(30):
            await server.ready.wait()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._ready.set()
        await serving
        sock.close()

    def __enter__(self) -> StandIn:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("The payment service fake did not start within 30 seconds.")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True  # uvicorn polls this flag from its own loop
        self._thread.join(30)


@contextmanager
def database() -> Iterator[str]:
    """`DATABASE_URL`, or an embedded Postgres in a temporary directory deleted afterwards."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with warnings.catch_warnings():  # pgserver warns about a runtime dir it never uses
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="ticketing-load-") as scratch:
        server: Any = get_server(Path(scratch) / "pgdata", cleanup_mode="delete")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


@contextmanager
def ticketing_server(database_url: str, payment_url: str, pool_size: int) -> Iterator[Served]:
    """`python -m ticketing_service serve` on a free loopback port."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TICKET_PAYMENT_SERVICE_URL": payment_url,
        "TICKET_PAYMENT_SERVICE_TOKEN": TOKEN,
        "TICKETING_GRPC_LISTEN": "127.0.0.1:0",
        "TICKETING_DB_POOL_SIZE": str(pool_size),
    }
    env.pop("TICKETING_GRPC_TOKEN", None)
    argv = [sys.executable, "-m", "ticketing_service", "serve"]
    with child_process(argv, env, SERVING, "server") as child:
        yield Served(child.port, child.process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent callers (32)")
    parser.add_argument("--calls", type=int, default=3000, help="calls per phase (3000)")
    parser.add_argument("--capacity", type=int, default=100_000, help="seats in the tier")
    parser.add_argument("--pool-size", type=int, default=10, help="server's DB pool size (10)")
    parser.add_argument("--phase-seconds", type=float, default=300, help="bound per phase")
    args = parser.parse_args()
    with (
        database() as url,
        StandIn() as stand_in,
        ticketing_server(url, stand_in.url, args.pool_size) as served,
    ):
        phases = asyncio.run(load(served, args))
    print(f"concurrency {args.concurrency}, {os.cpu_count()} CPUs, server pool {args.pool_size}")
    print(HEADER)
    for phase in phases:
        print(phase.report())
        if phase.errors:
            print(f"  errors: {dict(phase.errors)}")
    print(FOOTNOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
