"""The floor under every call of `scripts/bench`: what gRPC and the callers alone cost.

    scripts/bench floor [--calls 6000] [--rounds 3] [--workers 2] [--answer-after-ms 0]
                       [--callers auto]

Serves TicketingService.ConfirmPayment the way `serve --workers` does (worker processes on one
port with SO_REUSEPORT, each on uvloop), but its handler answers a fixed, full-size response at
once: no database, validation, logging or metrics. The callers are the benchmark's own
(`bench/callers.py`: `--concurrency` callers, one connection each, in Go where it builds, else in
Python on uvloop).

With `--answer-after-ms`, the handler waits that long before answering, so the calls overlap
as they do at the service's own latency; gRPC's CPU per call is then higher than with instant
answers (docs/benchmarks.md).

The CPU per call it prints belongs to grpc.aio and to the load generator. No change to the
service's code removes it, so it bounds the ratio `scripts/bench` can reach; docs/benchmarks.md
("What is left") sets it against the rest of a ConfirmPayment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from bench.callers import open_callers
from bench.channels import grpc_stubs
from bench.phases import Phase, quantiles_ms
from bench.stack import (
    SERVER_LINE,
    Child,
    CpuMeter,
    child_process,
    clean_environment,
    cpu_speed_ms,
    driver_cpu_seconds,
)
from ticketing_service.entrypoints import event_loop
from ticketing_service.entrypoints.grpc.workers import serve_in_workers

PHASE_SECONDS = 120.0
WARM_UP_CALLS = 500


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench floor", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add("--calls", type=int, default=6000, help="calls per round (6000)")
    add("--rounds", type=int, default=3, help="rounds; the CPU per call is their median (3)")
    add("--workers", type=int, default=2, help="server processes (2, as scripts/bench)")
    add("--concurrency", type=int, default=32, help="concurrent callers, one connection each (32)")
    add("--answer-after-ms", type=float, default=0.0, help="the handler's wait per call (0)")
    add(
        "--callers",
        choices=("auto", "go", "python"),
        default="auto",
        help="as scripts/bench's (auto: Go where it builds)",
    )
    add("--serve", action="store_true", help=argparse.SUPPRESS)  # the server's own process
    return parser.parse_args(argv)


def fixed_answer() -> pb.ConfirmPaymentResponse:
    """A confirmed reservation with every field set, as large as the service's answers."""
    now = Timestamp()
    now.GetCurrentTime()
    reservation = reservation_pb2.Reservation(
        reservation_id=str(uuid.uuid4()),
        event_id=f"bench-{uuid.uuid4()}",
        tier_id="rush",
        user_id="user-0-123",
        status=reservation_pb2.RESERVATION_STATUS_CONFIRMED,
        amount=10000,
        currency_code="KRW",
        provider="portone",
        checkout_id=f"chk_{uuid.uuid4().hex}",
        checkout_url=f"https://pay.example/checkout/{uuid.uuid4().hex}",
        create_time=now,
        expire_time=now,
        paid_time=now,
        registration_id=str(uuid.uuid4()),
    )
    return pb.ConfirmPaymentResponse(
        outcome=pb.CONFIRM_PAYMENT_OUTCOME_CONFIRMED, reservation=reservation
    )


def fixed_answers(answer_after_seconds: float) -> grpc.GenericRpcHandler:
    """ConfirmPayment without the service: the same answer to every call."""
    answer = fixed_answer()

    async def confirm_payment(
        request: pb.ConfirmPaymentRequest, context: Any
    ) -> pb.ConfirmPaymentResponse:
        if answer_after_seconds:
            await asyncio.sleep(answer_after_seconds)
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        confirm_payment,
        request_deserializer=pb.ConfirmPaymentRequest.FromString,
        response_serializer=pb.ConfirmPaymentResponse.SerializeToString,
    )
    service = pb.DESCRIPTOR.services_by_name["TicketingService"].full_name
    return grpc.method_handlers_generic_handler(service, {"ConfirmPayment": handler})


def serve_fixed(answer_after_seconds: float, address: str, report: Callable[[int], None]) -> int:
    """One worker: the fixed-answer server on `address` until SIGTERM."""

    async def serve() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        server.add_generic_rpc_handlers((fixed_answers(answer_after_seconds),))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C reaches the workers too
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        port = server.add_insecure_port(address)
        await server.start()
        report(port)
        await stop.wait()
        await server.stop(1)

    event_loop.run(serve())
    return 0


async def measure(server: Child, args: argparse.Namespace) -> tuple[list[Phase], str]:
    """The rounds, and who made the calls."""
    request = pb.ConfirmPaymentRequest(
        reservation_id=str(uuid.uuid4()),
        checkout_id=f"chk_{uuid.uuid4().hex}",
        payment_id="pay-1",
        tx_id="tx-1",
        provider="portone",
        amount=10000,
        currency_code="KRW",
    )
    workers = server.workers()
    async with (
        grpc_stubs(server.port, args.concurrency, workers) as stubs,
        open_callers(args.callers, stubs, server.port, args.concurrency, workers) as (
            callers,
            which,
        ),
    ):
        groups = {
            "server": server.cpu_seconds,
            "driver": lambda: driver_cpu_seconds() + callers.cpu_seconds(),
        }
        cpu = CpuMeter(groups).sample

        async def confirm(phase: Phase, calls: int, limit_seconds: float) -> None:
            answer = pb.ConfirmPaymentResponse
            requests = [request] * calls
            await callers.run(
                phase, "ConfirmPayment", requests, answer, args.concurrency, limit_seconds, cpu
            )

        await confirm(Phase("warm-up"), WARM_UP_CALLS, 60)
        phases = []
        for _ in range(args.rounds):
            phase = Phase("ConfirmPayment, gRPC alone")
            await confirm(phase, args.calls, PHASE_SECONDS)
            phases.append(phase)
        return phases, which


def report(
    phases: list[Phase], callers: str, args: argparse.Namespace, speed_ms: tuple[float, float]
) -> None:
    print(
        f"\nmachine: {os.cpu_count()} CPUs, {platform.machine()},"
        f" Python {platform.python_version()}; {args.workers} server worker(s) answering after"
        f" {args.answer_after_ms:g} ms;"
        f" {args.concurrency} callers, one connection each; {args.rounds} round(s) of"
        f" {args.calls} calls"
    )
    print(f"callers: {callers}")
    print(
        f"CPU speed: a fixed loop took {speed_ms[0]:.0f} ms before the run and"
        f" {speed_ms[1]:.0f} ms after it (see scripts/bench)"
    )
    print(
        f"{'round':<6} {'calls/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}   CPU ms per call"
    )
    for number, phase in enumerate(phases, start=1):
        p50, p95, p99 = quantiles_ms(phase.latencies)
        errors = f"   errors: {dict(phase.errors)}" if phase.errors else ""
        print(
            f"{number:<6} {phase.rate:>8.1f} {p50:>7.1f} {p95:>7.1f} {p99:>7.1f}"
            f"   server {phase.cpu_ms_per_call('server'):.2f}"
            f" driver {phase.cpu_ms_per_call('driver'):.2f}{errors}"
        )
    server = statistics.median(p.cpu_ms_per_call("server") for p in phases)
    driver = statistics.median(p.cpu_ms_per_call("driver") for p in phases)
    print(f"median CPU per call: server {server:.2f} ms, driver {driver:.2f} ms")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        serve = partial(serve_fixed, args.answer_after_ms / 1000)
        return serve_in_workers(args.workers, "127.0.0.1:0", serve)
    began = time.perf_counter()
    speed_before = cpu_speed_ms()
    command = [sys.executable, "-m", "bench.floor", "--serve", "--workers", str(args.workers)]
    command += ["--answer-after-ms", str(args.answer_after_ms)]
    with child_process(command, clean_environment(), SERVER_LINE, "fixed-answer server") as server:
        phases, callers = event_loop.run(measure(server, args))
    report(phases, callers, args, (speed_before, cpu_speed_ms()))
    print(f"\nwhole run: {time.perf_counter() - began:.0f} s")
    return 1 if any(p.errors for p in phases) else 0


if __name__ == "__main__":
    raise SystemExit(main())
