"""Measure CancelEvent on an event with many confirmed registrations, and the refunds it owes.

    scripts/bench cancel-event [--registrations 2000] [--runs 3]

On Postgres (embedded in a temporary directory, or `DATABASE_URL`) migrated as `migrate` does,
each run seeds a fresh event with `--registrations` confirmed, paid registrations (half of their
seats folded into the tier, as the sweeper leaves them), each paid at the payment service fake.
Then, through the service's own use cases and background passes (as a `serve` replica runs
them): CancelEvent, the cancellation's batches until it is done, and the refund sender until
every refund succeeded at the fake. Figures go to stdout; the database is checked after each run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import timedelta

import asyncpg

from bench.stack import PAYMENT_TOKEN, database
from ticketing_service import bootstrap
from ticketing_service.config import Config
from ticketing_service.entrypoints import event_loop
from ticketing_service.entrypoints.dev.payment_service import (
    create_payment_service_app,
    running_payment_service,
    state_of,
)
from ticketing_service.entrypoints.dev.payment_state import PaymentServiceState
from ticketing_service.service_layer.refund_handlers import cancel_event, get_event_cancellation
from ticketing_service.service_layer.refund_worker import send_due_refunds

PRICE = 30000

_SEED_RESERVATIONS = (
    "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
    " currency_code, provider, success_url, cancel_url, expire_time, paid_time, payment_id,"
    " seat_folded) SELECT gen_random_uuid(), $1, 'general', 'user-' || i, 'confirmed', $2, 'KRW',"
    " 'portone', 'https://moim.example/s', 'https://moim.example/c', now(), now(), 'pay-' || i,"
    " i % 2 = 0 FROM generate_series(1, $3) AS i RETURNING reservation_id, payment_id"
)


async def seed(url: str, state: PaymentServiceState, event_id: str, registrations: int) -> None:
    """The event, its tier and its confirmed registrations, each paid at the fake."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            "INSERT INTO ticketing_settings (event_id, event_title, mode, provider, currency_code,"
            " enabled) VALUES ($1, 'Big night', 'paid', 'portone', 'KRW', true)",
            event_id,
        )
        await connection.execute(
            "INSERT INTO tiers (event_id, tier_id, position, name, price_amount, accepted_count)"
            " VALUES ($1, 'general', 0, 'General', $2, $3)",
            event_id,
            PRICE,
            registrations // 2,
        )
        rows = await connection.fetch(_SEED_RESERVATIONS, event_id, PRICE, registrations)
        checkouts = []
        for row in rows:
            reservation_id = str(row["reservation_id"])
            body = {"reservationId": reservation_id, "amount": PRICE, "currency": "KRW"}
            checkout, _ = state.open_checkout(f"reservation:{reservation_id}", body, None)
            state.mark_paid(checkout.checkout_id, payment_id=row["payment_id"])
            checkouts.append((reservation_id, checkout.checkout_id))
        await connection.executemany(
            "UPDATE reservations SET checkout_id = $2 WHERE reservation_id = $1::uuid", checkouts
        )
        await connection.execute(
            "INSERT INTO registrations (registration_id, reservation_id, event_id, tier_id,"
            " user_id, status) SELECT gen_random_uuid(), reservation_id, event_id, tier_id,"
            " user_id, 'accepted' FROM reservations WHERE event_id = $1",
            event_id,
        )
    finally:
        await connection.close()


async def measure(url: str, registrations: int, runs: int) -> None:
    app = create_payment_service_app(token=PAYMENT_TOKEN)
    state = state_of(app)
    async with running_payment_service(app) as payment_url:
        env = {
            "DATABASE_URL": url,
            "TICKET_PAYMENT_SERVICE_URL": payment_url,
            "TICKET_PAYMENT_SERVICE_TOKEN": PAYMENT_TOKEN,
        }
        config = Config.from_env(env)
        async with bootstrap.wired(config, url) as service:
            for run in range(1, runs + 1):
                lease = bootstrap.refund_lease(config)
                await one_run(url, state, service, lease, f"event-{run}", registrations, run)


async def one_run(
    url: str,
    state: PaymentServiceState,
    service: bootstrap.Service,
    lease: timedelta,
    event_id: str,
    registrations: int,
    run: int,
) -> None:
    await seed(url, state, event_id, registrations)
    began = time.perf_counter()
    await cancel_event(service.deps, event_id, None)
    answered = time.perf_counter()
    await bootstrap.cancel_events(service.deps)
    cancelled = time.perf_counter()
    sent = await send_due_refunds(service.deps, lease)
    refunded = time.perf_counter()
    progress = await get_event_cancellation(service.deps, event_id)
    expected = (True, registrations, registrations, 0, 0)
    found = (
        progress.done,
        progress.reservations_done,
        progress.refunds_succeeded,
        progress.refunds_pending,
        progress.refunds_failed,
    )
    if found != expected:
        raise SystemExit(f"run {run}: the cancellation ended as {progress}")
    print(
        f"run {run}: CancelEvent answered in {(answered - began) * 1000:.1f} ms;"
        f" its {registrations} registrations cancelled, each owing a full refund, in"
        f" {cancelled - answered:.2f} s ({registrations / (cancelled - answered):.0f}/s);"
        f" {sent} refunds sent and succeeded in {refunded - cancelled:.2f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench cancel-event", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--registrations", type=int, default=2000, help="per event (2000)")
    parser.add_argument(
        "--runs", type=int, default=3, help="events cancelled one after another (3)"
    )
    args = parser.parse_args(argv)
    with database() as url:
        bootstrap.migrate(Config.from_env({"DATABASE_URL": url}), url)
        event_loop.run(measure(url, args.registrations, args.runs))
    return 0
