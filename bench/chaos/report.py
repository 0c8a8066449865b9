"""The chaos run's report: what was sent and answered, what was injected, what holds."""

from __future__ import annotations

from collections import Counter

from bench.chaos.clients import Tally
from bench.chaos.faults import FaultLog
from bench.chaos.invariants import Verdict


def report(
    *,
    buyers: int,
    tally: Tally,
    statuses: dict[str, int],
    log: FaultLog,
    verdicts: list[Verdict],
    waiting: list[str],
    times: tuple[float, float, float],
) -> bool:
    """Print the report; whether the run passed."""
    rushed, settling, whole = times
    calls = sum(tally.calls.values())
    callbacks = sum(tally.callbacks.values())
    print(
        f"\nchaos run: {whole:.0f} s ({rushed:.0f} s of rush and faults, {settling:.0f} s settling)"
    )
    print(f"buyers: {buyers}; their stories:")
    _counts(tally.stories)
    print(f"reservations, by status at the end: {statuses}")
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
    if waiting:
        print(f"NOT SETTLED in time: {'; '.join(waiting)}")
    if tally.unexpected:
        print("UNEXPECTED answers (no retry explains them):")
        _counts(tally.unexpected)
    print("invariants:")
    for verdict in verdicts:
        print(f"  {'OK  ' if verdict.holds else 'FAIL'} {verdict.name}: {verdict.seen}")
    passed = all(v.holds for v in verdicts) and not waiting and not tally.unexpected
    print("PASSED" if passed else "FAILED")
    return passed


def _counts(counter: Counter[str]) -> None:
    for what, count in sorted(counter.items(), key=lambda item: -item[1]):
        print(f"  {count:>6}  {what}")
