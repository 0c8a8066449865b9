"""The migrations build exactly the schema the code queries, and every rule the database keeps."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

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
