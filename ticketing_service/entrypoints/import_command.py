"""`ticketing-service import-moim`: bring in the original implementation's rows, print a report.

Exit status: 0 when every event was imported (rows it could not map are listed, not fatal);
1 when the source or the service's database cannot be used, or when an event failed (the
others are imported; run it again); 2 on bad arguments; 130 when stopped by Ctrl-C, 143 by
SIGTERM. Each event's block is printed once its transaction has ended: a stopped run has
printed every event it imported, and no other was written (the import is idempotent: run it
again for the rest).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

from ticketing_service import bootstrap
from ticketing_service.config import Config
from ticketing_service.domain.moim_plan import EventPlan
from ticketing_service.domain.reservations import ReservationStatus
from ticketing_service.service_layer.moim_import import (
    EventOutcome,
    ImportReport,
    SourceUnreadable,
    TargetUnavailable,
    Written,
    import_moim,
)

COMMAND = "import-moim"
_DRY_RUN = "dry run: each event is written and rolled back; nothing is kept"
# What each planned status is called in the report, in report order, and what it means.
_KINDS = (
    (ReservationStatus.CONFIRMED, "registrations", ""),
    (
        ReservationStatus.PAID_UNFULFILLED,
        "paid without a seat",
        " (paid_unfulfilled: a refund is due)",
    ),
    (ReservationStatus.PENDING_PAYMENT, "live holds", ""),
    (
        ReservationStatus.EXPIRED,
        "ended holds",
        " (expired: a late payment gets a seat if one is free)",
    ),
    (ReservationStatus.CANCELLED, "cancelled holds", ""),
)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the subcommand to the CLI's subparsers."""
    parser = commands.add_parser(
        COMMAND,
        help="bring in the settings, registrations and holds of Moim's own paid ticketing",
    )
    parser.add_argument(
        "--source-database-url",
        required=True,
        help="postgresql:// URL of Moim's database (read only)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write each event in a transaction that is rolled back: report, change nothing",
    )


async def run(config: Config, source_url: str, dry_run: bool, out: TextIO = sys.stdout) -> int:
    """Import into the service's database (DATABASE_URL) and print the report; ConfigError,
    before any database is opened, when `source_url` is no Postgres URL."""
    bootstrap.check_source_database_url(source_url)
    database_url = bootstrap.resolve_database_url(config)

    def write(lines: Iterable[str]) -> None:
        out.writelines(line + "\n" for line in lines)
        out.flush()  # an event's block is out before the next event is begun

    try:
        async with bootstrap.moim_import(config, database_url, source_url) as ports:
            report = await import_moim(
                ports,
                dry_run=dry_run,
                imported=lambda outcome: write(_event_block(outcome, ports.auto_refund)),
                # Once both databases could be used: a run that cannot start says only why.
                ready=lambda: write([_DRY_RUN] if dry_run else []),
            )
    except (SourceUnreadable, TargetUnavailable) as error:
        print(f"ticketing-service {COMMAND}: {error}", file=sys.stderr)
        return 1
    write([_total(report)])
    return 1 if any(o.failure for o in report.outcomes) else 0


def _event_block(outcome: EventOutcome, auto_refund: bool) -> Iterator[str]:
    # Quoted as JSON: a newline or a control character in a title cannot fake a report line.
    yield f"event {outcome.event_id} {json.dumps(outcome.title, ensure_ascii=False)}"
    if outcome.failure is not None:
        yield f"  FAILED, nothing of it was written (run the import again): {outcome.failure}"
        return
    plan, written = outcome.plan, outcome.written
    assert plan is not None, "a plan is made for every event that did not fail"
    assert written is not None, "and written"
    if plan.settings is not None:
        yield from _brought_in(plan, written)
    if plan.count(ReservationStatus.PAID_UNFULFILLED):
        yield _refunds(plan, written, auto_refund)
    for tier in written.over_capacity:
        yield (
            f"  OVER CAPACITY: tier {json.dumps(tier.name, ensure_ascii=False)} ({tier.tier_id})"
            f" of event {outcome.event_id}: {tier.taken} seats taken, capacity {tier.capacity}"
            " (nothing is taken back; no new seat is sold until enough are given up)"
        )
    problems = (*plan.problems, *written.kept_otherwise)
    if problems:
        yield f"  not mapped ({len(problems)}):"
        yield from (f"    {p.subject} {p.detail}" for p in problems)


def _brought_in(plan: EventPlan, written: Written) -> Iterator[str]:
    settings = plan.settings
    assert settings is not None, "checked by the caller"
    state = "created" if written.settings_created else "already present (kept as they are)"
    flags = f"{settings.mode.value}, {'enabled' if settings.enabled else 'disabled'}"
    yield f"  settings: {state}; in Moim {flags}{', legacy' if settings.legacy else ''}"
    yield f"  tiers: {len(settings.tiers)} ({written.tiers_created} new)"
    for status, name, meaning in _KINDS:
        if count := plan.count(status):
            yield f"  {name}{meaning}: {count} ({written.changed[status]} new)"
    names = {t.tier_id: t.name for t in settings.tiers}
    seats = [f"{names[t]} {n}" for t, n in plan.external_seats.items() if n]
    if seats:
        changed = written.seat_counts_changed
        note = f"{changed} tiers changed" if changed else "unchanged"
        yield f"  seats taken by other RSVPs: {', '.join(seats)} ({note})"


def _refunds(plan: EventPlan, written: Written, auto_refund: bool) -> str:
    if not auto_refund:
        return (
            "  refunds: none owed, TICKETING_AUTO_REFUND is off: refund each paid_unfulfilled"
            " with RefundReservation"
        )
    owed = sum(1 for i in plan.settled if i.refund_owed)
    return (
        f"  refunds owed in full (paid_unfulfilled; the service sends them): {owed}"
        f" ({written.refunds_owed} new)"
    )


def _total(report: ImportReport) -> str:
    outcomes = report.outcomes
    plans = [o.plan for o in outcomes if o.plan is not None]
    failed = sum(1 for o in outcomes if o.failure is not None)
    imported = sum(1 for p in plans if p.settings is not None)
    parts = [
        f"{len(outcomes)} events: {imported} imported, {len(plans) - imported} not, {failed} failed"
    ]
    for status, name, _ in _KINDS[:4]:
        new = sum(o.written.changed[status] for o in outcomes if o.written is not None)
        parts.append(f"{sum(p.count(status) for p in plans)} {name} ({new} new)")
    parts.append(f"{sum(sum(p.external_seats.values()) for p in plans)} seats from other RSVPs")
    if report.auto_refund:
        owed = sum(1 for p in plans for i in p.settled if i.refund_owed)
        new = sum(o.written.refunds_owed for o in outcomes if o.written is not None)
        parts.append(f"{owed} refunds owed ({new} new)")
    else:
        parts.append("no refunds owed (TICKETING_AUTO_REFUND is off)")
    over = sum(len(o.written.over_capacity) for o in outcomes if o.written is not None)
    if over:
        parts.append(f"{over} tiers over capacity")
    unmapped = sum(len(p.problems) for p in plans) + sum(
        len(o.written.kept_otherwise) for o in outcomes if o.written is not None
    )
    return f"total: {'; '.join(parts)}; {unmapped} rows not mapped"
