"""A database of the original implementation (tests/fixtures/moim-pr177-schema.sql) with one row
for each case import-moim must handle, and the command run as a user runs it."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.postgres import connect, database_on, run
from tests.terminal import python_from_a_terminal
from ticketing_service.adapters.db.pool import Connection

SCHEMA = Path(__file__).resolve().parent.parent / "fixtures" / "moim-pr177-schema.sql"
SOURCE_DATABASE = "moim_source"
PUBLIC_BASE_URL = "https://moim.example"
COMMAND_TIMEOUT_SECONDS = 60


def uid(name: str) -> str:
    """A fixed UUID per name, so a test can name the rows it expects in the report."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"moim-fixture/{name}"))


CONCERT, LEGACY, EXTERNAL, NO_SETTINGS = (
    uid(n) for n in ("concert", "legacy", "external", "no-settings")
)
VIP, FLOOR, OPEN, GENERAL, OUTSIDE = (uid(n) for n in ("vip", "floor", "open", "gen", "out"))
VIP_PRICE, VIP_CAPACITY = 30000, 10


def user(n: int) -> str:
    return uid(f"user-{n}")


def rsvp_id(n: int) -> str:
    return uid(f"rsvp-{n}")


def reservation_id(name: str) -> str:
    return uid(f"reservation-{name}")


def payment_id(name: str) -> str:
    return uid(f"payment-{name}")


@dataclass(frozen=True)
class CommandResult:
    """What the command printed and how it exited."""

    code: int
    out: str
    err: str


async def create_database(database_url: str, name: str, schema: str | None = None) -> str:
    """A fresh database `name` beside `database_url`'s, with `schema` run in it; its URL."""
    url = database_on(database_url, name)
    if schema is not None:
        await run(url, schema)
    return url


async def filled_source(
    database_url: str, name: str = SOURCE_DATABASE, *, without_time_zones: bool = False
) -> str:
    """The original's database with every case in it; its URL. `without_time_zones`: an older
    schema, its times in `timestamp` columns (written as UTC)."""
    schema = SCHEMA.read_text()
    if without_time_zones:
        schema = schema.replace("timestamptz", "timestamp")
    url = await create_database(database_url, name, schema)
    connection = await connect(url)
    try:
        await connection.execute("SET TIME ZONE 'UTC'")
        await _fill(connection)
    finally:
        await connection.close()
    return url


async def start_import(target_url: str, *args: str, **env: str) -> asyncio.subprocess.Process:
    """`python -m ticketing_service import-moim ARGS` into `target_url`, started."""
    environment = os.environ | {
        "DATABASE_URL": target_url,
        "MOIM_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        **env,
    }
    return await asyncio.create_subprocess_exec(
        *python_from_a_terminal("-m", "ticketing_service", "import-moim", *args),
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def import_moim(target_url: str, *args: str, **env: str) -> CommandResult:
    """`python -m ticketing_service import-moim ARGS` into `target_url`, run to its end."""
    process = await start_import(target_url, *args, **env)
    async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
        out, err = await process.communicate()
    assert process.returncode is not None
    return CommandResult(process.returncode, out.decode(), err.decode())


async def _fill(c: Connection) -> None:
    await _events(c)
    await _concert(c)


async def _events(c: Connection) -> None:
    users = [(user(n),) for n in range(1, 14)] + [(uid("buyer-1"),), (uid("buyer-2"),)]
    await c.executemany("INSERT INTO users (id) VALUES ($1)", users)
    starts = "now() + interval '30 days'"
    await c.execute(
        "INSERT INTO events (id, title, starts_at, external_url) VALUES"
        f" ($1, 'Concert', {starts}, ''), ($2, 'Backfilled paid event', {starts}, ''),"
        f" ($3, 'Sold elsewhere', {starts}, 'https://tickets.example/e'),"
        f" ($4, 'Settings never saved', {starts}, '')",
        CONCERT,
        LEGACY,
        EXTERNAL,
        NO_SETTINGS,
    )
    await c.execute(
        "INSERT INTO event_ticketing_settings (event_id, mode, provider, provider_account_id,"
        " currency, enabled, legacy) VALUES"
        " ($1, 'paid', 'portone', 'portone_kakaopay', 'KRW', true, false),"
        " ($2, 'paid', 'portone', NULL, 'KRW', false, true),"  # the migration's backfill
        " ($3, 'external', 'portone', NULL, 'KRW', true, true)",
        CONCERT,
        LEGACY,
        EXTERNAL,
    )
    await c.execute(
        "INSERT INTO event_tiers (id, event_id, name, price_amount, capacity, opens_at,"
        " sort_order) VALUES"
        " ($1, $6, 'VIP', 30000, 10, now() - interval '1 day', 0),"
        " ($2, $6, 'Floor', NULL, 5, NULL, 1),"
        " ($3, $6, 'Open', -100, 0, NULL, 2),"
        " ($4, $7, 'General', 20000, 50, NULL, 0),"
        " ($5, $8, 'Outside', 10000, NULL, NULL, 0)",
        VIP,
        FLOOR,
        OPEN,
        GENERAL,
        OUTSIDE,
        CONCERT,
        LEGACY,
        EXTERNAL,
    )


async def _concert(c: Connection) -> None:
    """VIP: 3 registrations, 3 seats from other RSVPs and 2 live holds of 10 seats: 2 left."""
    rsvps = [
        (1, VIP, "accepted"),  # paid, with its payment: a registration
        (2, VIP, "accepted"),  # paid, no payment row: a seat, listed
        (3, VIP, "accepted"),  # paid twice: the first payment imported, the second listed
        (4, VIP, "waitlisted"),  # paid, then waitlisted: paid_unfulfilled, listed
        (5, VIP, "accepted"),  # two paid reservations: the second paid_unfulfilled, listed
        (6, FLOOR, "accepted"),  # a free tier's RSVP: a seat
        (7, VIP, "accepted"),  # from before paid ticketing: a seat
        (12, None, "accepted"),  # no tier on a multi-tier event: listed
        (13, VIP, "declined"),
    ]
    await c.executemany(
        "INSERT INTO rsvps (id, user_id, event_id, tier_id, status) VALUES ($1, $2, $3, $4, $5)",
        [(rsvp_id(n), user(n), CONCERT, tier, status) for n, tier, status in rsvps],
    )
    await c.execute(
        "INSERT INTO rsvps (id, event_id, tier_id, status, token) VALUES"
        " ($1, $2, $3, 'accepted', 'anonymous-token')",
        rsvp_id(99),
        CONCERT,
        VIP,
    )
    await _reservations(c)
    await _payments(c)


_ANSWERS = json.dumps(
    [{"questionId": "q1", "answer": "Seoul"}, {"questionId": "q2", "answer": " "}]
)


async def _reservations(c: Connection) -> None:
    paid = [("1", 1), ("2", 2), ("3", 3), ("4", 4), ("5a", 5), ("5b", 5)]
    await c.executemany(
        "INSERT INTO ticket_reservations (id, event_id, tier_id, user_id, rsvp_id, provider,"
        " provider_account_id, amount, currency, status, checkout_id, answers_snapshot,"
        " expires_at, created_at) VALUES ($1, $2, $3, $4, $5, 'portone', 'portone_kakaopay',"
        " 30000, 'KRW', 'confirmed', $6, $7, now() - interval '50 minutes',"
        " now() - interval '1 hour')",
        [
            (reservation_id(n), CONCERT, VIP, user(u), rsvp_id(u), f"chk_{n}", _ANSWERS)
            for n, u in paid
        ],
    )
    # Holds: (name, user, checkout, created minutes ago, expires in minutes); Moim's last 10
    # minutes (a longer one is cut to the service's hold length), here ending within them.
    holds = [
        ("8", 8, "chk_8", 5, 9),  # live
        ("9a", 9, "chk_9a", 8, 9),  # live, but the user's older one: ended, listed
        ("9b", 9, "chk_9b", 3, 10),  # the user's latest: live
        ("10", 10, None, 2, 10),  # live without a checkout: listed
        ("11", 11, "chk_11", 90, -80),  # ended long ago: imported expired
    ]
    await c.executemany(
        "INSERT INTO ticket_reservations (id, event_id, tier_id, user_id, provider,"
        " provider_account_id, amount, currency, status, checkout_id, expires_at, created_at)"
        " VALUES ($1, $2, $3, $4, 'portone', 'portone_kakaopay', 30000, 'KRW', 'pending_payment',"
        " $5, now() + make_interval(mins => $7), now() - make_interval(mins => $6))",
        [
            (reservation_id(n), CONCERT, VIP, user(u), checkout, ago, expires)
            for n, u, checkout, ago, expires in holds
        ],
    )


async def _payments(c: Connection) -> None:
    # (name, reservation, status, paid minutes ago)
    payments = [
        ("1", "1", "paid", 55),
        ("2", "2", "requires_payment", None),
        ("3a", "3", "paid", 56),
        ("3b", "3", "paid", 54),
        ("4", "4", "paid", 55),
        ("5a", "5a", "paid", 57),
        ("5b", "5b", "paid", 53),
        ("8", "8", "requires_payment", None),
    ]
    await c.executemany(
        "INSERT INTO ticket_payments (id, reservation_id, provider, provider_payment_id,"
        " provider_tx_id, checkout_id, status, amount, currency, raw_event, paid_at)"
        " VALUES ($1, $2, 'portone', $3, $4, $5, $6, 30000, 'KRW', $7,"
        " now() - make_interval(mins => $8))",
        [
            (
                payment_id(name),
                reservation_id(r),
                f"pay_{name}" if status == "paid" else None,
                f"tx_{name}" if status == "paid" else None,
                f"chk_{r}",
                status,
                json.dumps({"type": "ticket_payment.paid"}) if status == "paid" else None,
                minutes,
            )
            for name, r, status, minutes in payments
        ],
    )


async def add_event(c: Connection, name: str, *, capacity: int | None = 10) -> tuple[str, str]:
    """A new paid event of the original with one tier (VIP_PRICE); its id and its tier's."""
    event, tier = uid(f"{name}-event"), uid(f"{name}-tier")
    await c.execute(
        "INSERT INTO events (id, title, starts_at) VALUES ($1, $2, now() + interval '30 days')",
        event,
        name,
    )
    await c.execute(
        "INSERT INTO event_ticketing_settings (event_id, mode, provider, provider_account_id,"
        " currency) VALUES ($1, 'paid', 'portone', 'portone_kakaopay', 'KRW')",
        event,
    )
    await c.execute(
        "INSERT INTO event_tiers (id, event_id, name, price_amount, capacity)"
        " VALUES ($1, $2, 'Seat', $3, $4)",
        tier,
        event,
        VIP_PRICE,
        capacity,
    )
    return event, tier


@dataclass(frozen=True)
class Paid:
    """A paid RSVP of the original, named: its user, RSVP, confirmed reservation and payment."""

    name: str
    amount: int = VIP_PRICE
    currency: str = "KRW"
    # What the payment row says was paid (None: the reservation's amount and currency).
    paid_amount: int | None = None
    paid_currency: str | None = None
    rsvp_status: str = "accepted"
    # The RSVP the reservation names, by its owner's name (None: its own).
    rsvp_of: str | None = None
    answers: object = None


async def add_paid(c: Connection, event: str, tier: str, paid: Paid) -> str:
    """The rows of a paid RSVP at the event; the reservation's id."""
    user_id, reservation = uid(f"{paid.name}-user"), reservation_id(paid.name)
    await c.execute("INSERT INTO users (id) VALUES ($1)", user_id)
    await c.execute(
        "INSERT INTO rsvps (id, user_id, event_id, tier_id, status) VALUES ($1, $2, $3, $4, $5)",
        uid(f"{paid.name}-rsvp"),
        user_id,
        event,
        tier,
        paid.rsvp_status,
    )
    await c.execute(
        "INSERT INTO ticket_reservations (id, event_id, tier_id, user_id, rsvp_id, provider,"
        " amount, currency, status, checkout_id, answers_snapshot, expires_at, created_at)"
        " VALUES ($1, $2, $3, $4, $5, 'portone', $6, $7, 'confirmed', $8, $9,"
        " now() - interval '50 minutes', now() - interval '1 hour')",
        reservation,
        event,
        tier,
        user_id,
        uid(f"{paid.rsvp_of or paid.name}-rsvp"),
        paid.amount,
        paid.currency,
        f"chk_{paid.name}",
        None if paid.answers is None else json.dumps(paid.answers),
    )
    await c.execute(
        "INSERT INTO ticket_payments (id, reservation_id, provider, provider_payment_id,"
        " checkout_id, status, amount, currency, paid_at) VALUES ($1, $2, 'portone', $3, $4,"
        " 'paid', $5, $6, now() - interval '55 minutes')",
        payment_id(paid.name),
        reservation,
        f"pay_{paid.name}",
        f"chk_{paid.name}",
        paid.amount if paid.paid_amount is None else paid.paid_amount,
        paid.paid_currency or paid.currency,
    )
    return reservation


async def add_hold(c: Connection, event: str, tier: str, name: str, answers: object = None) -> str:
    """A user's live hold at the event, with its checkout and requires_payment row; its id."""
    reservation = await add_paid(c, event, tier, Paid(name, answers=answers))
    await c.execute(
        "UPDATE ticket_reservations SET status = 'pending_payment', rsvp_id = NULL,"
        " expires_at = now() + interval '10 minutes', created_at = now() WHERE id = $1",
        reservation,
    )
    await c.execute(
        "UPDATE ticket_payments SET status = 'requires_payment', provider_payment_id = NULL,"
        " paid_at = NULL WHERE reservation_id = $1",
        reservation,
    )
    await c.execute("DELETE FROM rsvps WHERE id = $1", uid(f"{name}-rsvp"))
    return reservation
