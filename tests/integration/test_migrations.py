"""The migrations build exactly the schema the code queries, and every rule the database keeps."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.postgres import blocking, connect, database_on, sql
from ticketing_service.adapters.db.migrations import alembic_config, upgrade_to_head
from ticketing_service.adapters.db.schema import metadata
from ticketing_service.adapters.db.urls import sqlalchemy_url


async def differences_from_the_schema(database_url: str) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


def test_the_migrated_database_matches_the_schema_the_code_queries(database_url: str) -> None:
    assert blocking(differences_from_the_schema(database_url)) == []


def run(database_url: str, statement: str, *params: object) -> None:
    sql(database_url, statement, *params)


def seed(database_url: str) -> None:
    run(
        database_url,
        "INSERT INTO ticketing_settings (event_id, mode, enabled) VALUES ('e', 'paid', true)",
    )
    run(
        database_url,
        "INSERT INTO tiers (event_id, tier_id, position, name, price_amount)"
        " VALUES ('e', 't', 0, 'T', 100)",
    )


def reservation(status: str = "pending_payment", amount: int = 100, user: str = "u") -> str:
    return (
        "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
        " currency_code, provider, success_url, cancel_url, expire_time)"
        f" VALUES ('{uuid.uuid4()}', 'e', 't', '{user}', '{status}', {amount}, 'KRW', 'portone',"
        " 's', 'c', now() + interval '10 minutes')"
    )


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (reservation(status="paid"), "ck_reservations_status"),
        (reservation(amount=-1), "ck_reservations_amount_non_negative"),
        (
            "INSERT INTO tiers (event_id, tier_id, position, name, price_amount)"
            " VALUES ('e', 'neg', 1, 'N', -5)",
            "ck_tiers_price_amount_non_negative",
        ),
        (
            "INSERT INTO ticketing_settings (event_id, mode, enabled) VALUES ('x', 'gift', true)",
            "ck_ticketing_settings_mode",
        ),
        (
            "INSERT INTO ticketing_settings (event_id, mode, enabled, currency_code)"
            " VALUES ('y', 'paid', true, 'krw')",
            "ck_ticketing_settings_currency_code",
        ),
    ],
)
def test_the_database_refuses_rows_that_break_a_rule(
    database_url: str, statement: str, constraint: str
) -> None:
    seed(database_url)
    with pytest.raises(asyncpg.CheckViolationError) as caught:
        run(database_url, statement)
    assert caught.value.constraint_name == constraint


def test_a_user_can_hold_only_one_live_reservation_per_event(database_url: str) -> None:
    seed(database_url)
    run(database_url, reservation())
    run(database_url, reservation(status="expired"))
    with pytest.raises(asyncpg.UniqueViolationError) as caught:
        run(database_url, reservation())
    assert caught.value.constraint_name == "uq_reservations_live_per_user_event"


def test_upgrading_from_0002_scopes_old_deliveries_and_keeps_each_mismatch_once(
    migrated_database: str,
) -> None:
    url = database_on(migrated_database, "ticketing_upgrade_0003")
    config = alembic_config(url)
    command.upgrade(config, "0002")
    seed(url)
    reservation_id = uuid.uuid4()
    run(
        url,
        "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
        " currency_code, provider, success_url, cancel_url, expire_time, checkout_id)"
        " VALUES ($1, 'e', 't', 'u', 'confirmed', 100, 'KRW', 'portone', 's', 'c', now(),"
        " 'chk')",
        reservation_id,
    )
    run(
        url,
        "INSERT INTO payments (payment_row_id, reservation_id, checkout_id, status, provider,"
        " amount, currency_code, provider_payment_id) VALUES ($1, $2, 'chk', 'paid',"
        " 'portone', 100, 'KRW', 'pay-1')",
        uuid.uuid4(),
        reservation_id,
    )
    run(
        url,
        "INSERT INTO webhook_deliveries (delivery_id, reservation_id, outcome)"
        " VALUES ('X', $1, 'CONFIRMED')",
        reservation_id,
    )
    for _ in range(2):  # one retried mismatch, recorded twice before 0003
        run(
            url,
            "INSERT INTO payment_mismatches (mismatch_id, reservation_id, checkout_id,"
            " provider_payment_id, provider, amount, currency_code)"
            " VALUES ($1, $2, 'chk', 'pay-2', 'portone', 99, 'KRW')",
            uuid.uuid4(),
            reservation_id,
        )

    command.upgrade(config, "head")

    payment = sql(url, "SELECT payment_id FROM reservations")
    deliveries = sql(
        url, "SELECT scheme, delivery_id, checkout_id, payment_id FROM webhook_deliveries"
    )
    mismatches = sql(url, "SELECT count(*) FROM payment_mismatches")
    assert payment == [("pay-1",)]
    assert deliveries == [("unscoped", "X", "chk", "pay-1")]
    assert mismatches == [(1,)]
    command.downgrade(config, "0002")
    command.upgrade(config, "head")


async def test_a_migration_that_cannot_get_its_lock_fails_instead_of_waiting(
    migrated_database: str,
) -> None:
    # A session holds the lock the migration run needs (it reads alembic_version); with the
    # lock timeout the run fails within it, rather than queueing every later query behind it.
    holder = await connect(migrated_database)
    try:
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(DBAPIError) as caught:
            await asyncio.to_thread(upgrade_to_head, migrated_database, 200)
        assert getattr(caught.value.orig, "sqlstate", None) == "55P03"  # lock_not_available
    finally:
        await holder.close()
    await asyncio.to_thread(upgrade_to_head, migrated_database, 200)  # free again: it runs
