"""The migrations build exactly the schema the code queries, and every rule the database keeps."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from tests.end_to_end.serving import our_line, run_command
from tests.postgres import blocking, connect, database_on, lock_waiters, open_transaction, sql
from ticketing_service.adapters.db.migrations import (
    MIGRATION_LOCK_KEY,
    alembic_config,
    schema_engine,
    upgrade_to_head,
)
from ticketing_service.adapters.db.schema import metadata
from ticketing_service.adapters.db.schema_revision import SCHEMA_REVISION


async def differences_from_the_schema(database_url: str) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    engine = schema_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(compare)
    finally:
        await engine.dispose()


def test_the_migrated_database_matches_the_schema_the_code_queries(database_url: str) -> None:
    assert blocking(differences_from_the_schema(database_url)) == []


# Port 9 (discard) has no listener on a test machine: a connection there is refused at once.
UNREACHABLE_DATABASE_URL = "postgresql://ticketing:secret@127.0.0.1:9/ticketing"


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


def test_upgrading_from_0007_counts_only_the_settling_payments_refunds_as_refunded(
    migrated_database: str,
) -> None:
    url = database_on(migrated_database, "ticketing_upgrade_0008")
    config = alembic_config(url)
    command.upgrade(config, "0007")
    seed(url)
    reservation_id = uuid.uuid4()
    run(
        url,
        "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
        " currency_code, provider, success_url, cancel_url, expire_time, checkout_id,"
        " payment_id, refunded_amount) VALUES ($1, 'e', 't', 'u', 'confirmed', 100, 'KRW',"
        " 'portone', 's', 'c', now(), 'chk', 'pay-1', 130)",
        reservation_id,
    )
    # 30 of the seat's payment, and 100 of a duplicate: 0007 counted both.
    for payment_id, amount in (("pay-1", 30), ("pay-2", 100)):
        run(
            url,
            "INSERT INTO refunds (refund_id, reservation_id, payment_id, checkout_id, amount,"
            " currency_code, reason, status, next_attempt_time) VALUES ($1, $2, $3, 'chk', $4,"
            " 'KRW', 'goodwill', 'succeeded', now())",
            uuid.uuid4(),
            reservation_id,
            payment_id,
            amount,
        )

    command.upgrade(config, "head")

    assert sql(url, "SELECT refunded_amount FROM reservations") == [(30,)]


async def test_a_migration_that_cannot_get_its_lock_fails_in_one_line_instead_of_waiting(
    migrated_database: str, tmp_path: Path
) -> None:
    # A session holds the lock the migration run needs (it reads alembic_version); with the
    # lock timeout the run fails within it, rather than queueing every later query behind it.
    migrate = partial(run_command, tmp_path, "migrate", DATABASE_URL=migrated_database)
    holder = await connect(migrated_database)
    try:
        await holder.execute("BEGIN")
        await holder.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        refused = await asyncio.to_thread(migrate, TICKETING_DB_LOCK_TIMEOUT_MS="200")
    finally:
        await holder.close()
    assert refused.returncode == 1
    assert our_line(refused) == (
        "ticketing-service: A migration could not get its lock within 200 ms"
        " (TICKETING_DB_LOCK_TIMEOUT_MS) and nothing was applied: run migrate again."
    )
    await asyncio.to_thread(upgrade_to_head, migrated_database, 200)  # free again: it runs


async def test_two_migrates_started_together_on_a_fresh_database_both_succeed(
    migrated_database: str, tmp_path: Path
) -> None:
    # Replicas starting together each migrate (`serve` does by default). Both created the
    # first tables at once: one failed, 3 times in 4, with a traceback (IntegrityError on
    # pg_type_typname_nsp_index). Now the second waits for the first, then has nothing to do.
    #
    # To start both at the same moment every time: creating a table takes a lock on its schema
    # that dropping the schema holds. A session drops `public` (and will undo it) while both
    # commands start, and lets them go once both wait for a lock (of the schema, or the
    # second for the first, with the fix).
    migrate = partial(run_command, tmp_path, "migrate", TICKETING_DB_LOCK_TIMEOUT_MS="60000")
    for round_ in range(3):
        url = database_on(migrated_database, f"ticketing_two_migrates_{round_}")
        async with open_transaction(url) as gate:
            await gate.execute("DROP SCHEMA public")
            both = [asyncio.to_thread(migrate, DATABASE_URL=url) for _ in range(2)]
            results = asyncio.gather(*both)
            async with asyncio.timeout(30):  # polled: no event reports Postgres's lock waits
                while await asyncio.to_thread(lock_waiters, url) < 2:
                    assert not results.done(), [r.stderr for r in results.result()]
                    await asyncio.sleep(0.05)
        for result in await results:
            assert result.returncode == 0, result.stderr
            assert "Traceback" not in result.stderr
        assert sql(url, "SELECT version_num FROM alembic_version") == [(SCHEMA_REVISION,)]
        assert await differences_from_the_schema(url) == []


async def test_a_migrate_that_waits_for_another_past_the_lock_timeout_fails_in_one_line(
    migrated_database: str, tmp_path: Path
) -> None:
    url = database_on(migrated_database, "ticketing_migrating_elsewhere")
    async with open_transaction(url) as other:  # another process, migrating for long
        await other.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", MIGRATION_LOCK_KEY
        )
        refused = await asyncio.to_thread(
            run_command, tmp_path, "migrate", DATABASE_URL=url, TICKETING_DB_LOCK_TIMEOUT_MS="200"
        )
    assert refused.returncode == 1
    assert our_line(refused) == (
        "ticketing-service: Another process was migrating this database and did not finish"
        " within 200 ms (TICKETING_DB_LOCK_TIMEOUT_MS); nothing was applied: run migrate again."
    )
    assert sql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]


def test_the_revision_every_command_checks_for_is_the_last_migration() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("postgresql://localhost/unused"))
    revisions = [script.revision for script in scripts.walk_revisions()][::-1]
    # Numbered in the order they apply, which is how a schema is told older or newer.
    assert all(re.fullmatch(r"\d{4}", revision) for revision in revisions)
    assert revisions == sorted(revisions)
    assert scripts.get_current_head() == SCHEMA_REVISION == revisions[-1]


# Each command that does not migrate, against a database never migrated or left a migration
# behind: one line saying what to do, and the database untouched.
@pytest.mark.parametrize(
    ("argv", "revision", "says"),
    [
        (("serve", "--no-migrate", "--listen", "127.0.0.1:0"), None, "has no schema yet"),
        (
            ("serve", "--no-migrate", "--workers", "2", "--listen", "127.0.0.1:0"),
            "0006",
            f"is at revision 0006; this version needs {SCHEMA_REVISION}",
        ),
        (("prune-events", "--older-than-days", "30"), "0006", "is at revision 0006"),
        (("reconcile",), None, "has no schema yet"),
    ],
)
def test_a_command_that_does_not_migrate_refuses_a_schema_older_than_its_own(
    migrated_database: str, tmp_path: Path, argv: tuple[str, ...], revision: str | None, says: str
) -> None:
    url = database_on(migrated_database, "ticketing_behind")
    if revision is not None:
        command.upgrade(alembic_config(url), revision)
    result = run_command(tmp_path, *argv, DATABASE_URL=url)
    assert result.returncode == 1
    line = our_line(result)
    assert says in line
    assert line.endswith("run `ticketing-service migrate` first.")
    if revision is None:  # nothing was created
        assert sql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    else:
        assert sql(url, "SELECT version_num FROM alembic_version") == [(revision,)]


def test_a_schema_a_newer_release_migrated_is_served_but_not_migrated(
    migrated_database: str, tmp_path: Path
) -> None:
    url = database_on(migrated_database, "ticketing_ahead")
    upgrade_to_head(url)
    run(url, "UPDATE alembic_version SET version_num = '0099'")
    refused = run_command(tmp_path, "migrate", DATABASE_URL=url)
    assert refused.returncode == 1
    line = our_line(refused)
    assert "Cannot migrate: Can't locate revision identified by '0099'." in line
    assert line.endswith("this one still serves on it with `serve --no-migrate`.")
    # Expand, then contract: this version still serves on the newer schema.
    served = run_command(tmp_path, "reconcile", DATABASE_URL=url)
    assert served.returncode == 0, served.stderr
    assert served.stdout.endswith("asked about 0 reservations (none due); 0 settled\n")
    assert sql(url, "SELECT version_num FROM alembic_version") == [("0099",)]


@pytest.mark.parametrize(
    "argv", [("migrate",), ("prune-events", "--older-than-days", "30"), ("reconcile",)]
)
def test_a_command_whose_database_cannot_be_reached_says_so_in_one_line(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    result = run_command(tmp_path, *argv, DATABASE_URL=UNREACHABLE_DATABASE_URL)
    assert result.returncode == 1
    line = our_line(result)
    assert line.startswith("ticketing-service: The database cannot be reached right now;")
    assert "Connect" in line or "Connection refused" in line  # and why


@pytest.mark.parametrize("argv", [("migrate",), ("reconcile",)])
def test_a_command_whose_database_never_answers_gives_up_at_the_connect_timeout(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    # A listening socket nobody accepts from: the connection is made, and nothing is said.
    # `migrate` waited asyncpg's own 60 s there (every other command: 5 s), then printed the
    # reason as "()", a timeout's text being empty.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        url = f"postgresql://ticketing:secret@127.0.0.1:{port}/ticketing"
        result = run_command(tmp_path, *argv, DATABASE_URL=url)
    assert result.returncode == 1
    assert our_line(result) == (
        "ticketing-service: The database cannot be reached right now; retry shortly. (TimeoutError)"
    )


@pytest.mark.parametrize("argv", [("migrate",), ("reconcile",)])
@pytest.mark.parametrize("who", ["no_such_database", "no_such_role"])
def test_a_refused_login_or_a_missing_database_is_one_line_naming_it(
    migrated_database: str, tmp_path: Path, argv: tuple[str, ...], who: str
) -> None:
    # `migrate` printed SQLAlchemy's wrapper and its link to a help page; both said to retry.
    parts = urlsplit(migrated_database)
    url = (
        parts._replace(path="/no_such_database").geturl()
        if who == "no_such_database"
        else parts._replace(netloc=f"no_such_role:@{parts.hostname or ''}").geturl()
    )
    result = run_command(tmp_path, *argv, DATABASE_URL=url)
    assert result.returncode == 1
    line = our_line(result)
    assert line.startswith(
        "ticketing-service: The database refused the service's login, or has no such database:"
    )
    assert who.replace("_", " ").split()[-1] in line  # Postgres's own words: database or role
    assert "sqlalche.me" not in result.stderr


def test_a_migration_postgres_refuses_is_one_line_and_applies_nothing(
    migrated_database: str, tmp_path: Path
) -> None:
    # A partial restore: a table the first migration creates is there, without the version.
    url = database_on(migrated_database, "ticketing_half_restored")
    run(url, "CREATE TABLE payments (id int)")
    result = run_command(tmp_path, "migrate", DATABASE_URL=url)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert our_line(result).startswith(
        "ticketing-service: Migrating failed, and nothing was applied:"
    )
    assert 'relation "payments" already exists' in our_line(result)
    assert sql(url, "SELECT to_regclass('reservations') IS NULL") == [(True,)]


def test_migrate_reads_the_url_s_parameters_as_every_other_command_does(
    migrated_database: str, tmp_path: Path
) -> None:
    # Managed Postgres wants `?sslmode=require`. SQLAlchemy's dialect passed each parameter to
    # asyncpg.connect as a keyword it does not take: "unexpected keyword argument 'sslmode'".
    url = database_on(migrated_database, "ticketing_url_parameters")
    joined = "&" if "?" in url else "?"
    with_parameters = f"{url}{joined}sslmode=disable&application_name=ticketing-migrate"
    migrated = run_command(tmp_path, "migrate", DATABASE_URL=with_parameters)
    assert migrated.returncode == 0, migrated.stderr
    assert sql(url, "SELECT version_num FROM alembic_version") == [(SCHEMA_REVISION,)]
    served = run_command(tmp_path, "reconcile", DATABASE_URL=with_parameters)
    assert served.returncode == 0, served.stderr


@pytest.mark.parametrize("argv", [("migrate",), ("serve",), ("serve", "--no-migrate")])
def test_a_database_url_asyncpg_would_not_take_is_one_line_before_anything_starts(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    url = "postgresql://ticketing:hunter2@127.0.0.1:99999/ticketing"  # a traceback before
    result = run_command(tmp_path, *argv, DATABASE_URL=url)
    assert result.returncode == 2
    line = our_line(result)
    assert line.endswith("percent-encode it, e.g. # as %23).")
    assert "a port in it is not a number up to 65535" in line
    assert "hunter2" not in result.stderr
