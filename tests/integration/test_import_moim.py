"""`ticketing-service import-moim` on a database of the original implementation, then the real
server on what it imported."""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC
from typing import TYPE_CHECKING

import grpc
import pytest
from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.conftest import PaymentService
from tests.integration.flows import payment_for
from tests.integration.moim_source import (
    COMMAND_TIMEOUT_SECONDS,
    CONCERT,
    EXTERNAL,
    FLOOR,
    LEGACY,
    NO_SETTINGS,
    OPEN,
    SCHEMA,
    VIP,
    VIP_CAPACITY,
    CommandResult,
    Paid,
    add_event,
    add_hold,
    add_paid,
    create_database,
    filled_source,
    import_moim,
    payment_id,
    reservation_id,
    rsvp_id,
    start_import,
    uid,
    user,
)
from tests.postgres import connect, lock_waiters, open_transaction
from tests.rich_errors import rich_error
from ticketing_service.__main__ import STOPPED
from ticketing_service.adapters.db.pool import Connection
from ticketing_service.adapters.db.schema import metadata
from ticketing_service.bootstrap import Service, cancel_events
from ticketing_service.domain.reconciliation import Step
from ticketing_service.domain.reservations import ConfirmOutcome
from ticketing_service.entrypoints.dev.payment_state import FakeCheckout
from ticketing_service.service_layer.reconciliation import reconcile_due
from ticketing_service.service_layer.refund_worker import send_due_refunds

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

# Every row the fixture holds that cannot be mapped as it stands, as the report must name it.
UNMAPPED = {
    "a paid RSVP without a payment row": reservation_id("2"),
    "a second paid payment": payment_id("3b"),
    "a paid reservation waitlisted": reservation_id("4"),
    "a user's second paid reservation": reservation_id("5b"),
    "an older live hold of a user": reservation_id("9a"),
    "a live hold without a checkout": reservation_id("10"),
    "a tier-less RSVP on a multi-tier event": rsvp_id(12),
    "an event without settings": NO_SETTINGS,
}


@pytest.fixture
async def source_url(database_url: str) -> str:
    """The original's database, filled with every case."""
    return await filled_source(database_url)


async def imported(database_url: str, source_url: str, *args: str) -> CommandResult:
    result = await import_moim(database_url, "--source-database-url", source_url, *args)
    assert result.code == 0, result.err
    return result


async def tables(database_url: str) -> dict[str, list[str]]:
    """Every row of every table of the service, as text."""
    connection = await connect(database_url)
    try:
        return {
            table.name: sorted(
                row[0]
                for row in await connection.fetch(f"SELECT to_jsonb(t)::text FROM {table.name} t")
            )
            for table in metadata.sorted_tables
        }
    finally:
        await connection.close()


@asynccontextmanager
async def moim_database(source_url: str) -> AsyncIterator[Connection]:
    """A connection to the original's database, to add the rows of a case."""
    connection = await connect(source_url)
    try:
        yield connection
    finally:
        await connection.close()


async def statuses(database_url: str, event_id: str) -> dict[str, str]:
    """The service's reservations at the event: id -> status."""
    connection = await connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT reservation_id::text AS id, status FROM reservations WHERE event_id = $1",
            event_id,
        )
        return {row["id"]: row["status"] for row in rows}
    finally:
        await connection.close()


async def settings_of(stub: Stub, event_id: str) -> settings_pb2.TicketingSettings:
    response = await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id=event_id))
    return response.settings


async def buy_vip(stub: Stub, user_id: str) -> pb.StartPaidRegistrationResponse:
    return await stub.StartPaidRegistration(
        pb.StartPaidRegistrationRequest(event_id=CONCERT, tier_id=VIP, user_id=user_id)
    )


async def test_imported_settings_keep_what_moim_stored(
    stub: Stub, database_url: str, source_url: str
) -> None:
    await imported(database_url, source_url)

    legacy = await settings_of(stub, LEGACY)
    assert (legacy.mode, legacy.enabled, legacy.legacy) == (
        settings_pb2.TICKETING_MODE_PAID,
        False,
        True,
    )
    external = await settings_of(stub, EXTERNAL)
    assert (external.mode, external.external_url) == (
        settings_pb2.TICKETING_MODE_EXTERNAL,
        "https://tickets.example/e",
    )
    concert = await settings_of(stub, CONCERT)
    assert (concert.mode, concert.enabled, concert.currency_code) == (
        settings_pb2.TICKETING_MODE_PAID,
        True,
        "KRW",
    )
    tiers = [(t.tier_id, t.price_amount, t.accepted_count) for t in concert.tiers]
    # VIP: 3 registrations and 3 seats Moim gave away; Floor: one free RSVP.
    assert tiers == [(VIP, 30000, 6), (FLOOR, 0, 1), (OPEN, 0, 0)]
    vip, _, open_tier = concert.tiers
    assert vip.capacity == VIP_CAPACITY
    assert not open_tier.HasField("capacity")
    assert vip.sale_end_time == concert.event_start_time
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.StartPaidRegistration(
            pb.StartPaidRegistrationRequest(event_id=LEGACY, tier_id=uid("gen"), user_id="someone")
        )
    assert rich_error(refused.value).reason == "PAID_TICKETING_NOT_ENABLED"


async def test_the_next_buyers_get_exactly_the_seats_left_then_sold_out(
    stub: Stub, database_url: str, source_url: str
) -> None:
    await imported(database_url, source_url)

    # 10 seats: 3 registrations, 3 other accepted RSVPs and 2 live holds leave 2.
    first = await buy_vip(stub, uid("buyer-1"))
    second = await buy_vip(stub, uid("buyer-2"))
    assert first.requires_payment
    assert second.requires_payment
    with pytest.raises(grpc.aio.AioRpcError) as sold_out:
        await buy_vip(stub, uid("buyer-3"))
    assert rich_error(sold_out.value).reason == "SOLD_OUT"


async def test_an_imported_user_is_found_and_an_imported_hold_is_confirmed_when_paid(
    stub: Stub, database_url: str, source_url: str
) -> None:
    await imported(database_url, source_url)

    found = await stub.FindReservation(pb.FindReservationRequest(event_id=CONCERT, user_id=user(1)))
    registered = found.reservation
    assert (registered.reservation_id, registered.status, registered.registration_id) == (
        reservation_id("1"),
        reservation_pb2.RESERVATION_STATUS_CONFIRMED,
        rsvp_id(1),
    )
    assert [(a.question_id, a.answer) for a in registered.answers] == [("q1", "Seoul")]

    held = await stub.GetReservation(pb.GetReservationRequest(reservation_id=reservation_id("8")))
    assert (held.reservation.status, held.reservation.checkout_id) == (
        reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT,
        "chk_8",
    )
    confirmed = await stub.ConfirmPayment(payment_for(held.reservation))
    assert confirmed.outcome == pb.CONFIRM_PAYMENT_OUTCOME_CONFIRMED
    assert confirmed.reservation.registration_id


async def test_a_second_import_changes_nothing(database_url: str, source_url: str) -> None:
    await imported(database_url, source_url)
    before = await tables(database_url)

    again = await imported(database_url, source_url)

    assert await tables(database_url) == before
    assert "settings: already present" in again.out
    assert "registrations: 3 (0 new)" in again.out


async def test_a_later_import_follows_what_moim_accepted_and_settled_meanwhile(
    stub: Stub, database_url: str, source_url: str
) -> None:
    await imported(database_url, source_url)
    moim = await connect(source_url)
    try:
        # During the dual run Moim takes a free RSVP, one attendee declines, and a held seat
        # is paid through Moim's own callback.
        newcomer = uid("newcomer")
        await moim.execute("INSERT INTO users (id) VALUES ($1)", newcomer)
        await moim.execute(
            "INSERT INTO rsvps (id, user_id, event_id, tier_id, status)"
            " VALUES ($1, $2, $3, $4, 'accepted'), ($5, $6, $3, $7, 'accepted')",
            rsvp_id(20),
            newcomer,
            CONCERT,
            FLOOR,
            rsvp_id(8),
            user(8),
            VIP,
        )
        await moim.execute("UPDATE rsvps SET status = 'declined' WHERE id = $1", rsvp_id(7))
        await moim.execute(
            "UPDATE ticket_reservations SET status = 'confirmed', rsvp_id = $2 WHERE id = $1",
            reservation_id("8"),
            rsvp_id(8),
        )
        await moim.execute(
            "UPDATE ticket_payments SET status = 'paid', provider_payment_id = 'pay_8',"
            " paid_at = now() WHERE reservation_id = $1",
            reservation_id("8"),
        )
    finally:
        await moim.close()

    again = await imported(database_url, source_url)

    assert "registrations: 4 (1 new)" in again.out
    assert "seats taken by other RSVPs: VIP 2, Floor 2 (2 tiers changed)" in again.out
    tiers = [(t.tier_id, t.accepted_count) for t in (await settings_of(stub, CONCERT)).tiers]
    assert tiers == [(VIP, 4 + 2), (FLOOR, 2), (OPEN, 0)]
    found = await stub.FindReservation(pb.FindReservationRequest(event_id=CONCERT, user_id=user(8)))
    assert (found.reservation.status, found.reservation.registration_id) == (
        reservation_pb2.RESERVATION_STATUS_CONFIRMED,
        rsvp_id(8),
    )


async def test_a_dry_run_changes_nothing_and_reports_what_the_import_then_does(
    database_url: str, source_url: str
) -> None:
    empty = await tables(database_url)

    dry = await imported(database_url, source_url, "--dry-run")

    assert await tables(database_url) == empty
    real = await imported(database_url, source_url)
    first_line, *rest = dry.out.splitlines()
    assert first_line.startswith("dry run")
    assert rest == real.out.splitlines()
    assert "registrations: 3 (3 new)" in real.out


async def test_the_report_names_every_row_it_could_not_map(
    database_url: str, source_url: str
) -> None:
    report = (await imported(database_url, source_url)).out

    missing = {case: row for case, row in UNMAPPED.items() if row not in report}
    assert missing == {}
    total = report.splitlines()[-1]
    assert total.startswith("total: 4 events: 3 imported, 1 not, 0 failed;")
    assert "4 seats from other RSVPs" in total  # VIP 3, Floor 1


async def import_while_locked(
    database_url: str, source_url: str, lock: str, *params: object
) -> CommandResult:
    """The import, run while another transaction holds `lock` past its 200 ms lock timeout."""
    async with open_transaction(database_url) as holder:
        await holder.execute(lock, *params)
        return await import_moim(
            database_url,
            "--source-database-url",
            source_url,
            TICKETING_DB_LOCK_TIMEOUT_MS="200",
        )


async def test_a_failing_event_is_reported_and_the_others_are_imported(
    database_url: str, source_url: str
) -> None:
    # An organizer saving the backfilled event holds its lock past the import's lock timeout.
    result = await import_while_locked(
        database_url,
        source_url,
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        f"ticketing_settings:{LEGACY}",
    )

    assert result.code == 1
    assert (
        f'event {LEGACY} "Backfilled paid event"\n  FAILED, nothing of it was written' in result.out
    )
    settled = await tables(database_url)
    events = {json.loads(row)["event_id"] for row in settled["ticketing_settings"]}
    assert events == {CONCERT, EXTERNAL}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_a_run_stopped_midway_has_printed_every_event_it_imported_and_no_other(
    database_url: str, source_url: str, stop: signal.Signals
) -> None:
    dry = await imported(database_url, source_url, "--dry-run")
    first, second, *_ = re.findall(r"^event (\S+)", dry.out, re.MULTILINE)
    async with open_transaction(database_url) as holder:
        # The second event waits for its lock, held by an organizer saving it.
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"ticketing_settings:{second}"
        )
        process = await start_import(database_url, "--source-database-url", source_url)
        async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
            # Polled: no event reports Postgres's lock waits.
            while not await asyncio.to_thread(lock_waiters, database_url):
                assert process.returncode is None
                await asyncio.sleep(0.05)
            process.send_signal(stop)
            out, err = await process.communicate()

    assert (process.returncode, err.decode().strip()) == (128 + stop, STOPPED), out
    assert re.findall(r"^event (\S+)", out.decode(), re.MULTILINE) == [first]
    assert out.decode() in dry.out  # the first event's block, as the dry run printed it
    settled = await tables(database_url)
    assert {json.loads(row)["event_id"] for row in settled["ticketing_settings"]} <= {first}


async def test_a_source_that_accepts_the_connection_but_never_answers_is_named_so(
    database_url: str,
) -> None:
    # Before: "Cannot connect to the source database: " and nothing after (a timeout's own
    # text is empty).
    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the command gives up and closes
        writer.close()

    server = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        silent = await import_moim(
            database_url, "--source-database-url", f"postgresql://moim@127.0.0.1:{port}/moim"
        )
    assert silent.code == 1
    [line] = silent.err.strip().splitlines()
    assert line == (
        "ticketing-service import-moim: Cannot connect to the source database: no answer within 5 s"
    ), silent.err


async def test_a_source_that_cannot_be_read_or_a_bad_url_stops_with_one_line(
    database_url: str,
) -> None:
    unreachable = await import_moim(
        database_url, "--source-database-url", "postgresql://127.0.0.1:9/moim"
    )
    assert unreachable.code == 1
    assert "Cannot connect to the source database" in unreachable.err

    empty = await create_database(database_url, "moim_empty")
    no_tables = await import_moim(database_url, "--source-database-url", empty)
    assert no_tables.code == 1
    assert "has no table events, event_tiers" in no_tables.err

    bad = await import_moim(database_url, "--source-database-url", "mysql://moim")
    assert bad.code == 2
    assert "a postgresql:// or postgres:// URL of Moim's database" in bad.err
    no_port = await import_moim(database_url, "--source-database-url", "postgresql://h:99999/m")
    assert no_port.code == 2
    assert "a port in it is not a number up to 65535" in no_port.err
    hashed = "postgresql://moim:hunt#er2@127.0.0.1/moim"
    hash_in_password = await import_moim(database_url, "--source-database-url", hashed)
    assert hash_in_password.code == 2
    assert "percent-encode it, e.g. # as %23" in hash_in_password.err
    assert "hunt" not in hash_in_password.err
    assert (await import_moim(database_url)).code == 2


async def test_an_unmigrated_service_database_stops_the_import_before_it_reads(
    database_url: str, source_url: str
) -> None:
    bare = await create_database(database_url, "ticketing_unmigrated")
    result = await import_moim(bare, "--source-database-url", source_url, "--dry-run")
    assert result.code == 1
    assert "run `ticketing-service migrate` first" in result.err
    assert result.out == ""  # no "dry run:" banner for a run that never began


async def test_a_payment_of_another_amount_or_currency_brings_in_no_registration(
    stub: Stub, database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Paid the wrong money")
        right = await add_paid(moim, event, tier, Paid("right"))
        for wrong in (
            Paid("cheap", paid_amount=100),
            Paid("dollars", paid_currency="USD"),
            Paid("lower-case", paid_currency="krw"),
        ):
            await add_paid(moim, event, tier, wrong)

    report = (await imported(database_url, source_url)).out

    assert await statuses(database_url, event) == {right: "confirmed"}
    for difference in (
        "100 KRW for a reservation of 30000 KRW (amount differs)",
        "30000 USD for a reservation of 30000 KRW (currency differs)",
        "30000 krw for a reservation of 30000 KRW (currency differs)",
    ):
        assert difference in report
    # Its registration, and the three RSVPs whose payments did not match as seats taken.
    [seats] = (await settings_of(stub, event)).tiers
    assert seats.accepted_count == 4


async def test_a_payment_without_a_provider_id_stays_out_and_one_recorded_twice_counts_once(
    stub: Stub, service: Service, database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Payments as the original kept them")
        fine = await add_paid(moim, event, tier, Paid("fine"))
        unnamed = await add_paid(moim, event, tier, Paid("unnamed"))
        await moim.execute(
            "UPDATE ticket_payments SET provider_payment_id = '  ' WHERE reservation_id = $1",
            unnamed,
        )
        twice = await add_paid(moim, event, tier, Paid("twice"))
        await moim.execute(  # the original inserted a row per callback it was sent
            "INSERT INTO ticket_payments (id, reservation_id, provider, provider_payment_id,"
            " checkout_id, status, amount, currency, paid_at) SELECT $1, reservation_id,"
            " provider, provider_payment_id, checkout_id, status, amount, currency, paid_at"
            " FROM ticket_payments WHERE id = $2",
            uid("twice-again"),
            payment_id("twice"),
        )

    report = (await imported(database_url, source_url)).out

    assert await statuses(database_url, event) == {fine: "confirmed", twice: "confirmed"}
    unnamed_line = next(line for line in report.splitlines() if unnamed in line)
    assert f"{payment_id('unnamed')} (no provider payment id), which the service" in unnamed_line
    assert uid("twice-again") not in report
    # The event can be cancelled: every registration it has is refunded.
    await stub.CancelEvent(pb.CancelEventRequest(event_id=event, request_id="cancel"))
    await cancel_events(service.deps)
    progress = await stub.GetEventCancellation(pb.GetEventCancellationRequest(event_id=event))
    assert (progress.cancellation.done, progress.cancellation.reservations_done) == (True, 2)


async def test_a_title_is_cut_to_what_the_service_takes_and_cannot_fake_a_report_line(
    stub: Stub, database_url: str, source_url: str
) -> None:
    title = 'Night\n  settings: created "forged"\x07' + "x" * 5000
    async with moim_database(source_url) as moim:
        event, _ = await add_event(moim, "Long")
        await moim.execute("UPDATE events SET title = $1 WHERE id = $2", title, event)

    report = (await imported(database_url, source_url)).out

    assert f"event {event} {json.dumps(title, ensure_ascii=False)}" in report.splitlines()
    assert '  settings: created "forged"\x07' + "x" * 5000 not in report.splitlines()
    assert f"event {event} has a title of {len(title)} characters" in report
    assert (await settings_of(stub, event)).event_title == title[:300]


async def test_an_event_deleted_in_moim_sells_nothing_here(
    stub: Stub, database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, _ = await add_event(moim, "Deleted")
        await moim.execute("UPDATE events SET deleted_at = now() WHERE id = $1", event)

    report = (await imported(database_url, source_url)).out

    assert f"event {event} was deleted in Moim" in report
    assert (await settings_of(stub, event)).enabled is False


async def test_one_payment_recorded_for_reservations_of_two_events_seats_one(
    database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        first_event, first_tier = await add_event(moim, "First to be paid")
        first = await add_paid(moim, first_event, first_tier, Paid("first-payer"))
        other_event, other_tier = await add_event(moim, "Paid with the same payment")
        other = await add_paid(moim, other_event, other_tier, Paid("other-payer"))
        await moim.execute(
            "UPDATE ticket_payments SET provider_payment_id = 'pay_first-payer',"
            " paid_at = paid_at + interval '1 minute' WHERE reservation_id = $1",
            other,
        )

    report = (await imported(database_url, source_url)).out

    assert await statuses(database_url, first_event) == {first: "confirmed"}
    assert await statuses(database_url, other_event) == {}
    assert f"which paid reservation {first} first: not imported" in report


async def test_a_bad_row_is_listed_and_the_rest_of_its_event_is_imported(
    stub: Stub, database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "One bad row")
        fine = await add_paid(moim, event, tier, Paid("fine"))
        await add_paid(moim, event, tier, Paid("negative", amount=-100))
        await add_paid(moim, event, tier, Paid("borrower", rsvp_of="fine"))

    report = (await imported(database_url, source_url)).out

    assert "FAILED" not in report
    assert await statuses(database_url, event) == {fine: "confirmed"}
    assert f"{reservation_id('negative')} (user " in report
    assert "has a negative amount, -100 KRW: not imported" in report
    assert f"names RSVP {uid('fine-rsvp')} as its own, but that RSVP is user" in report
    [seats] = (await settings_of(stub, event)).tiers
    assert seats.accepted_count == 3  # the registration, and the two RSVPs left out


async def test_times_without_a_zone_are_read_as_utc(database_url: str) -> None:
    older = await filled_source(database_url, "moim_without_zones", without_time_zones=True)

    report = (await imported(database_url, older)).out

    assert "registrations: 3 (3 new)" in report
    assert "live holds: 2 (2 new)" in report
    async with moim_database(older) as moim:
        written = await moim.fetchval(
            "SELECT expires_at FROM ticket_reservations WHERE id = $1", reservation_id("8")
        )
    kept = await connect(database_url)
    try:
        expire_time = await kept.fetchval(
            "SELECT expire_time FROM reservations WHERE reservation_id = $1", reservation_id("8")
        )
    finally:
        await kept.close()
    assert expire_time == written.replace(tzinfo=UTC)


async def test_a_time_the_service_cannot_keep_leaves_its_row_out_and_never_stops_the_run(
    stub: Stub, database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Odd times")
        odd = {
            name: await add_paid(moim, event, tier, Paid(name)) for name in ("end", "paid", "old")
        }
        await moim.execute(
            "UPDATE ticket_reservations SET status = 'pending_payment', expires_at = 'infinity'"
            " WHERE id = $1",
            odd["end"],
        )
        await moim.execute(
            "UPDATE ticket_payments SET paid_at = '-infinity' WHERE reservation_id = $1",
            odd["paid"],
        )
        await moim.execute(
            "UPDATE ticket_reservations SET created_at = '1960-01-01Z' WHERE id = $1", odd["old"]
        )
        endless, endless_tier = await add_event(moim, "Never closes")
        await moim.execute(
            "UPDATE event_tiers SET closes_at = 'infinity' WHERE id = $1", endless_tier
        )

    result = await imported(database_url, source_url)

    assert "Traceback" not in result.err
    assert await statuses(database_url, event) == {}
    for reason in (
        "its expires_at infinity is outside the times the service keeps",
        f"its payment {payment_id('paid')}'s paid_at -infinity is outside",
        "its created_at 1960-01-01T00:00:00+00:00 is outside",
        f"its tier {endless_tier}'s closes_at infinity is outside",
    ):
        assert reason in result.out
    [seats] = (await settings_of(stub, event)).tiers
    assert seats.accepted_count == 3  # the accepted RSVPs of the rows left out
    assert await statuses(database_url, endless) == {}


async def test_answers_over_the_apis_limits_are_left_in_moim_and_their_rows_come_in(
    stub: Stub, database_url: str, source_url: str
) -> None:
    huge = [{"questionId": "q1", "answer": "x" * 5_000_000}]
    many = [{"questionId": f"q{i}", "answer": "yes"} for i in range(51)]
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Talkative")
        paid = await add_paid(moim, event, tier, Paid("many", answers=many))
        held = await add_hold(moim, event, tier, "huge", answers=huge)

    report = (await imported(database_url, source_url)).out

    assert await statuses(database_url, event) == {paid: "confirmed", held: "pending_payment"}
    for reservation in (paid, held):
        got = await stub.GetReservation(pb.GetReservationRequest(reservation_id=reservation))
        assert list(got.reservation.answers) == []
    assert "has 51 answers (at most 50): imported without its answers" in report
    assert "has an answer of 5000000 characters (at most 4000)" in report


async def refunds_owed(database_url: str) -> list[dict[str, object]]:
    """The refunds the service owes, by reservation."""
    connection = await connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT refund_id::text AS refund_id, reservation_id::text AS reservation_id,"
            " payment_id, checkout_id, amount, currency_code, reason, status FROM refunds"
            " ORDER BY payment_id"
        )
        return [dict(row) for row in rows]
    finally:
        await connection.close()


def paid_at_the_payment_service(payment_service: PaymentService, name: str) -> None:
    """The payment service's record of a checkout Moim opened and the user paid."""
    body = {"reservationId": reservation_id(name), "amount": 30000, "currency": "KRW"}
    checkout = f"chk_{name}"
    payment_service.state.checkouts[checkout] = FakeCheckout(checkout, body, None)
    payment_service.state.mark_paid(checkout, payment_id=f"pay_{name}")


async def test_a_payment_without_a_seat_is_owed_back_once_and_the_service_sends_it(
    service: Service, payment_service: PaymentService, database_url: str, source_url: str
) -> None:
    first = await imported(database_url, source_url)

    owed = await refunds_owed(database_url)
    assert [
        (r["reservation_id"], r["payment_id"], r["checkout_id"], r["amount"], r["currency_code"])
        for r in owed
    ] == [
        (reservation_id("4"), "pay_4", "chk_4", 30000, "KRW"),
        (reservation_id("5b"), "pay_5b", "chk_5b", 30000, "KRW"),
    ]
    assert {(r["reason"], r["status"]) for r in owed} == {("paid_unfulfilled", "requested")}
    assert "refunds owed in full (paid_unfulfilled; the service sends them): 2 (2 new)" in first.out

    again = await imported(database_url, source_url)
    assert await refunds_owed(database_url) == owed
    assert "the service sends them): 2 (0 new)" in again.out

    for name in ("4", "5b"):
        paid_at_the_payment_service(payment_service, name)
    await send_due_refunds(service.deps)
    sent = await refunds_owed(database_url)
    assert [r["status"] for r in sent] == ["succeeded", "succeeded"]
    made = payment_service.state.created_per_key
    assert [made[f"refund:{r['refund_id']}"] for r in sent] == [1, 1]


async def test_with_auto_refund_off_the_import_owes_no_refund_and_says_so(
    database_url: str, source_url: str
) -> None:
    result = await import_moim(
        database_url, "--source-database-url", source_url, TICKETING_AUTO_REFUND="false"
    )

    assert result.code == 0, result.err
    assert await refunds_owed(database_url) == []
    assert "refunds: none owed, TICKETING_AUTO_REFUND is off" in result.out
    assert "no refunds owed (TICKETING_AUTO_REFUND is off)" in result.out.splitlines()[-1]


async def follow_ups(database_url: str, event_id: str) -> dict[str, object]:
    """When reconciliation is next to ask about each reservation of the event (None: never)."""
    connection = await connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT reservation_id::text AS id, next_reconcile_time FROM reservations"
            " WHERE event_id = $1",
            event_id,
        )
        return {row["id"]: row["next_reconcile_time"] for row in rows}
    finally:
        await connection.close()


async def test_a_moim_hold_paid_after_its_end_is_found_by_the_reconciler_once_imported(
    service: Service, payment_service: PaymentService, database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Refused late")
        late, unpaid = [await add_hold(moim, event, tier, name) for name in ("late", "unpaid")]
        # Both ended a minute ago; Moim answered the late payer's callback 409, and the payment
        # service never sends it again.
        await moim.execute(
            "UPDATE ticket_reservations SET expires_at = now() - interval '1 minute',"
            " created_at = now() - interval '21 minutes' WHERE id = ANY($1::uuid[])",
            [late, unpaid],
        )
    paid_at_the_payment_service(payment_service, "late")

    await imported(database_url, source_url)
    assert await statuses(database_url, event) == {late: "expired", unpaid: "expired"}

    # The reconciler's pass, as the running service makes it (no --since): both are due at once.
    found = {r.reservation.reservation_id: r for r in await reconcile_due(service.deps)}

    assert {late, unpaid} <= found.keys()
    assert (found[late].step, found[late].outcome) == (Step.CONFIRM, ConfirmOutcome.CONFIRMED)
    assert found[unpaid].step is Step.DONE  # the payment service never opened it: never paid
    assert await statuses(database_url, event) == {late: "confirmed", unpaid: "expired"}
    assert await follow_ups(database_url, event) == {late: None, unpaid: None}

    # A second import asks nothing again: each hold was scheduled when it came in.
    await imported(database_url, source_url)
    assert await follow_ups(database_url, event) == {late: None, unpaid: None}
    assert await statuses(database_url, event) == {late: "confirmed", unpaid: "expired"}
    assert await reconcile_due(service.deps) == []


async def test_a_followed_up_hold_that_moim_settled_meanwhile_is_asked_about_no_more(
    database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Settled in Moim", capacity=1)
        await add_paid(moim, event, tier, Paid("seated"))
        hold = await add_hold(moim, event, tier, "meanwhile")
    await imported(database_url, source_url)  # no seat left for it: it comes in ended
    assert (await follow_ups(database_url, event))[hold] is not None

    async with moim_database(source_url) as moim:
        # Moim took its payment inside its ten minutes, and waitlisted the payer.
        await moim.execute(
            "INSERT INTO rsvps (id, user_id, event_id, tier_id, status)"
            " VALUES ($1, $2, $3, $4, 'waitlisted')",
            uid("meanwhile-rsvp"),
            uid("meanwhile-user"),
            event,
            tier,
        )
        await moim.execute(
            "UPDATE ticket_reservations SET status = 'confirmed', rsvp_id = $2 WHERE id = $1",
            hold,
            uid("meanwhile-rsvp"),
        )
        await moim.execute(
            "UPDATE ticket_payments SET status = 'paid', provider_payment_id = 'pay_meanwhile',"
            " paid_at = now() WHERE reservation_id = $1",
            hold,
        )
    await imported(database_url, source_url)

    assert (await statuses(database_url, event))[hold] == "paid_unfulfilled"
    assert (await follow_ups(database_url, event))[hold] is None


async def test_a_moim_hold_made_before_the_reconcile_window_is_not_asked_about(
    database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Long ago")
        old = await add_hold(moim, event, tier, "old")
        await moim.execute(
            "UPDATE ticket_reservations SET expires_at = now() - interval '1 minute',"
            " created_at = now() - interval '21 minutes' WHERE id = $1",
            old,
        )

    result = await import_moim(
        database_url,
        "--source-database-url",
        source_url,
        TICKETING_RECONCILE_WINDOW_HOURS="0.25",
    )

    assert result.code == 0, result.err
    assert await follow_ups(database_url, event) == {old: None}


async def live_holds(database_url: str, event_id: str) -> int:
    connection = await connect(database_url)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM reservations WHERE event_id = $1"
            " AND status = 'pending_payment' AND expire_time > now()",
            event_id,
        )
        assert isinstance(count, int)
        return count
    finally:
        await connection.close()


async def test_a_moim_hold_brought_in_during_the_dual_run_leaves_the_services_holds_their_seats(
    stub: Stub, database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Two seats", capacity=2)
    await imported(database_url, source_url)
    for buyer in ("first", "second"):
        started = await stub.StartPaidRegistration(
            pb.StartPaidRegistrationRequest(event_id=event, tier_id=tier, user_id=uid(buyer))
        )
        assert started.requires_payment
    async with moim_database(source_url) as moim:
        moim_hold = await add_hold(moim, event, tier, "late-in-moim")

    report = (await imported(database_url, source_url)).out

    assert await live_holds(database_url, event) == 2
    assert (await statuses(database_url, event))[moim_hold] == "expired"
    assert (
        f"{moim_hold} (user {uid('late-in-moim-user')}) is a live hold in a tier with no seat"
        in (report)
    )


async def test_a_user_who_gave_up_an_imported_seat_and_paid_again_in_moim_is_registered_again(
    stub: Stub, database_url: str, source_url: str
) -> None:
    await imported(database_url, source_url)
    await stub.CancelRegistration(
        pb.CancelRegistrationRequest(reservation_id=reservation_id("1"), user_id=user(1))
    )
    async with moim_database(source_url) as moim:
        # Moim keeps one RSVP per user and event: the new payment's reservation names it again.
        await moim.execute(
            "INSERT INTO ticket_reservations (id, event_id, tier_id, user_id, rsvp_id, provider,"
            " amount, currency, status, checkout_id, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, 'portone', 30000, 'KRW', 'confirmed', 'chk_again',"
            " now())",
            reservation_id("again"),
            CONCERT,
            VIP,
            user(1),
            rsvp_id(1),
        )
        await moim.execute(
            "INSERT INTO ticket_payments (id, reservation_id, provider, provider_payment_id,"
            " checkout_id, status, amount, currency, paid_at)"
            " VALUES ($1, $2, 'portone', 'pay_again', 'chk_again', 'paid', 30000, 'KRW', now())",
            payment_id("again"),
            reservation_id("again"),
        )

    again = await imported(database_url, source_url)

    assert "registrations: 4 (1 new)" in again.out
    found = await stub.FindReservation(pb.FindReservationRequest(event_id=CONCERT, user_id=user(1)))
    assert (found.reservation.reservation_id, found.reservation.status) == (
        reservation_id("again"),
        reservation_pb2.RESERVATION_STATUS_CONFIRMED,
    )
    assert found.reservation.registration_id not in ("", rsvp_id(1))


async def service_value(database_url: str, query: str, *args: object) -> object:
    connection = await connect(database_url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


async def test_a_moim_hold_ending_far_ahead_is_brought_in_ending_by_the_services_hold_length(
    stub: Stub, database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Far hold")
        hold = await add_hold(moim, event, tier, "far")
        await moim.execute(
            "UPDATE ticket_reservations SET expires_at = '9000-01-01' WHERE id = $1", hold
        )

    report = (await imported(database_url, source_url)).out

    # The import ended before this reads the clock: its end is at most a hold's length away.
    assert await service_value(
        database_url,
        "SELECT expire_time <= now() + interval '600 seconds' FROM reservations"
        " WHERE reservation_id = $1",
        hold,
    )
    assert f"{hold} (user {uid('far-user')}) is a live hold until 9000-01-01" in report
    assert "the service's hold length (TICKETING_HOLD_SECONDS) from the import" in report
    # The hold found here is left as it is, and not said to be cut again.
    assert "is a live hold until 9000" not in (await imported(database_url, source_url)).out
    found = await stub.FindReservation(
        pb.FindReservationRequest(event_id=event, user_id=uid("far-user"))
    )
    assert found.reservation.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT


async def test_a_status_the_import_does_not_know_moves_no_money_and_is_listed(
    database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Odd statuses")
        upper_rsvp = await add_paid(moim, event, tier, Paid("upper", rsvp_status="ACCEPTED"))
        upper_status = await add_paid(moim, event, tier, Paid("caps"))
        odd_payment = await add_paid(moim, event, tier, Paid("odd-pay"))
        await moim.execute(
            "UPDATE ticket_reservations SET status = 'CONFIRMED' WHERE id = $1", upper_status
        )
        await moim.execute(
            "UPDATE ticket_payments SET status = 'PAID' WHERE reservation_id = $1", odd_payment
        )

    report = (await imported(database_url, source_url)).out

    assert await statuses(database_url, event) == {}
    odd = {upper_rsvp, upper_status, odd_payment}
    assert [r for r in await refunds_owed(database_url) if r["reservation_id"] in odd] == []
    assert f"{upper_rsvp} (user {uid('upper-user')}) is paid but its RSVP" in report
    assert "has the unknown status 'ACCEPTED': not imported" in report
    assert f"{upper_status} (user {uid('caps-user')}) has the unknown status 'CONFIRMED'" in report
    assert f"its payment {payment_id('odd-pay')} has the unknown status 'PAID'" in report
    # The RSVP of a status not understood is not counted as a seat either, and says so.
    assert f"RSVP {uid('upper-rsvp')} (user {uid('upper-user')}) has the unknown" in report


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
async def test_a_tier_moim_oversold_is_named_with_its_seats_and_capacity(
    database_url: str, source_url: str, dry_run: bool
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Oversold", capacity=1)
        for name in ("first-in", "second-in"):
            await add_paid(moim, event, tier, Paid(name))

    args = ("--dry-run",) if dry_run else ()
    report = (await imported(database_url, source_url, *args)).out

    assert (
        f'  OVER CAPACITY: tier "Seat" ({tier}) of event {event}: 2 seats taken, capacity 1'
        in report
    )
    assert "; 1 tiers over capacity;" in report


async def test_a_seat_given_up_in_the_service_is_not_counted_again_as_one_moim_gave(
    stub: Stub, database_url: str, source_url: str
) -> None:
    await imported(database_url, source_url)
    seats = "SELECT external_seats FROM tiers WHERE event_id = $1 AND tier_id = $2"
    before = await service_value(database_url, seats, CONCERT, VIP)
    await stub.CancelRegistration(
        pb.CancelRegistrationRequest(reservation_id=reservation_id("1"), user_id=user(1))
    )

    # Moim still shows the RSVP accepted until the registration feed reaches it.
    await imported(database_url, source_url)

    assert await service_value(database_url, seats, CONCERT, VIP) == before


async def test_the_tiers_of_an_event_the_service_knows_are_its_own(
    database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, _ = await add_event(moim, "Known")
    await imported(database_url, source_url)
    new_tier = uid("known-added-tier")
    async with moim_database(source_url) as moim:
        await moim.execute(
            "INSERT INTO event_tiers (id, event_id, name, price_amount, capacity)"
            " VALUES ($1, $2, 'Added in Moim', 1000, 5)",
            new_tier,
            event,
        )
        late = await add_paid(moim, event, new_tier, Paid("in-added", amount=1000))

    report = (await imported(database_url, source_url)).out

    tiers = "SELECT count(*) FROM tiers WHERE event_id = $1 AND tier_id = $2"
    assert await service_value(database_url, tiers, event, new_tier) == 0
    assert f"{late} (user {uid('in-added-user')}) is in tier {new_tier}" in report
    assert "tiers: 1 (0 new)" in report


async def test_a_checkout_id_cut_short_in_the_report_is_marked_so(
    database_url: str, source_url: str
) -> None:
    async with moim_database(source_url) as moim:
        event, tier = await add_event(moim, "Long checkout")
        hold = await add_hold(moim, event, tier, "long-checkout")
        await moim.execute(
            "UPDATE ticket_reservations SET checkout_id = $2 WHERE id = $1", hold, "c" * 200
        )

    report = (await imported(database_url, source_url)).out

    assert f"has the checkout id '{'c' * 40}…', which the service could never confirm" in report


async def test_a_source_read_cut_by_the_statement_timeout_says_which_setting_to_raise(
    database_url: str, source_url: str
) -> None:
    async with open_transaction(source_url) as moim:
        await moim.execute("LOCK TABLE rsvps IN ACCESS EXCLUSIVE MODE")
        result = await import_moim(
            database_url,
            "--source-database-url",
            source_url,
            TICKETING_DB_STATEMENT_TIMEOUT_MS="500",
            TICKETING_DB_LOCK_TIMEOUT_MS="60000",
        )

    assert result.code == 1
    assert "canceling statement due to statement timeout" in result.err
    assert "TICKETING_DB_STATEMENT_TIMEOUT_MS, 500 ms, applies to the source's reads" in result.err


async def test_the_documented_sample_imports_one_of_each_kind(database_url: str) -> None:
    root = SCHEMA.parent.parent.parent
    sample = (root / "scripts" / "moim-sample.sql").read_text()
    source = await create_database(database_url, "moim_sample", SCHEMA.read_text() + sample)

    report = (await imported(database_url, source, "--dry-run")).out

    assert "registrations: 1 (1 new)" in report
    assert "paid without a seat (paid_unfulfilled: a refund is due): 1 (1 new)" in report
    assert "live holds: 1 (1 new)" in report
    assert "seats taken by other RSVPs: Standing 1" in report
    assert "has the unknown status 'ACCEPTED': not counted as a seat" in report
