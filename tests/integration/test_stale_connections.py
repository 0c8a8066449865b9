"""A pooled connection that died while idle costs no failed call: it is swapped, not reported.

The pool does not pre-ping connections (a round trip per transaction); a transaction whose
first statement meets a dead connection takes another one instead. The control kills the
pooled connections' backends, as a Postgres restart or a cut idle connection would. A connection
that dies in the middle of a transaction cannot be swapped: that call answers UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.postgres import sql
from ticketing_service.adapters.db.pool import Database, PoolSettings
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
    """Terminate every other connection to the test database; return how many."""
    rows = sql(
        database_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
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


class _WatchedConnection(asyncpg.Connection):
    """A pool connection that tells the test when the server has closed it."""

    closed = asyncio.Event()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_termination_listener(lambda _: _WatchedConnection.closed.set())


async def test_a_connection_lost_in_the_middle_of_a_transaction_is_unavailable(
    database_url: str,
) -> None:
    # Past its first statement a transaction cannot be retried elsewhere: whatever the driver
    # raises for the closed connection must still answer UNAVAILABLE, never INTERNAL.
    _WatchedConnection.closed = asyncio.Event()
    database = Database(database_url, PoolSettings(), connection_class=_WatchedConnection)

    async def read_across_the_loss() -> None:
        async with SqlUnitOfWork(database) as uow:
            await uow.settings.get("an-event")
            assert kill_every_other_backend(database_url) >= 1
            async with asyncio.timeout(10):
                await _WatchedConnection.closed.wait()
            await uow.settings.get("an-event")

    try:
        with pytest.raises(DatabaseUnavailable):
            await read_across_the_loss()
        async with SqlUnitOfWork(database) as after:  # the pool opens a new connection
            assert await after.settings.get("an-event") is None
    finally:
        await database.close()


class _OutOfStepOnce(asyncpg.Connection):
    """A pool connection whose first BEGIN fails as asyncpg's protocol does when it is still
    reading the error a terminated backend sent before closing."""

    failed = False

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        if query == "BEGIN" and not _OutOfStepOnce.failed:
            _OutOfStepOnce.failed = True
            raise asyncpg.InternalClientError("cannot switch to state 15; another operation (2)")
        return await super().execute(query, *args, **kwargs)


async def test_a_connection_out_of_step_on_the_first_statement_is_swapped(
    database_url: str,
) -> None:
    _OutOfStepOnce.failed = False
    database = Database(database_url, PoolSettings(), connection_class=_OutOfStepOnce)
    try:
        async with SqlUnitOfWork(database) as uow:
            assert await uow.settings.get("an-event") is None
        assert _OutOfStepOnce.failed
        assert database.usage()[0] == 0  # the broken one was discarded, the other returned
    finally:
        await database.close()
