"""Signed payment callbacks per second through the webhook shim and the gRPC server.

    scripts/bench webhook [--concurrency 32] [--callbacks 2000]

Starts Postgres (embedded in a temporary directory, or `DATABASE_URL`), the payment service
fake on a thread of this process, then `python -m ticketing_service serve` and the webhook
shim as subprocesses. It opens 2 x `--callbacks` holds over gRPC and sends, with
`--concurrency` senders: one moim-HMAC-signed callback per hold of the first half, one
Standard-Webhooks-signed callback per hold of the second half, and every HMAC delivery once
more (the idempotent replay path). It prints calls/s, p50/p95/p99 latency and CPU per call
per phase and checks every answer. Everything listens on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import argparse
import base64
import os
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from standardwebhooks import Webhook

from bench.callbacks import CALLBACK_PATH, ShimConnections, callback_body, moim_hmac_headers
from bench.callbacks import outcome_of as callback_outcome
from bench.channels import grpc_stubs
from bench.phases import CALL_SECONDS, CpuSampler, Phase, quantiles_ms, run_phase
from bench.stack import (
    PAYMENT_TOKEN,
    Child,
    CpuMeter,
    PaymentServiceThread,
    database,
    driver_cpu_seconds,
    ticketing_server,
    webhook_shim,
)
from ticketing_service.entrypoints import event_loop

HMAC_SECRET = "bench-callback-secret"  # noqa: S105 - generated for this run's shim only
WHSEC = "whsec_" + base64.b64encode(b"bench-standard-webhooks-key").decode()
PRICE = 10000
HEADER = (
    f"{'phase':<24} {'calls':>6} {'errors':>6} {'seconds':>8} {'calls/s':>9}"
    f" {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
)


def standard_headers(body: bytes, msg_id: str) -> dict[str, str]:
    """Signed when sent, as a real sender does: the timestamp must be fresh."""
    now = datetime.now(UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(WHSEC).sign(msg_id, now, body.decode()),
    }


async def open_holds(
    port: int, count: int, concurrency: int, cpu: CpuSampler
) -> tuple[Phase, list[reservation_pb2.Reservation]]:
    """One paid tier, and `count` holds on it from distinct users."""
    event_id = f"load-{uuid.uuid4()}"
    tier = settings_pb2.TierInput(tier_id="rush", name="Rush", price_amount=PRICE, capacity=count)
    async with grpc_stubs(port, 1) as stubs:
        await stubs.next().UpdateTicketingSettings(
            pb.UpdateTicketingSettingsRequest(event_id=event_id, tiers=[tier]),
            timeout=CALL_SECONDS,
        )

        async def start(i: int) -> reservation_pb2.Reservation:
            request = pb.StartPaidRegistrationRequest(
                event_id=event_id, tier_id="rush", user_id=f"user-{i}"
            )
            answer = await stubs.next().StartPaidRegistration(request, timeout=CALL_SECONDS)
            reservation: reservation_pb2.Reservation = answer.reservation
            return reservation

        phase = Phase("StartPaidRegistration")
        held = await run_phase(phase, count, start, concurrency, 300, cpu)
    return phase, [r for r in held if r is not None]


async def send_callbacks(
    shim: Child, holds: Sequence[reservation_pb2.Reservation], concurrency: int, cpu: CpuSampler
) -> list[tuple[Phase, Counter[str]]]:
    """The three phases of callbacks; each with the outcomes the shim answered."""
    half = len(holds) // 2
    bodies = [callback_body(r, f"pay-{r.reservation_id}") for r in holds]
    deliveries = [f"delivery-{uuid.uuid4()}" for _ in holds]
    async with ShimConnections(shim.port) as http:

        async def moim_hmac(i: int) -> str:
            headers = moim_hmac_headers(HMAC_SECRET, bodies[i], deliveries[i])
            return callback_outcome(*await http.post(CALLBACK_PATH, bodies[i], headers))

        async def standard(i: int) -> str:
            j = half + i
            headers = standard_headers(bodies[j], deliveries[j])
            return callback_outcome(*await http.post(CALLBACK_PATH, bodies[j], headers))

        plan: list[tuple[str, int, Callable[[int], Awaitable[str]]]] = [
            ("callback moim HMAC", half, moim_hmac),
            ("callback Standard Webh.", len(holds) - half, standard),
            ("same deliveries again", half, moim_hmac),
        ]
        phases = []
        for name, count, call in plan:
            phase = Phase(name)
            answers = await run_phase(phase, count, call, concurrency, 300, cpu)
            phases.append((phase, Counter(a for a in answers if a is not None)))
    return phases


async def measure(server: Child, shim: Child, args: argparse.Namespace) -> list[Phase]:
    cpu = CpuMeter(
        {
            "driver": driver_cpu_seconds,
            "shim": shim.cpu_seconds,
            "server": server.cpu_seconds,
        }
    ).sample
    hold_phase, holds = await open_holds(server.port, 2 * args.callbacks, args.concurrency, cpu)
    phases = [hold_phase]
    for phase, outcomes in await send_callbacks(shim, holds, args.concurrency, cpu):
        print(f"{phase.name}: answers {dict(outcomes)}")
        phases.append(phase)
    return phases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench webhook", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent senders (32)")
    parser.add_argument("--callbacks", type=int, default=2000, help="callbacks per scheme (2000)")
    parser.add_argument("--pool-size", type=int, default=10, help="server's DB pool size (10)")
    args = parser.parse_args(argv)
    with (
        database() as url,
        PaymentServiceThread() as payments,
        ticketing_server(url, payments.url, PAYMENT_TOKEN, 1, args.pool_size) as server,
        webhook_shim(f"127.0.0.1:{server.port}", HMAC_SECRET, WHSEC) as shim,
    ):
        phases = event_loop.run(measure(server, shim, args))
    print(f"concurrency {args.concurrency}, {os.cpu_count()} CPUs, server pool {args.pool_size}")
    print(HEADER)
    for phase in phases:
        p50, p95, p99 = quantiles_ms(phase.latencies)
        errors = sum(phase.errors.values())
        print(
            f"{phase.name:<24} {phase.calls:>6} {errors:>6} {phase.seconds:>8.2f}"
            f" {phase.rate:>9.1f} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f}"
        )
        cpu = ", ".join(f"{name} {phase.cpu_ms_per_call(name):.1f}" for name in phase.cpu_seconds)
        print(f"  CPU ms per call: {cpu}")
        if phase.errors:
            print(f"  errors: {dict(phase.errors)}")
    return 1 if any(phase.errors for phase in phases) else 0


if __name__ == "__main__":
    raise SystemExit(main())
