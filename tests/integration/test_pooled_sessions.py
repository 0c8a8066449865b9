"""No session state leaks from one transaction to the next use of its pooled connection.

The service's statements set nothing in the session and take only transaction-scoped locks. If
a transaction ever sends one that may change its session, the pool closes that connection
instead of lending it again (`transaction.Positional.changes_session`), so the next transaction
runs on a fresh session. Each case changes the session in a committed transaction on a pool of
one connection, then looks for the change from the next transaction. The control: transactions
that change nothing, the service's own among them, give the next one the very same connection
(the same backend), which is how a change would be seen if the pool lent the connection again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.flows import configure_event, hold, payment_for
from ticketing_service.adapters.db.pool import Database, PoolSettings
from ticketing_service.adapters.db.transaction import Transaction

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

# What a transaction does to its session, and a query that reads whether it is still there.
SESSION_CHANGES = {
    "SET": (
        "SET application_name = 'leaked'",
        "SELECT current_setting('application_name') = 'leaked' AS seen",
    ),
    "set_config, not local": (
        "SELECT set_config('application_name', 'leaked', false)",
        "SELECT current_setting('application_name') = 'leaked' AS seen",
    ),
    "temporary table": (
        "CREATE TEMPORARY TABLE leaked (n int)",
        "SELECT to_regclass('pg_temp.leaked') IS NOT NULL AS seen",
    ),
    "session advisory lock": (
        "SELECT pg_advisory_lock(4242)",
        "SELECT count(*) > 0 AS seen FROM pg_locks"
        " WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
    ),
    "LISTEN": ("LISTEN leaked", "SELECT count(*) > 0 AS seen FROM pg_listening_channels()"),
}
BACKEND = "SELECT pg_backend_pid() AS pid"


async def committed(database: Database, *statements: str) -> int:
    """Run the statements in one committed transaction; the backend that ran them."""
    tx = Transaction(database)
    await tx.open()
    try:
        for statement in statements:
            await tx.one(statement)
        row = await tx.one(BACKEND)
        await tx.commit()
    finally:
        await tx.close()
    assert row is not None
    return int(row["pid"])


async def seen_in_next_transaction(database: Database, probe: str) -> tuple[bool, int]:
    tx = Transaction(database)
    await tx.open()
    try:
        seen = await tx.one(probe)
        backend = await tx.one(BACKEND)
    finally:
        await tx.close()
    assert seen is not None
    assert backend is not None
    return bool(seen["seen"]), int(backend["pid"])


@pytest.mark.parametrize("kind", sorted(SESSION_CHANGES))
async def test_a_session_change_is_not_seen_by_the_next_transaction(
    database_url: str, kind: str
) -> None:
    change, probe = SESSION_CHANGES[kind]
    database = Database(database_url, PoolSettings(pool_size=1))
    try:
        changed_on = await committed(database, change)
        seen, next_on = await seen_in_next_transaction(database, probe)
    finally:
        await database.close()
    assert not seen
    assert next_on != changed_on


async def test_a_transaction_that_changes_nothing_lends_its_connection_again(
    database_url: str,
) -> None:
    database = Database(database_url, PoolSettings(pool_size=1))
    try:
        first = await committed(database, "SELECT pg_advisory_xact_lock(4242)")
        _, second = await seen_in_next_transaction(database, "SELECT false AS seen")
    finally:
        await database.close()
    assert second == first


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The service's pool, of one connection: its transactions run on it one after another."""
    database = Database(database_url, PoolSettings(pool_size=1, lock_timeout_ms=2000))
    yield database
    await database.close()


async def backend_of_the_pool(database: Database) -> int:
    return await committed(database)


async def test_the_services_own_transactions_lend_their_connection_again(
    stub: Stub, database: Database
) -> None:
    first = await backend_of_the_pool(database)
    await configure_event(stub)
    held = await hold(stub, "user-1")
    await stub.ConfirmPayment(payment_for(held, delivery_id="delivery-1"))
    await stub.GetReservation(pb.GetReservationRequest(reservation_id=held.reservation_id))
    await stub.ListRegistrationEvents(pb.ListRegistrationEventsRequest())
    assert await backend_of_the_pool(database) == first
