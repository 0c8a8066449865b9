"""The one-off commands an operator runs against a deployment: prune-events and reconcile."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg

from ticketing_service import bootstrap
from ticketing_service.config import Config
from ticketing_service.domain.reconciliation import CheckoutAnswer
from ticketing_service.service_layer.events_handlers import PRUNE_BATCH_SIZE, prune_history
from ticketing_service.service_layer.reconciliation import (
    Reconciled,
    reconcile_due,
    reconcile_reservation,
    reconcile_since,
)

log = logging.getLogger("ticketing_service")

# `reconcile`, when the payment service could not be asked about some checkout: what it may
# have been paid is not settled yet, so a script (the restore runbook) knows to run it again.
# 1 and 2 are taken: a database that cannot be used, and a bad setting.
UNASKED_EXIT_CODE = 3

_DURATION = re.compile(r"([0-9]{1,7})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# As far back as `prune-events --older-than-days` reaches; 9999999d was out of Postgres's range.
_LONGEST = timedelta(days=99_999)


def duration(raw: str) -> timedelta:
    """`30m`, `2h`, `7d` (argparse type: a bad value is a usage error naming the option)."""
    match = _DURATION.fullmatch(raw.strip())
    span = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)]) if match else None
    if span is None or not timedelta(0) < span <= _LONGEST:
        raise argparse.ArgumentTypeError(
            f"must be a duration such as 30m, 2h or 7d, up to 99999d, got {raw!r}"
        )
    return span


@asynccontextmanager
async def _migrated_service(config: Config) -> AsyncIterator[bootstrap.Service]:
    """The wired service of a one-off command; SchemaNotReady unless its database was migrated
    for this version."""
    database_url = bootstrap.resolve_database_url(config)
    await bootstrap.require_schema(config, database_url)
    async with bootstrap.wired(config, database_url) as service:
        yield service


async def prune_events(
    config: Config, older_than_days: float, batch_size: int = PRUNE_BATCH_SIZE
) -> int:
    """Delete feed events and the other records kept only for a while, older than the cutoff,
    `batch_size` rows per transaction. A statement cut by the statement timeout is one line."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    async with _migrated_service(config) as service:
        try:
            pruned = await prune_history(service.deps, cutoff, batch_size)
        except asyncpg.QueryCanceledError as error:
            print(
                f"ticketing-service: Pruning stopped: {error} (TICKETING_DB_STATEMENT_TIMEOUT_MS"
                f" is {config.db_statement_timeout_ms} ms). What was deleted before stays"
                " deleted: run prune-events again, with a smaller --batch-size or a longer"
                " TICKETING_DB_STATEMENT_TIMEOUT_MS.",
                file=sys.stderr,
            )
            return 1
    counts = ", ".join(f"{count} {table}" for table, count in pruned.items())
    log.info("pruned what was created before %s: %s", cutoff.isoformat(), counts)
    return 0


async def reconcile(config: Config, reservation_id: str | None, since: timedelta | None) -> int:
    """Ask the payment service about one reservation, those made since, or those due now;
    UNASKED_EXIT_CODE when it could not be asked about some of their checkouts."""
    async with _migrated_service(config) as service:
        if reservation_id is not None:
            done = [await reconcile_reservation(service.deps, reservation_id)]
        elif since is not None:
            done = await reconcile_since(service.deps, since)
        else:
            done = await reconcile_due(service.deps)
    _report(done, "none unsettled since" if since is not None else "none due")
    unasked = sum(1 for found in done if found.answer is CheckoutAnswer.UNREACHABLE)
    if unasked:
        print(
            f"ticketing-service: the payment service could not be asked about {unasked} of "
            f"{counted(len(done), 'checkout')} (unreachable, above): run reconcile again.",
            file=sys.stderr,
        )
        return UNASKED_EXIT_CODE
    return 0


def _report(done: Sequence[Reconciled], none: str) -> None:
    for found in done:
        reservation = found.reservation
        answer = found.answer.value if found.answer else "no checkout"
        settled = f" -> {found.outcome.value}" if found.outcome else ""
        print(
            f"{reservation.reservation_id}  {reservation.status.value:<16}"
            f"  payment service: {answer}{settled}"
        )
    tally = Counter(found.answer.value if found.answer else "no checkout" for found in done)
    settled_count = sum(1 for found in done if found.outcome is not None)
    summary = ", ".join(f"{count} {answer}" for answer, count in sorted(tally.items()))
    print(
        f"asked about {counted(len(done), 'reservation')} ({summary or none});"
        f" {settled_count} settled"
    )


def counted(count: int, noun: str) -> str:
    """`1 reservation`, `2 reservations`, `0 reservations`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
