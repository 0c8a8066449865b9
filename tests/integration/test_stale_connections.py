"""A pooled connection that died while idle costs no failed call: it is swapped, not reported.

The pool does not pre-ping connections (a round trip per transaction); a transaction whose
first statement meets a dead connection takes another one instead. The control kills the
pooled connections' backends, as a Postgres restart or a cut idle connection would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

GET = pb.GetTicketingSettingsRequest(event_id="event-1")


def settings_update(name: str) -> pb.UpdateTicketingSettingsRequest:
    tier = settings_pb2.TierInput(tier_id="general", name=name, price_amount=10000)
    return pb.UpdateTicketingSettingsRequest(event_id="event-1", tiers=[tier])


def kill_every_other_backend(database_url: str) -> int:
    """Terminate every other connection to the test database; return how many."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


async def test_reads_and_writes_succeed_on_the_first_call_after_pooled_connections_died(
    stub: Stub, database_url: str
) -> None:
    await stub.UpdateTicketingSettings(settings_update("General"))
    await stub.GetTicketingSettings(GET)

    assert kill_every_other_backend(database_url) >= 1
    read = await stub.GetTicketingSettings(GET)
    kill_every_other_backend(database_url)
    written = await stub.UpdateTicketingSettings(settings_update("Renamed"))

    assert [t.name for t in read.settings.tiers] == ["General"]
    assert [t.name for t in written.settings.tiers] == ["Renamed"]
