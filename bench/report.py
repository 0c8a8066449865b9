"""The benchmark's report: each RPC over all rounds, its limit, their ratios, and the rush."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from dataclasses import dataclass

from bench.limit import Limit
from bench.phases import Phase, quantiles_ms
from bench.rush import Rush
from bench.stack import SPLIT_MARK

# Below this many calls per RPC and round, a phase lasts well under a second and its ratio is
# mostly start-up and noise.
MEANINGFUL_CALLS = 500
# `cpu_speed_ms()` on the machine of docs/benchmarks.md when its shared host is quiet.
REFERENCE_SPEED_MS = 100


@dataclass
class Round:
    """One round: the service's phases and the same transactions by pgbench."""

    phases: list[Phase]
    limits: list[Limit]

    def add(self, phase: Phase, limit: Limit) -> None:
        self.phases.append(phase)
        self.limits.append(limit)

    def ratio(self, name: str) -> float | None:
        """calls/s of the service over transactions/s of the limit, for one RPC."""
        phase = next((p for p in self.phases if p.name == name), None)
        limit = next((lim for lim in self.limits if lim.name == name), None)
        if phase is None or limit is None or not limit.rate:
            return None
        return phase.rate / limit.rate


def report(
    rounds: list[Round],
    rush: Rush | None,
    callers: str,
    args: argparse.Namespace,
    speed_ms: tuple[float, float],
) -> None:
    print(
        f"\nmachine: {os.cpu_count()} CPUs, {platform.machine()},"
        f" Python {platform.python_version()};"
        f" server: {args.workers} worker process(es), pool {args.pool_size} each;"
        f" {args.concurrency} callers over {args.channels} gRPC channels;"
        f" {len(rounds)} round(s) of {args.calls} calls per RPC"
        f" ({args.confirm_calls} for ConfirmPayment)"
    )
    print(f"callers of Start and Confirm: {callers} (the rush and the webhook's run in Python)")
    print(
        f"CPU speed: a fixed loop took {speed_ms[0]:.0f} ms before the run and"
        f" {speed_ms[1]:.0f} ms after it (about {REFERENCE_SPEED_MS} ms on the machine of"
        " docs/benchmarks.md when its host is quiet; more means a busy or throttled host,"
        " and lower figures)"
    )
    head = f"{'':<24} {'calls':>6} {'errors':>6} {'calls/s':>8} {'p50 ms':>7} {'p95 ms':>7}"
    print(head + f" {'p99 ms':>7}   CPU ms per call by process (share of all CPUs busy)")
    names = [phase.name for phase in rounds[0].phases] if rounds else []
    for name in names:
        phase = merged_phase([p for r in rounds for p in r.phases if p.name == name])
        print(phase_line(phase))
        if split := phase.split(SPLIT_MARK):
            shares = " / ".join(f"{share:.0%}" for share in split)
            print(f"  server CPU by worker: {shares}")
        if phase.errors:
            print(f"  errors: {dict(phase.errors)}")
    print(f"\nlimit: the same SQL by pgbench, {args.concurrency} connections, prepared statements")
    print(f"{'':<24} {'txns':>6} {'':>6} {'txns/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for name in names:
        limit = merged_limit([lim for r in rounds for lim in r.limits if lim.name == name])
        if limit.failure:
            print(f"{limit.name:<24} FAILED: {limit.failure}")
            continue
        p50, p95, p99 = quantiles_ms(limit.latencies)
        print(
            f"{limit.name:<24} {limit.transactions:>6} {'':>6} {limit.rate:>8.1f} {p50:>7.1f}"
            f" {p95:>7.1f} {p99:>7.1f}"
        )
    print("\nservice / limit (calls/s over transactions/s): the median round, and each round's")
    if args.calls < MEANINGFUL_CALLS:
        print(f"  (a smoke run: under {MEANINGFUL_CALLS} calls per RPC these ratios mean little)")
    for name in names:
        ratios = [ratio for r in rounds if (ratio := r.ratio(name)) is not None]
        if ratios:
            each = " ".join(f"{ratio:.2f}" for ratio in ratios)
            print(f"  {name:<24} {statistics.median(ratios):.2f}   ({each})")
    if rush is not None:
        report_rush(rush)


def merged_phase(phases: list[Phase]) -> Phase:
    """The rounds' phases of one RPC as one: every call, the time and CPU they took together."""
    merged = Phase(phases[0].name)
    for phase in phases:
        merged.seconds += phase.seconds
        merged.latencies += phase.latencies
        merged.errors += phase.errors
        for group, seconds in phase.cpu_seconds.items():
            merged.cpu_seconds[group] = merged.cpu_seconds.get(group, 0.0) + seconds
    return merged


def merged_limit(limits: list[Limit]) -> Limit:
    """The rounds' pgbench runs of one transaction as one."""
    merged = Limit(limits[0].name)
    for limit in limits:
        merged.transactions += limit.transactions
        merged.seconds += limit.seconds
        merged.latencies += limit.latencies
        merged.failure = merged.failure or limit.failure
    return merged


def phase_line(phase: Phase) -> str:
    p50, p95, p99 = quantiles_ms(phase.latencies)
    errors = sum(phase.errors.values())
    cpu = " ".join(
        f"{name} {phase.cpu_ms_per_call(name):.2f}" for name in phase.cpu_seconds if "/" not in name
    )
    return (
        f"{phase.name:<24} {phase.calls:>6} {errors:>6} {phase.rate:>8.1f} {p50:>7.1f}"
        f" {p95:>7.1f} {p99:>7.1f}   {cpu} ({phase.cpu_busy():.0%})"
    )


def report_rush(rush: Rush) -> None:
    start, pay = rush.start, rush.pay
    print(f"\nticket rush: {rush.buyers} buyers, {rush.seats} seats")
    print(f"  answers: {dict(rush.answers)} in {start.seconds:.1f} s ({start.rate:.0f} calls/s)")
    print(f"  payments: {dict(rush.paid)} in {pay.seconds:.1f} s; errors {dict(pay.errors)}")
    print(f"  time to settle (first request to last payment answered): {rush.seconds:.1f} s")
    print(
        f"  database: {rush.registered} registrations, {rush.live_holds} live holds,"
        f" {rush.paid_reservations} paid reservations"
    )
    verdict = "OK: no tier oversold; every paid reservation has exactly one registration"
    print("  " + ("; ".join(rush.problems) if rush.problems else verdict))
