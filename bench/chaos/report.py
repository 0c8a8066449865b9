"""The chaos run's report: what was sent and answered, what was injected, what holds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bench.chaos.clients import Tally
from bench.chaos.faults import FaultLog
from bench.chaos.invariants import Verdict


@dataclass(frozen=True)
class RushOutcome:
    """What the rush under faults did."""

    buyers: int
    events: list[str]
    tally: Tally
    log: FaultLog


@dataclass(frozen=True)
class Judged:
    """What the database said afterwards: what had not settled in time, the invariants, and
    the reservations by status."""

    waiting: list[str]
    verdicts: list[Verdict]
    statuses: dict[str, int]


def report(run: RushOutcome, judged: Judged, times: tuple[float, float, float]) -> bool:
    """Print the report; whether the run passed."""
    tally, log = run.tally, run.log
    rushed, settling, whole = times
    calls = sum(tally.calls.values())
    callbacks = sum(tally.callbacks.values())
    print(
        f"\nchaos run: {whole:.0f} s ({rushed:.0f} s of rush and faults, {settling:.0f} s settling)"
    )
    print(f"buyers: {run.buyers}; their stories:")
    _counts(tally.stories)
    print(f"reservations, by status at the end: {judged.statuses}")
    print(f"gRPC calls: {calls} attempts, by answer:")
    _counts(tally.calls)
    print(f"callbacks through the shim: {callbacks} attempts, by HTTP status:")
    _counts(tally.callbacks)
    print(
        f"faults injected ({len(log.lines)} + {log.hostile_opened} hostile sockets,"
        f" {log.hostile_cut} of them cut by the shim):"
    )
    for line in log.lines:
        print(f"  {line}")
    if judged.waiting:
        print(f"NOT SETTLED in time: {'; '.join(judged.waiting)}")
    if tally.unexpected:
        print("UNEXPECTED answers (no retry explains them):")
        _counts(tally.unexpected)
    print("invariants:")
    for verdict in judged.verdicts:
        print(f"  {'OK  ' if verdict.holds else 'FAIL'} {verdict.name}: {verdict.seen}")
    passed = all(v.holds for v in judged.verdicts) and not judged.waiting and not tally.unexpected
    print("PASSED" if passed else "FAILED")
    return passed


def _counts(counter: Counter[str]) -> None:
    for what, count in sorted(counter.items(), key=lambda item: -item[1]):
        print(f"  {count:>6}  {what}")
