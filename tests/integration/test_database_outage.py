"""Postgres going away answers UNAVAILABLE, and the running server recovers when it returns.

The test stops and restarts a Postgres of its own (never the session's shared one), as the
chaos run does: with the `pg_ctl` that ships inside the `pgserver` package, exactly as pgserver
itself starts it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import grpc
import pytest
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from bench.chaos.processes import RestartablePostgres, restartable_postgres
from tests.rich_errors import RichError, rich_error
from ticketing_service.adapters.db import migrations
from ticketing_service.adapters.db.pool import Database, PoolSettings
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork
from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.domain.errors import DatabaseUnavailable
from ticketing_service.entrypoints.grpc.server import start_server
from ticketing_service.service_layer.dependencies import Dependencies

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

# The pool's connect timeout is 2 s; an outage must be reported well within the call deadline.
CALL_SECONDS = 10.0
OUTAGE_ANSWER_SECONDS = 4.0
# The first call after the restart may meet a pooled connection the restart killed.
RECOVERY_ATTEMPTS = 3
UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")


@pytest.fixture
def disposable_postgres(tmp_path: Path) -> Iterator[RestartablePostgres]:
    """A fresh, migrated Postgres for this test only (the chaos run's); deleted afterwards."""
    with restartable_postgres(tmp_path) as postgres:
        migrations.upgrade_to_head(postgres.url)
        yield postgres


@pytest.fixture
async def outage_stub(disposable_postgres: RestartablePostgres) -> AsyncIterator[Stub]:
    """The real server on the disposable Postgres, with a short connect timeout."""
    database = Database(disposable_postgres.url, PoolSettings(connect_timeout_seconds=2))
    # Never called: these tests only touch settings.
    checkouts = HttpPaymentService("http://127.0.0.1:9", "unused", timeout_seconds=1.0)
    deps = Dependencies(uow=lambda: SqlUnitOfWork(database), payment_service=checkouts)
    running = await start_server(deps, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.TicketingServiceStub(channel)
    finally:
        await running.stop(0)
        await checkouts.aclose()
        await database.close()


def settings_update() -> pb.UpdateTicketingSettingsRequest:
    tier = settings_pb2.TierInput(tier_id="general", name="General", price_amount=10000)
    return pb.UpdateTicketingSettingsRequest(event_id="event-1", tiers=[tier])


GET = pb.GetTicketingSettingsRequest(event_id="event-1")


async def timed_failure(call: Awaitable[object]) -> tuple[RichError, float]:
    """The error a call fails with, and how long it took to answer."""
    began = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return rich_error(caught.value), time.monotonic() - began


async def test_a_database_outage_answers_unavailable_and_the_running_server_recovers(
    outage_stub: Stub, disposable_postgres: RestartablePostgres
) -> None:
    await outage_stub.UpdateTicketingSettings(settings_update(), timeout=CALL_SECONDS)

    await asyncio.to_thread(disposable_postgres.stop)
    read, read_seconds = await timed_failure(
        outage_stub.GetTicketingSettings(GET, timeout=CALL_SECONDS)
    )
    write, write_seconds = await timed_failure(
        outage_stub.UpdateTicketingSettings(settings_update(), timeout=CALL_SECONDS)
    )
    assert ((read.code, read.reason), (write.code, write.reason)) == (UNAVAILABLE, UNAVAILABLE)
    assert max(read_seconds, write_seconds) < OUTAGE_ANSWER_SECONDS

    await asyncio.to_thread(disposable_postgres.start)
    failures: list[RichError] = []
    for _ in range(RECOVERY_ATTEMPTS):
        try:
            recovered = await outage_stub.GetTicketingSettings(GET, timeout=CALL_SECONDS)
            break
        except grpc.aio.AioRpcError as error:
            failures.append(rich_error(error))
    else:
        pytest.fail(f"not recovered after {RECOVERY_ATTEMPTS} calls: {failures}")
    assert all((f.code, f.reason) == UNAVAILABLE for f in failures), failures
    assert [t.tier_id for t in recovered.settings.tiers] == ["general"]


async def test_a_transaction_that_waits_too_long_for_a_pooled_connection_is_unavailable(
    database_url: str,
) -> None:
    # One connection, held by a transaction that stays open: the next one waits for it, then
    # gives up with UNAVAILABLE instead of opening another connection or failing with INTERNAL.
    database = Database(database_url, PoolSettings(pool_size=1, pool_timeout_seconds=0.2))
    try:
        async with SqlUnitOfWork(database) as holding:
            await holding.settings.get("an-event")
            with pytest.raises(DatabaseUnavailable, match="stayed busy"):
                async with SqlUnitOfWork(database) as waiting:
                    await waiting.settings.get("an-event")
        async with SqlUnitOfWork(database) as after:  # returned: the pool serves again
            assert await after.settings.get("an-event") is None
    finally:
        await database.close()


async def test_a_database_that_does_not_exist_answers_unavailable(database_url: str) -> None:
    # A login the server refuses (here: no such database) is the database being unreachable
    # for this process, not a bug in the call.
    missing = urlsplit(database_url)._replace(path="/no_such_database").geturl()
    assert missing != database_url
    database = Database(missing, PoolSettings())
    try:
        with pytest.raises(DatabaseUnavailable, match="or has no such database"):
            async with SqlUnitOfWork(database) as uow:
                await uow.settings.get("an-event")
    finally:
        await database.close()
