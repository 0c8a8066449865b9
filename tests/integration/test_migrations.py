"""The migrations build exactly the schema the code queries, and every rule the database keeps."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from ticketing_service.adapters.db.migrations import alembic_config
from ticketing_service.adapters.db.schema import metadata
from ticketing_service.adapters.db.urls import as_string, sqlalchemy_url


def test_the_migrated_database_matches_the_schema_the_code_queries(database_url: str) -> None:
    engine = create_engine(as_string(sqlalchemy_url(database_url)))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []


def run(database_url: str, statement: str, *params: object) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(statement, params)


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
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        run(database_url, statement)
    assert caught.value.diag.constraint_name == constraint


def test_a_user_can_hold_only_one_live_reservation_per_event(database_url: str) -> None:
    seed(database_url)
    run(database_url, reservation())
    run(database_url, reservation(status="expired"))
    with pytest.raises(psycopg.errors.UniqueViolation) as caught:
        run(database_url, reservation())
    assert caught.value.diag.constraint_name == "uq_reservations_live_per_user_event"


def scratch_database(database_url: str, name: str) -> str:
    """An empty database `name` on the test server (dropped first if a run left it)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # a constant name
        conn.execute(f"CREATE DATABASE {name}")
    return as_string(sqlalchemy_url(database_url).set(database=name))


def test_upgrading_from_0002_scopes_old_deliveries_and_keeps_each_mismatch_once(
    migrated_database: str,
) -> None:
    url = scratch_database(migrated_database, "ticketing_upgrade_0003")
    config = alembic_config(url)
    command.upgrade(config, "0002")
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    seed(plain)
    reservation_id = uuid.uuid4()
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
            " currency_code, provider, success_url, cancel_url, expire_time, checkout_id)"
            " VALUES (%s, 'e', 't', 'u', 'confirmed', 100, 'KRW', 'portone', 's', 'c', now(),"
            " 'chk')",
            (reservation_id,),
        )
        conn.execute(
            "INSERT INTO payments (payment_row_id, reservation_id, checkout_id, status, provider,"
            " amount, currency_code, provider_payment_id) VALUES (%s, %s, 'chk', 'paid',"
            " 'portone', 100, 'KRW', 'pay-1')",
            (uuid.uuid4(), reservation_id),
        )
        conn.execute(
            "INSERT INTO webhook_deliveries (delivery_id, reservation_id, outcome)"
            " VALUES ('X', %s, 'CONFIRMED')",
            (reservation_id,),
        )
        for _ in range(2):  # one retried mismatch, recorded twice before 0003
            conn.execute(
                "INSERT INTO payment_mismatches (mismatch_id, reservation_id, checkout_id,"
                " provider_payment_id, provider, amount, currency_code)"
                " VALUES (%s, %s, 'chk', 'pay-2', 'portone', 99, 'KRW')",
                (uuid.uuid4(), reservation_id),
            )

    command.upgrade(config, "head")

    with psycopg.connect(plain) as conn:
        payment = conn.execute("SELECT payment_id FROM reservations").fetchall()
        deliveries = conn.execute(
            "SELECT scheme, delivery_id, checkout_id, payment_id FROM webhook_deliveries"
        ).fetchall()
        mismatches = conn.execute("SELECT count(*) FROM payment_mismatches").fetchall()
    assert payment == [("pay-1",)]
    assert deliveries == [("unscoped", "X", "chk", "pay-1")]
    assert mismatches == [(1,)]
    command.downgrade(config, "0002")
    command.upgrade(config, "head")
