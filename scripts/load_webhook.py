"""Measure signed payment callbacks per second through the webhook shim and the gRPC server.

    uv run python scripts/load_webhook.py [--concurrency 32] [--callbacks 2000]

Starts Postgres (embedded in a temporary directory, or `DATABASE_URL`), then
`python -m ticketing_service serve` and the webhook shim (`run_webhook`) as subprocesses, so
the load generator shares no event loop or GIL with either; the payment service fake runs
in this process and is only busy while the holds are opened. It then opens 2 x `--callbacks`
holds over gRPC and sends, with `--concurrency` HTTP workers: one moim-HMAC-signed callback
per hold of the first half, one Standard-Webhooks-signed callback per hold of the second half,
and every HMAC delivery once more (the idempotent replay path). It prints calls/s and
p50/p95/p99 latency per phase and checks every answer. Everything listens on 127.0.0.1 and
every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from bench_phases import moim_hmac_headers
from bench_stack import Child, ticketing_server, webhook_shim
from load import database
from moim.ticketing.client import TicketingClient
from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from standardwebhooks import Webhook

from ticketing_service.entrypoints.dev.payment_service import (
    create_payment_service_app,
    running_payment_service,
)

PAYMENT_TOKEN = "load-payment-token"  # noqa: S105 - the loopback fake's, nothing real
HMAC_SECRET = "load-callback-secret"  # noqa: S105 - generated for this run's shim only
WHSEC = "whsec_" + base64.b64encode(b"load-standard-webhooks-key").decode()
CALLBACK_PATH = "/api/ticket-payment-callbacks"
PRICE = 10000
HEADER = (
    f"{'phase':<24} {'calls':>6} {'errors':>6} {'seconds':>8} {'calls/s':>9}"
    f" {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
)


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU seconds of a process (None: this one), from Linux's /proc."""
    if pid is None:
        return time.process_time()
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()  # after the command name; fields[0] is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Phase:
    """What one phase measured: latencies, answers, and CPU per call of each process."""

    name: str
    processes: dict[str, int | None]
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)

    def report(self) -> str:
        calls = len(self.latencies)
        q = statistics.quantiles(self.latencies, n=100) if calls > 1 else [0.0] * 99
        p50, p95, p99 = (q[i] * 1000 for i in (49, 94, 98))
        errors = sum(self.errors.values())
        return (
            f"{self.name:<24} {calls:>6} {errors:>6} {self.seconds:>8.2f}"
            f" {calls / self.seconds:>9.1f} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f}"
        )


async def run_phase(
    phase: Phase,
    count: int,
    call: Callable[[int], Awaitable[str]],
    concurrency: int,
    limit_seconds: float,
) -> None:
    """Make calls 0..count-1 with `concurrency` workers; `call` returns the outcome or raises."""
    indexes = iter(range(count))

    async def worker() -> None:
        for i in indexes:
            began = time.perf_counter()
            try:
                phase.outcomes[await call(i)] += 1
            except Exception as error:  # counted and reported, never hidden
                phase.errors[type(error).__name__ + ": " + str(error)[:80]] += 1
            phase.latencies.append(time.perf_counter() - began)

    cpu_before = {name: cpu_seconds(pid) for name, pid in phase.processes.items()}
    began = time.perf_counter()
    async with asyncio.timeout(limit_seconds):
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - began
    for name, pid in phase.processes.items():
        spent = cpu_seconds(pid) - cpu_before[name]
        phase.cpu_ms_per_call[name] = spent * 1000 / max(count, 1)


# The callbacks


def callback_body(reservation: reservation_pb2.Reservation) -> bytes:
    return json.dumps(
        {
            "type": "ticket_payment.paid",
            "reservationId": reservation.reservation_id,
            "checkoutId": reservation.checkout_id,
            "paymentId": f"pay-{reservation.reservation_id}",
            "provider": reservation.provider,
            "amount": reservation.amount,
            "currency": reservation.currency_code,
            "paidAt": datetime.now(UTC).isoformat(),
        }
    ).encode()


def standard_headers(body: bytes, msg_id: str) -> dict[str, str]:
    """Signed when sent, as a real sender does: the timestamp must be fresh."""
    now = datetime.now(UTC)
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(WHSEC).sign(msg_id, now, body.decode()),
    }


async def post_callback(http: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> str:
    response = await http.post(CALLBACK_PATH, content=body, headers=headers)
    if response.status_code != 200:
        raise RuntimeError(f"HTTP {response.status_code} {response.text[:60]}")
    return str(response.json()["outcome"])


# The load


async def open_holds(
    server: Child, count: int, concurrency: int, limit: float
) -> tuple[Phase, list[reservation_pb2.Reservation]]:
    """One paid tier, and `count` holds on it from distinct users."""
    event_id = f"load-{uuid.uuid4()}"
    tier = settings_pb2.TierInput(tier_id="rush", name="Rush", price_amount=PRICE, capacity=count)
    held: list[reservation_pb2.Reservation | None] = [None] * count
    async with TicketingClient.connect(f"127.0.0.1:{server.port}", timeout=30) as client:
        await client.update_ticketing_settings(
            pb.UpdateTicketingSettingsRequest(event_id=event_id, tiers=[tier])
        )

        async def start(i: int) -> str:
            request = pb.StartPaidRegistrationRequest(
                event_id=event_id, tier_id="rush", user_id=f"user-{i}"
            )
            held[i] = (await client.start_paid_registration(request)).reservation
            return "HELD"

        phase = Phase("StartPaidRegistration", {"driver": None, "server": server.process.pid})
        await run_phase(phase, count, start, concurrency, limit)
    return phase, [r for r in held if r is not None]


async def send_callbacks(
    shim: Child,
    server: Child,
    holds: Sequence[reservation_pb2.Reservation],
    args: argparse.Namespace,
) -> list[Phase]:
    half = len(holds) // 2
    hmac_holds, standard_holds = holds[:half], holds[half:]
    bodies = [callback_body(r) for r in holds]
    deliveries = [f"delivery-{uuid.uuid4()}" for _ in holds]
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=64)
    url = f"http://127.0.0.1:{shim.port}"
    processes = {"driver": None, "shim": shim.process.pid, "server": server.process.pid}
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:

        async def moim_hmac(i: int) -> str:
            return await post_callback(
                http, bodies[i], moim_hmac_headers(HMAC_SECRET, bodies[i], deliveries[i])
            )

        async def standard(i: int) -> str:
            j = half + i
            return await post_callback(http, bodies[j], standard_headers(bodies[j], deliveries[j]))

        phases = [
            (Phase("callback moim HMAC", processes), len(hmac_holds), moim_hmac),
            (Phase("callback Standard Webh.", processes), len(standard_holds), standard),
            (Phase("same deliveries again", processes), len(hmac_holds), moim_hmac),
        ]
        for phase, count, call in phases:
            await run_phase(phase, count, call, args.concurrency, args.phase_seconds)
    return [phase for phase, _, _ in phases]


async def load(args: argparse.Namespace, database_url: str) -> list[Phase]:
    app = create_payment_service_app(token=PAYMENT_TOKEN)
    async with running_payment_service(app) as payment_url:
        with ticketing_server(
            database_url, payment_url, PAYMENT_TOKEN, 1, args.pool_size
        ) as server:
            hold_phase, holds = await open_holds(
                server, 2 * args.callbacks, args.concurrency, args.phase_seconds
            )
            with webhook_shim(server.port, HMAC_SECRET, WHSEC) as shim:
                callback_phases = await send_callbacks(shim, server, holds, args)
    return [hold_phase, *callback_phases]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent senders (32)")
    parser.add_argument("--callbacks", type=int, default=2000, help="callbacks per scheme (2000)")
    parser.add_argument("--pool-size", type=int, default=10, help="server's DB pool size (10)")
    parser.add_argument("--phase-seconds", type=float, default=300, help="bound per phase (300)")
    args = parser.parse_args()
    with database() as database_url:
        phases = asyncio.run(load(args, database_url))
    print(f"concurrency {args.concurrency}, {os.cpu_count()} CPUs, server pool {args.pool_size}")
    print(HEADER)
    for phase in phases:
        print(phase.report())
        cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in phase.cpu_ms_per_call.items())
        print(f"  answers {dict(phase.outcomes)}; CPU ms per call: {cpu}")
        if phase.errors:
            print(f"  errors: {dict(phase.errors)}")
    return 1 if any(phase.errors for phase in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
