"""A pooled connection that died while idle costs no failed call: it is swapped, not reported.

The pool does not pre-ping connections (a round trip per transaction); a transaction whose
first statement meets a dead connection takes another one instead. The control kills the
pooled connections' backends, as a Postgres restart or a cut idle connection would. A connection
that dies in the middle of a transaction cannot be swapped: that call answers UNAVAILABLE.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import psycopg
import pytest
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from ticketing_service.adapters.db.pool import Connection, Database, PoolSettings
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork
from ticketing_service.domain.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

GET = pb.GetTicketingSettingsRequest(event_id="event-1")


def settings_update(name: str) -> pb.UpdateTicketingSettingsRequest:
    tier = settings_pb2.TierInput(tier_id="general", name=name, price_amount=10000)
    return pb.UpdateTicketingSettingsRequest(event_id="event-1", tiers=[tier])


def kill_every_other_backend(database_url: str) -> int:
    """Terminate every other connection to the test database, waiting (up to 10 s) until each
    backend has exited; return how many."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert all(terminated for (terminated,) in rows)
    return len(rows)


def cut(connection: Connection) -> None:
    """Shut the connection's socket down, as a network that drops an idle connection would."""
    with socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


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


async def test_a_connection_lost_in_the_middle_of_a_transaction_is_unavailable(
    database_url: str,
) -> None:
    # Past its first round trip a transaction cannot be retried elsewhere: whatever the driver
    # raises for the closed connection must still answer UNAVAILABLE, never INTERNAL.
    database = Database(database_url, PoolSettings())

    async def read_across_the_loss() -> None:
        async with SqlUnitOfWork(database) as uow:
            await uow.settings.get("an-event")
            assert kill_every_other_backend(database_url) >= 1
            await uow.settings.get("an-event")

    try:
        with pytest.raises(DatabaseUnavailable):
            await read_across_the_loss()
        async with SqlUnitOfWork(database) as after:  # the pool opens a new connection
            assert await after.settings.get("an-event") is None
    finally:
        await database.close()


async def test_a_connection_cut_while_idle_is_swapped_on_the_first_round_trip(
    database_url: str,
) -> None:
    database = Database(database_url, PoolSettings())
    try:
        idle = await database.acquire()
        await database.release(idle)
        cut(idle)
        async with SqlUnitOfWork(database) as uow:
            assert await uow.settings.get("an-event") is None
        assert idle.closed  # noticed on its first round trip, and discarded
        assert database.usage()[0] == 0
    finally:
        await database.close()
