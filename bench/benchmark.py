"""Benchmark the real stack against the limit of its own database, and run a ticket rush.

    scripts/bench [--concurrency 32] [--calls 1000] [--confirm-calls 2000] [--rounds 3]
                  [--workers 2] [--buyers 5000]

Starts Postgres (embedded in a temporary directory, or `DATABASE_URL`), the payment service
stand-in (in this process, on its own thread), `python -m ticketing_service serve` and the
webhook shim as subprocesses. Then, `--rounds` times, with `--concurrency` callers on
`--channels` connections spread evenly over the server's workers (`--callers`: compiled Go
ones where they build, see `bench/callers.py`), each RPC and then, at once, its limit:

1. StartPaidRegistration: `--confirm-calls` + `--calls` holds from distinct users on one
   paid tier;
2. ConfirmPayment: the first `--confirm-calls` of them (2 x `--calls`), over gRPC;
3. webhook: the other `--calls`, as moim-HMAC-signed callbacks through the shim;

the limit being the same SQL transactions (recorded from the service's own code, see
`bench/limit.py`) run by pgbench against the same Postgres with as many connections as
callers.

The report merges the rounds per RPC and gives the median round's ratio service / limit (and
each round's). Last, the ticket rush: `--buyers` race for `--seats` seats, then pay; verified
in the database.

Everything listens on 127.0.0.1 and every phase is bounded. Exits 1 when a call failed
unexpectedly, a pgbench run failed, or the rush's verification found a problem."""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from bench.callbacks import ShimConnections, post_callback
from bench.callers import Callers, open_callers
from bench.channels import Stubs, grpc_stubs
from bench.limit import Limit, Scripts, capture_scripts, run_pgbench
from bench.phases import CALL_SECONDS, CpuSampler, Phase, run_phase
from bench.report import Round, report
from bench.rush import Rush, ticket_rush
from bench.stack import (
    PAYMENT_TOKEN,
    Child,
    CpuMeter,
    PaymentServiceThread,
    PostgresCpu,
    cpu_speed_ms,
    database,
    driver_cpu_seconds,
    ticketing_server,
    webhook_shim,
    worker_groups,
)
from ticketing_service.entrypoints import event_loop

PRICE = 10000
WEBHOOK = "webhook (moim HMAC)"
HMAC_SECRET = "bench-callback-secret"  # noqa: S105 - this run's loopback shim only
PHASE_SECONDS = 120.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--concurrency", type=int, default=32, help="concurrent callers (32)")
    add("--calls", type=int, default=1000, help="calls per measured RPC and round (1000)")
    # ConfirmPayment's calls are the quickest: at 1,000 a phase and its limit lasted about a
    # second each, and a shared host's half-second stalls moved single rounds' ratios by a
    # third (docs/benchmarks.md).
    add(
        "--confirm-calls",
        type=int,
        help="ConfirmPayment calls per round (2 x --calls), so its phases last seconds too",
    )
    add("--rounds", type=int, default=3, help="service-then-limit rounds; ratios are medians (3)")
    add("--workers", type=int, default=2, help="server processes, `serve --workers` (2)")
    add("--pool-size", type=int, default=10, help="database pool per server process (10)")
    # One connection per caller, spread evenly over the workers (bench/channels.py, `_balanced`);
    # 8 connections for 32 callers measured no cheaper per call (docs/benchmarks.md).
    add("--channels", type=int, default=32, help="gRPC connections the callers share (32)")
    add(
        "--callers",
        choices=("auto", "go", "python"),
        default="auto",
        help="who calls Start and Confirm: compiled Go callers, Python ones, or Go where it"
        " builds (auto); see bench/callers.py",
    )
    add("--buyers", type=int, default=5000, help="ticket rush: buyers (5000)")
    add("--seats", type=int, default=500, help="ticket rush: seats (500)")
    add("--skip-rush", action="store_true", help="measure the RPCs only")
    add("--save-scripts", type=Path, help="also write the pgbench scripts to this directory")
    args = parser.parse_args(argv)
    if args.confirm_calls is None:
        args.confirm_calls = 2 * args.calls
    return args


async def measure(
    server: Child, shim: Child, database_url: str, args: argparse.Namespace
) -> tuple[list[Round], Rush | None, str]:
    """The rounds, the rush, and who made the calls."""
    workers = server.workers()
    async with (
        grpc_stubs(server.port, args.channels, workers) as stubs,
        open_callers(args.callers, stubs, server.port, args.channels, workers) as (callers, which),
    ):
        groups: dict[str, Callable[[], float]] = {
            "server": server.cpu_seconds,
            "shim": shim.cpu_seconds,
        }
        groups |= {
            "postgres": PostgresCpu(),
            "driver": lambda: driver_cpu_seconds() + callers.cpu_seconds(),
        }
        groups |= worker_groups(server)
        cpu = CpuMeter(groups).sample
        # The service and its limit alternate, RPC by RPC (measure_round). Each round has
        # events of its own: a tier's seat count reads its reservations, so a tier reused by a
        # later round would make that round's transactions slower than the first's.
        rounds = []
        for number in range(args.rounds):
            event_id = f"bench-{uuid.uuid4()}"
            limit_event = f"limit-{uuid.uuid4().hex}"
            for event in (event_id, limit_event):
                await offer_tier(stubs, event, capacity=10_000_000)
            scripts = await capture_scripts(database_url, limit_event, "rush", PRICE)
            if args.save_scripts and number == 0:
                scripts.save(args.save_scripts)
            limits = Limits(
                database_url,
                scripts,
                number,
                args.concurrency,
                holds=holds_wanted(args),
                webhook_transactions=2 * args.calls,
            )
            rounds.append(await measure_round(callers, shim, limits, event_id, number, args, cpu))
        rush = None
        if not args.skip_rush:
            rush = await run_rush(stubs, shim, database_url, args, cpu)
    return rounds, rush, which


async def offer_tier(stubs: Stubs, event_id: str, capacity: int) -> None:
    tier = settings_pb2.TierInput(
        tier_id="rush", name="Rush", price_amount=PRICE, capacity=capacity
    )
    await stubs.next().UpdateTicketingSettings(
        pb.UpdateTicketingSettingsRequest(event_id=event_id, event_title="Bench", tiers=[tier]),
        timeout=CALL_SECONDS,
    )


async def measure_round(
    callers: Callers,
    shim: Child,
    limits: Limits,
    event_id: str,
    number: int,
    args: argparse.Namespace,
    cpu: CpuSampler,
) -> Round:
    """Each RPC's calls, each followed at once by the same transactions through pgbench.

    A pair measured seconds apart meets the same host: the shared VM's slow minutes then lower
    a ratio's both sides instead of one.
    """
    starts = [
        pb.StartPaidRegistrationRequest(
            event_id=event_id, tier_id="rush", user_id=f"user-{number}-{i}"
        )
        for i in range(limits.holds)  # the limit makes as many
    ]
    start_phase = Phase("StartPaidRegistration")
    started = await callers.run(
        start_phase,
        "StartPaidRegistration",
        starts,
        pb.StartPaidRegistrationResponse,
        args.concurrency,
        PHASE_SECONDS,
        cpu,
    )
    round_ = Round([start_phase], [limits.start()])
    holds: list[reservation_pb2.Reservation] = [s.reservation for s in started if s is not None]
    by_grpc, by_webhook = holds[: args.confirm_calls], holds[args.confirm_calls :]
    confirms = [
        pb.ConfirmPaymentRequest(
            reservation_id=r.reservation_id,
            checkout_id=r.checkout_id,
            payment_id=f"pay-{r.reservation_id}",
            tx_id=f"tx-{r.reservation_id}",
            provider="portone",
            amount=r.amount,
            currency_code=r.currency_code,
        )
        for r in by_grpc
    ]
    webhook_holds = limits.webhook_holds()
    confirm_phase = Phase("ConfirmPayment")
    await callers.run(
        confirm_phase,
        "ConfirmPayment",
        confirms,
        pb.ConfirmPaymentResponse,
        args.concurrency,
        PHASE_SECONDS,
        cpu,
    )
    round_.add(confirm_phase, limits.confirm())
    webhook_phase = Phase(WEBHOOK)
    async with ShimConnections(shim.port) as http:

        async def callback(i: int) -> str:
            return await post_callback(http, HMAC_SECRET, by_webhook[i], 0)

        await run_phase(
            webhook_phase, len(by_webhook), callback, args.concurrency, PHASE_SECONDS, cpu
        )
    round_.add(webhook_phase, limits.webhook(webhook_holds))
    return round_


def holds_wanted(args: argparse.Namespace) -> int:
    """Holds a round's Start phase makes: one per ConfirmPayment call and per webhook call."""
    return int(args.confirm_calls + args.calls)


@dataclass
class Limits:
    """One round's pgbench runs of the service's transactions.

    As many Starts as the service's Start phase made holds (`holds`), so the limit's tier ends
    up with as many live holds to count, then the confirmations of those holds; and for the
    webhook, `webhook_transactions` fresh holds and their confirmations. Each round numbers its
    transactions from a base of its own (fresh users and reservations).
    """

    database_url: str
    scripts: Scripts
    number: int
    clients: int
    holds: int
    webhook_transactions: int

    def start(self) -> Limit:
        return self._run("StartPaidRegistration", self.scripts.start, self._base, self.holds)

    def webhook_holds(self) -> Limit:
        """Fresh holds for the webhook's transactions, made by the same Start script."""
        return self._run("holds", self.scripts.start, self._webhook_base, self.webhook_transactions)

    def confirm(self) -> Limit:
        return self._run("ConfirmPayment", self.scripts.confirm, self._base, self.holds)

    def webhook(self, holds: Limit) -> Limit:
        if holds.failure:
            return Limit(WEBHOOK, failure=f"making its holds: {holds.failure}")
        return self._run(
            WEBHOOK, self.scripts.webhook_confirm, self._webhook_base, self.webhook_transactions
        )

    @property
    def _base(self) -> int:
        return (2 * self.number + 1) * 10**8

    @property
    def _webhook_base(self) -> int:
        return self._base + 10**8

    def _run(self, name: str, script: str, base: int, transactions: int) -> Limit:
        per_client = max(1, transactions // self.clients)
        return run_pgbench(name, self.database_url, script, base, self.clients, per_client)


async def run_rush(
    stubs: Stubs, shim: Child, database_url: str, args: argparse.Namespace, cpu: CpuSampler
) -> Rush:
    """The ticket rush, its holds paid by signed callbacks through the shim."""
    rush = Rush(args.buyers, args.seats)
    async with ShimConnections(shim.port) as http:

        async def pay_by_webhook(r: reservation_pb2.Reservation, i: int) -> str:
            return await post_callback(http, HMAC_SECRET, r, i)

        return await ticket_rush(stubs, pay_by_webhook, database_url, rush, args.concurrency, cpu)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    speed_before = cpu_speed_ms()
    with ExitStack() as stack:
        url = stack.enter_context(database())
        payments = stack.enter_context(PaymentServiceThread())
        server = stack.enter_context(
            ticketing_server(url, payments.url, PAYMENT_TOKEN, args.workers, args.pool_size)
        )
        shim = stack.enter_context(webhook_shim(f"127.0.0.1:{server.port}", HMAC_SECRET))
        # The callers run on the loop the service runs on: less of the shared CPU is theirs.
        rounds, rush, callers = event_loop.run(measure(server, shim, url, args))
    report(rounds, rush, callers, args, (speed_before, cpu_speed_ms()))
    print(f"\nwhole run: {time.perf_counter() - began:.0f} s")
    failed = (
        any(p.errors for r in rounds for p in r.phases)
        or any(limit.failure for r in rounds for limit in r.limits)
        or (rush is not None and bool(rush.problems))
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
