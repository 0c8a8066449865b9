"""`scripts/chaos`: a ticket rush through killed replicas, a Postgres restart, a payment
service that hangs and errs, and hostile sockets; then the database's invariants, and what a
consumer following the feed through it all received.

    scripts/chaos [--seconds 60] [--buyers-per-second 8] [--events 4] [--seats 20]

Everything runs on this machine and listens on 127.0.0.1 (Postgres on a Unix socket): an
embedded Postgres in a temporary directory, two `ticketing-service serve` replicas, the webhook
shim forwarding to both, and the payment service fake in this process. Every phase is bounded.
Exits 1 when an invariant fails, the system does not settle in time, or a client met an
answer no retry could explain.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.callbacks import CALLBACK_PATH
from bench.chaos import invariants
from bench.chaos.clients import Tally, replica_stubs
from bench.chaos.faults import FaultLog, Faults, hostile_sockets
from bench.chaos.follower import FeedFollower
from bench.chaos.processes import Replica, RestartablePostgres, free_port, restartable_postgres
from bench.chaos.report import Judged, RushOutcome, report
from bench.chaos.rush import Rush, RushPlan
from bench.stack import PAYMENT_TOKEN, webhook_shim
from ticketing_service.entrypoints import event_loop
from ticketing_service.entrypoints.dev.payment_service import (
    create_payment_service_app,
    running_payment_service,
    state_of,
)
from ticketing_service.entrypoints.dev.payment_state import PaymentServiceState

HMAC_SECRET = "chaos-callback-secret"  # noqa: S105 - this run's loopback shim and fake only
SWEEP_SECONDS = 1.0
SETTLE_POLL_SECONDS = 1.0
# Short enough that the run sees holds expire, lost callbacks found, and follow-ups retried.
SERVICE_SETTINGS = {
    "TICKET_PAYMENT_SERVICE_TOKEN": PAYMENT_TOKEN,
    "TICKET_PAYMENT_TIMEOUT_SECONDS": "2",
    "TICKETING_HOLD_SECONDS": "20",
    "TICKETING_SWEEP_INTERVAL_SECONDS": str(SWEEP_SECONDS),
    "TICKETING_RECONCILE_AFTER_SECONDS": "3",
    "TICKETING_RECONCILE_BACKOFF_SECONDS": "1",
    "TICKETING_DB_POOL_SIZE": "5",
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--seconds", type=float, default=60, help="how long buyers arrive; faults fit in it (60)")
    add("--buyers-per-second", type=float, default=8, help="buyers arriving per second (8)")
    add("--events", type=int, default=4, help="events opened one after another (4)")
    add("--seats", type=int, default=20, help="seats per tier; two tiers per event (20)")
    add("--settle-seconds", type=float, default=120, help="bound on settling afterwards (120)")
    add("--seed", type=int, help="the clients' random choices (default: a fresh one)")
    return parser.parse_args(argv)


async def chaos(args: argparse.Namespace, postgres: RestartablePostgres, logs: Path) -> int:
    began = time.monotonic()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)  # noqa: S311 - the clients' choices, not a secret
    app = create_payment_service_app(PAYMENT_TOKEN, callback_secret=HMAC_SECRET)
    async with running_payment_service(app) as payment_url:
        ports = [free_port(), free_port()]
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        with webhook_shim(target, HMAC_SECRET) as shim:
            callback_url = f"http://127.0.0.1:{shim.port}{CALLBACK_PATH}"
            env = SERVICE_SETTINGS | {
                "DATABASE_URL": postgres.url,
                "TICKET_PAYMENT_SERVICE_URL": payment_url,
                "TICKETING_CALLBACK_URL": callback_url,
            }
            replicas = [Replica(n, port, env, logs) for n, port in zip("ab", ports, strict=True)]
            try:
                await asyncio.to_thread(replicas[0].start, migrate=True)
                await asyncio.to_thread(replicas[1].start, migrate=False)
                print(f"chaos: seed {seed}; replicas on {ports}, shim on {shim.port}", flush=True)
                stack = Stack(postgres, state_of(app), replicas, shim.port, callback_url)
                follower = FeedFollower(ports, rng)
                async with follower.following():
                    run = await rush_under_faults(stack, args, rng)
                    rushed = time.monotonic()
                    judged = await judge(stack, run.events, args.settle_seconds, follower)
            finally:
                await asyncio.gather(*(asyncio.to_thread(r.stop) for r in replicas))
    times = (rushed - began, time.monotonic() - rushed, time.monotonic() - began)
    return 0 if report(run, judged, times) else 1


@dataclass(frozen=True)
class Stack:
    """What the chaos run runs, and where."""

    postgres: RestartablePostgres
    payments: PaymentServiceState
    replicas: list[Replica]
    shim_port: int
    callback_url: str


async def rush_under_faults(
    stack: Stack, args: argparse.Namespace, rng: random.Random
) -> RushOutcome:
    """The rush, with the faults on their timeline and hostile sockets throughout."""
    tally, log = Tally(), FaultLog()
    plan = RushPlan(args.seconds, args.buyers_per_second, args.events, args.seats)
    ports = [replica.port for replica in stack.replicas]
    async with replica_stubs(ports, tally, rng) as stubs:
        rush = Rush(plan, stubs, stack.payments, stack.callback_url, tally, rng)
        stop_hostile = asyncio.Event()
        hostility = asyncio.create_task(hostile_sockets(stack.shim_port, stop_hostile, log))
        faults = Faults(args.seconds, stack.replicas, stack.postgres, stack.payments, log)
        buyers, _ = await asyncio.gather(rush.run(), faults.run())
        stop_hostile.set()
        await hostility
    return RushOutcome(buyers, rush.events, tally, log)


async def judge(
    stack: Stack, events: list[str], settle_seconds: float, follower: FeedFollower
) -> Judged:
    """Let the background work settle (bounded), then read the invariants, and judge what the
    feed's follower got."""
    url = stack.postgres.url
    paid = [
        c.text("reservationId") for c in stack.payments.checkouts.values() if c.status == "paid"
    ]
    waiting = await settle(url, events, paid, settle_seconds)
    verdicts = await invariants.check(url, events, paid, SWEEP_SECONDS)
    verdicts.append(await follower.verdict(await invariants.last_numbered(url)))
    statuses = await invariants.reservation_statuses(url, events)
    return Judged(waiting, verdicts, statuses)


async def settle(url: str, events: list[str], paid: list[str], bound_seconds: float) -> list[str]:
    """Wait until the sweeper, reconciliation and the sequencer have caught up, or the bound
    has passed; what is still waiting then."""
    deadline = time.monotonic() + bound_seconds
    while True:
        waiting = await invariants.settled(url, events, paid, SWEEP_SECONDS)
        if not waiting or time.monotonic() > deadline:
            return waiting
        await asyncio.sleep(SETTLE_POLL_SECONDS)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="ticketing-chaos-") as scratch,
        restartable_postgres(Path(scratch)) as postgres,
    ):
        logs = Path(scratch) / "logs"
        logs.mkdir()
        return event_loop.run(chaos(args, postgres, logs))


if __name__ == "__main__":
    raise SystemExit(main())
