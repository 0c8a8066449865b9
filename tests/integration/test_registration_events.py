"""The registration event feed: every outcome once, in order, across reconnects and restarts."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from subprocess import CompletedProcess
from typing import TYPE_CHECKING

import grpc
import pytest
from moim.ticketing.v1 import registration_event_pb2 as events_pb2
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.end_to_end.serving import (
    START_TIMEOUT_SECONDS,
    our_line,
    run_command,
    serve_process,
    wait_for_line,
)
from tests.end_to_end.test_serve_command import SERVING_LINE
from tests.integration.flows import (
    configure_event,
    end_hold,
    hold,
    paid_tier,
    payment_for,
    sql,
)
from tests.postgres import open_transaction
from tests.rich_errors import rich_error
from ticketing_service.entrypoints.grpc.server import start_server
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.events_handlers import (
    prune_history,
    sequence_events,
)
from ticketing_service.service_layer.reconciliation import reconcile_due

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

T = events_pb2.RegistrationEventType
CREATED = T.REGISTRATION_EVENT_TYPE_RESERVATION_CREATED
CONFIRMED = T.REGISTRATION_EVENT_TYPE_RESERVATION_CONFIRMED
EXPIRED = T.REGISTRATION_EVENT_TYPE_RESERVATION_EXPIRED
CANCELLED = T.REGISTRATION_EVENT_TYPE_RESERVATION_CANCELLED
UNFULFILLED = T.REGISTRATION_EVENT_TYPE_RESERVATION_PAID_UNFULFILLED


async def all_events(stub: Stub, after: int = 0) -> list[events_pb2.RegistrationEvent]:
    response = await stub.ListRegistrationEvents(
        pb.ListRegistrationEventsRequest(after_sequence=after, page_size=1000)
    )
    return list(response.events)


async def settled_events(stub: Stub, deps: Dependencies) -> list[events_pb2.RegistrationEvent]:
    """The feed once every committed event is numbered (no waiting on the background task)."""
    await sequence_events(deps)
    return await all_events(stub)


async def test_every_state_change_appends_one_event_in_order(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1), paid_tier("floor"))
    paid = await hold(stub, "payer", "vip")
    await stub.ConfirmPayment(payment_for(paid))
    gone = await hold(stub, "quitter", "floor")
    await stub.CancelReservation(
        pb.CancelReservationRequest(reservation_id=gone.reservation_id, user_id="quitter")
    )
    late = await hold(stub, "sleeper", "floor")
    end_hold(database_url, late.reservation_id)
    await reconcile_due(deps)  # asked before it expires: not paid, so it ends
    full = await hold(stub, "too-late", "floor")
    sql(database_url, "UPDATE tiers SET capacity = 1 WHERE tier_id = 'floor'")
    end_hold(database_url, full.reservation_id)
    await hold(stub, "seat-taker", "floor")
    await stub.ConfirmPayment(payment_for(full))

    events = await settled_events(stub, deps)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [(e.type, e.reservation.user_id) for e in events] == [
        (CREATED, "payer"),
        (CONFIRMED, "payer"),
        (CREATED, "quitter"),
        (CANCELLED, "quitter"),
        (CREATED, "sleeper"),
        (EXPIRED, "sleeper"),
        (CREATED, "too-late"),
        (CREATED, "seat-taker"),
        (UNFULFILLED, "too-late"),
    ]
    confirmed = events[1].reservation
    assert confirmed.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
    assert confirmed.registration_id


async def test_a_confirmed_event_carries_the_registration_and_answers(
    stub: Stub, deps: Dependencies
) -> None:
    await configure_event(stub)
    started = await stub.StartPaidRegistration(
        pb.StartPaidRegistrationRequest(
            event_id="launch-party",
            tier_id="vip",
            user_id="u",
            answers=[reservation_pb2.Answer(question_id="q", answer="yes")],
        )
    )
    confirmed = await stub.ConfirmPayment(payment_for(started.reservation))
    event = (await settled_events(stub, deps))[-1]
    assert event.type == CONFIRMED
    assert event.reservation.registration_id == confirmed.reservation.registration_id
    assert [(a.question_id, a.answer) for a in event.reservation.answers] == [("q", "yes")]


async def test_pages_follow_next_sequence(stub: Stub, deps: Dependencies) -> None:
    await configure_event(stub, paid_tier("vip"))
    for user in range(5):
        await hold(stub, f"user-{user}")
    await sequence_events(deps)
    first = await stub.ListRegistrationEvents(pb.ListRegistrationEventsRequest(page_size=2))
    assert [e.sequence for e in first.events] == [1, 2]
    rest = await stub.ListRegistrationEvents(
        pb.ListRegistrationEventsRequest(after_sequence=first.next_sequence)
    )
    assert [e.sequence for e in rest.events] == [3, 4, 5]
    empty = await stub.ListRegistrationEvents(
        pb.ListRegistrationEventsRequest(after_sequence=rest.next_sequence)
    )
    assert (list(empty.events), empty.next_sequence) == ([], 5)


async def test_an_event_committed_late_is_numbered_after_those_already_read(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    """A slow writer whose event row was inserted first must not be skipped by a consumer."""
    await configure_event(stub, paid_tier("vip"))
    slow = await hold(stub, "slow")
    await sequence_events(deps)
    after_setup = (await all_events(stub))[-1].sequence
    async with open_transaction(database_url) as writer:
        # The slow writer appends its event first, then takes its time to commit.
        await writer.execute(
            "INSERT INTO registration_events (type, reservation_id, reservation)"
            " SELECT 'reservation_cancelled', reservation_id, reservation FROM registration_events"
            " WHERE reservation_id = $1",
            slow.reservation_id,
        )
        await hold(stub, "fast")  # commits its event while the slow writer is open
        await sequence_events(deps)
        seen = await all_events(stub, after_setup)
        assert [e.reservation.user_id for e in seen] == ["fast"]
        cursor = seen[-1].sequence
        await writer.execute("COMMIT")
    rows = sql(
        database_url,
        "SELECT type, event_row_id, sequence FROM registration_events"
        " WHERE sequence > $1 OR sequence IS NULL ORDER BY event_row_id",
        after_setup,
    )
    # The control: by insertion order (what a naive feed would number) the slow event comes
    # first, so a consumer already past the fast one would never have seen it.
    assert [r[0] for r in rows] == ["reservation_cancelled", "reservation_created"]
    await sequence_events(deps)
    later = await stub.ListRegistrationEvents(
        pb.ListRegistrationEventsRequest(after_sequence=cursor)
    )
    assert [e.sequence for e in later.events] == [cursor + 1]


async def collect(
    stream: grpc.aio.UnaryStreamCall[
        pb.WatchRegistrationEventsRequest, pb.WatchRegistrationEventsResponse
    ],
    count: int,
) -> list[events_pb2.RegistrationEvent]:
    events: list[events_pb2.RegistrationEvent] = []
    async with asyncio.timeout(60):
        async for message in stream:
            events.append(message.event)
            if len(events) == count:
                break
    return events


async def test_a_watcher_sees_every_outcome_of_500_concurrent_confirmations_once_in_order(
    stub: Stub,
) -> None:
    buyers = 500
    await configure_event(stub, paid_tier("vip", capacity=buyers))
    stream = stub.WatchRegistrationEvents(pb.WatchRegistrationEventsRequest())
    watching = asyncio.create_task(collect(stream, 2 * buyers))
    gate = asyncio.Semaphore(32)

    async def buy(user: str) -> None:
        async with gate:
            reservation = await hold(stub, user)
            await stub.ConfirmPayment(payment_for(reservation))

    await asyncio.gather(*(buy(f"buyer-{n}") for n in range(buyers)))
    events = await watching
    stream.cancel()
    assert [e.sequence for e in events] == list(range(1, 2 * buyers + 1))
    confirmed = [e.reservation.user_id for e in events if e.type == CONFIRMED]
    assert sorted(confirmed) == sorted(f"buyer-{n}" for n in range(buyers))


async def test_a_watcher_that_reconnects_to_a_restarted_server_sees_the_rest_once(
    stub: Stub, deps: Dependencies
) -> None:
    await configure_event(stub, paid_tier("vip"))
    for user in range(6):
        await hold(stub, f"early-{user}")
    first = stub.WatchRegistrationEvents(pb.WatchRegistrationEventsRequest())
    seen = await collect(first, 4)
    first.cancel()

    restarted = await start_server(deps, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
            other = pb_grpc.TicketingServiceStub(channel)
            resumed = other.WatchRegistrationEvents(
                pb.WatchRegistrationEventsRequest(after_sequence=seen[-1].sequence)
            )
            for user in range(4):
                await hold(other, f"late-{user}")
            seen += await collect(resumed, 6)
            resumed.cancel()
    finally:
        await restarted.stop(0)
    assert [e.sequence for e in seen] == list(range(1, 11))
    assert [e.reservation.user_id for e in seen][-4:] == [f"late-{n}" for n in range(4)]


async def test_pruned_events_are_gone_and_a_consumer_behind_them_is_told(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip"))
    for user in range(3):
        await hold(stub, f"user-{user}")
    await sequence_events(deps)
    sql(
        database_url,
        "UPDATE registration_events SET create_time = now() - interval '40 days'"
        " WHERE sequence <= 2",
    )
    pruned = await prune_history(deps, datetime.now(UTC) - timedelta(days=30))
    assert pruned["registration_events"] == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListRegistrationEvents(pb.ListRegistrationEventsRequest(after_sequence=0))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.OUT_OF_RANGE, "EVENTS_PRUNED")
    assert error.metadata == {"firstRetainedSequence": "3"}
    assert [e.sequence for e in await all_events(stub, after=2)] == [3]
    await hold(stub, "after-prune")
    await sequence_events(deps)
    assert [e.sequence for e in await all_events(stub, after=3)] == [4]


async def test_an_event_stamped_before_the_cutoff_but_numbered_after_a_kept_one_is_kept(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    # An event is stamped when its transaction begins and numbered once it commits: a slow
    # transaction's event gets an older stamp and a higher number than a quicker one's. Pruned
    # by its stamp, it left a gap inside the kept range, and no EVENTS_PRUNED told of it.
    await configure_event(stub, paid_tier("vip"))
    for user in range(4):
        await hold(stub, f"user-{user}")
    await sequence_events(deps)
    sql(
        database_url,
        "UPDATE registration_events SET create_time = now() - interval '40 days'"
        " WHERE sequence IN (1, 3)",
    )

    pruned = await prune_history(deps, datetime.now(UTC) - timedelta(days=30))

    assert pruned["registration_events"] == 1
    assert [e.sequence for e in await all_events(stub, after=1)] == [2, 3, 4]


async def test_a_consumer_whose_cursor_is_ahead_of_the_feed_is_told_not_left_waiting(
    stub: Stub, deps: Dependencies
) -> None:
    # As after the database was restored from a backup taken before event 3 was numbered.
    await configure_event(stub, paid_tier("vip"))
    for user in range(2):
        await hold(stub, f"user-{user}")
    await sequence_events(deps)
    with pytest.raises(grpc.aio.AioRpcError) as listed:
        await stub.ListRegistrationEvents(pb.ListRegistrationEventsRequest(after_sequence=3))
    watch = stub.WatchRegistrationEvents(pb.WatchRegistrationEventsRequest(after_sequence=3))
    with pytest.raises(grpc.aio.AioRpcError) as watched:
        await asyncio.wait_for(watch.read(), 10)  # it waited for good before
    for caught in (listed, watched):
        error = rich_error(caught.value)
        assert (error.code, error.reason) == (
            grpc.StatusCode.OUT_OF_RANGE,
            "SEQUENCE_AHEAD_OF_FEED",
        )
        assert error.metadata == {"lastSequence": "2"}
    # At the last number given, a consumer is up to date: an empty page, then what comes next.
    assert await all_events(stub, after=2) == []
    caught_up = stub.WatchRegistrationEvents(pb.WatchRegistrationEventsRequest(after_sequence=2))
    await hold(stub, "user-2")
    assert [e.sequence for e in await collect(caught_up, 1)] == [3]
    caught_up.cancel()


@pytest.mark.parametrize(
    ("request_fields", "bad"),
    [
        ({"after_sequence": -1}, "after_sequence"),
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -5}, "page_size"),
    ],
)
async def test_invalid_feed_requests_are_invalid_argument(
    stub: Stub, request_fields: dict[str, int], bad: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListRegistrationEvents(pb.ListRegistrationEventsRequest(**request_fields))
    assert rich_error(caught.value).fields == [bad]


async def test_watching_from_a_negative_sequence_is_invalid_argument(stub: Stub) -> None:
    stream = stub.WatchRegistrationEvents(pb.WatchRegistrationEventsRequest(after_sequence=-1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert rich_error(caught.value).fields == ["after_sequence"]


async def test_a_backlog_after_an_outage_is_numbered_completely_in_bounded_batches(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    # A thousand events that committed while no sequencer ran, copies of the hold's.
    sql(
        database_url,
        "INSERT INTO registration_events (type, reservation_id, reservation)"
        " SELECT type, reservation_id, reservation FROM registration_events,"
        " generate_series(1, 1000) WHERE reservation_id = $1",
        held.reservation_id,
    )

    await sequence_events(deps, batch_size=300)

    assert sql(
        database_url,
        "SELECT count(*), count(DISTINCT sequence), min(sequence), max(sequence)"
        " FROM registration_events",
    ) == [(1001, 1001, 1, 1001)]


async def test_old_deliveries_mismatch_records_and_unused_removed_tiers_are_pruned_too(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip"), paid_tier("used"), paid_tier("unused"))
    held = await hold(stub, "payer", "used")
    await stub.ConfirmPayment(payment_for(held, delivery_id="d-old"))
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ConfirmPayment(payment_for(held, payment_id="pay-2", amount=1))
    await configure_event(stub, paid_tier("vip"))  # "used" is kept for its reservation
    for table in ("webhook_deliveries", "payment_mismatches"):
        sql(database_url, f"UPDATE {table} SET create_time = now() - interval '40 days'")
    sql(
        database_url,
        "UPDATE tiers SET delete_time = now() - interval '40 days' WHERE delete_time IS NOT NULL",
    )

    pruned = await prune_history(deps, datetime.now(UTC) - timedelta(days=30))

    assert (pruned["webhook_deliveries"], pruned["payment_mismatches"], pruned["tiers"]) == (
        1,
        1,
        1,
    )
    assert sql(database_url, "SELECT tier_id FROM tiers ORDER BY tier_id") == [
        ("used",),
        ("vip",),
    ]


OLD, NEW = "now() - interval '40 days'", "now() - interval '1 day'"


def backlog(database_url: str, old: dict[str, int]) -> None:
    """`old[table]` rows of each pruned table 40 days old, and one a day old."""
    run = partial(sql, database_url)
    run("INSERT INTO ticketing_settings (event_id, mode, enabled) VALUES ('e', 'paid', true)")
    run(
        "INSERT INTO tiers (event_id, tier_id, position, name, price_amount, delete_time)"
        f" SELECT 'e', 'gone-' || n, n, 'Gone', 100, CASE WHEN n = 0 THEN {NEW} ELSE {OLD} END"
        " FROM generate_series(0, $1) n",
        old["tiers"],
    )
    run(
        "INSERT INTO tiers (event_id, tier_id, position, name, price_amount, delete_time)"
        f" VALUES ('e', 'used', 99, 'Used', 100, {OLD})"  # a reservation refers to it: kept
    )
    reservation = uuid.uuid4()
    run(
        "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
        " currency_code, provider, success_url, cancel_url, expire_time)"
        " VALUES ($1, 'e', 'used', 'u', 'expired', 100, 'KRW', 'portone', 's', 'c', now())",
        reservation,
    )
    events = old["registration_events"]
    run(
        "INSERT INTO registration_events (sequence, type, reservation_id, reservation,"
        f" create_time) SELECT n, 'reservation_created', $1, '{{}}', CASE WHEN n <= $2"
        f" THEN {OLD} ELSE {NEW} END FROM generate_series(1, $2 + 1) n",
        reservation,
        events,
    )
    run("UPDATE registration_event_sequencer SET last_sequence = $1", events + 1)
    run(
        "INSERT INTO webhook_deliveries (scheme, delivery_id, reservation_id, outcome,"
        f" create_time) SELECT 'moim', 'd-' || n, $1, 'CONFIRMED', CASE WHEN n = 0 THEN {NEW}"
        f" ELSE {OLD} END FROM generate_series(0, $2) n",
        reservation,
        old["webhook_deliveries"],
    )
    run(
        "INSERT INTO payment_mismatches (mismatch_id, reservation_id, checkout_id,"
        " provider_payment_id, provider, amount, currency_code, fields, create_time)"
        " SELECT gen_random_uuid(), $1, 'chk', 'pay-' || n, 'portone', 1, 'KRW', '{amount}',"
        f" CASE WHEN n = 0 THEN {NEW} ELSE {OLD} END FROM generate_series(0, $2) n",
        reservation,
        old["payment_mismatches"],
    )


def prune_events(
    tmp_path: Path, database_url: str, *args: str, **env: str
) -> CompletedProcess[str]:
    return run_command(
        tmp_path, "prune-events", "--older-than-days", "30", *args, DATABASE_URL=database_url, **env
    )


def test_prune_events_deletes_a_backlog_batch_by_batch_and_keeps_what_is_newer(
    database_url: str, tmp_path: Path
) -> None:
    # It was one DELETE a table: over millions of rows it ran past the statement timeout, and
    # the backlog could never be pruned. Batches of 3 here; 6 mismatches end a batch exactly.
    old = {"registration_events": 23, "webhook_deliveries": 7, "payment_mismatches": 6, "tiers": 5}
    backlog(database_url, old)

    result = prune_events(tmp_path, database_url, "--batch-size", "3")

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    totals = ", ".join(f"{count} {table}" for table, count in old.items())
    assert f": {totals}" in result.stderr  # what it printed before, for the same rows
    assert sql(database_url, "SELECT sequence FROM registration_events") == [(24,)]
    for table in ("webhook_deliveries", "payment_mismatches"):
        assert sql(database_url, f"SELECT count(*) FROM {table}") == [(1,)]
    assert sql(database_url, "SELECT tier_id FROM tiers ORDER BY tier_id") == [
        ("gone-0",),
        ("used",),
    ]


async def test_prune_events_cut_by_the_statement_timeout_says_so_in_one_line(
    database_url: str, tmp_path: Path
) -> None:
    # A traceback before (QueryCanceledError), where a lock timeout was one line. Here its
    # second batch waits for an old event the test holds, past a short statement timeout;
    # the first batch, the oldest three, was committed and stays pruned.
    backlog(
        database_url,
        {"registration_events": 5, "webhook_deliveries": 0, "payment_mismatches": 0, "tiers": 0},
    )
    async with open_transaction(database_url) as holder:
        await holder.execute("SELECT 1 FROM registration_events WHERE sequence = 4 FOR UPDATE")
        result = await asyncio.to_thread(
            prune_events,
            tmp_path,
            database_url,
            "--batch-size",
            "3",
            TICKETING_DB_STATEMENT_TIMEOUT_MS="500",
            TICKETING_DB_LOCK_TIMEOUT_MS="60000",
        )

    assert result.returncode == 1
    assert our_line(result) == (
        "ticketing-service: Pruning stopped: canceling statement due to statement timeout"
        " (TICKETING_DB_STATEMENT_TIMEOUT_MS is 500 ms). What was deleted before stays deleted:"
        " run prune-events again, with a smaller --batch-size or a longer"
        " TICKETING_DB_STATEMENT_TIMEOUT_MS."
    )
    kept = sql(database_url, "SELECT sequence FROM registration_events ORDER BY sequence")
    assert kept == [(4,), (5,), (6,)]


async def test_a_stopping_server_ends_its_watches_at_once_for_them_to_resume_elsewhere(
    stub: Stub, deps: Dependencies, database_url: str, tmp_path: Path
) -> None:
    # A watch held its process's stop for the whole grace period (10 s), and its client heard
    # of the stop only then, as a bare UNAVAILABLE "Cancelling all calls". Moim's feed consumer
    # keeps a watch open, so every restart and deploy waited that long on every process.
    await configure_event(stub)
    await hold(stub, "payer")
    await sequence_events(deps)
    with serve_process(tmp_path, "--no-migrate", DATABASE_URL=database_url) as process:
        port = int((await asyncio.to_thread(wait_for_line, process, SERVING_LINE)).group(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            watch = pb_grpc.TicketingServiceStub(channel).WatchRegistrationEvents(
                pb.WatchRegistrationEventsRequest()
            )
            first = await watch.read()  # the watch is open on the server, waiting for more
            process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await watch.read()
        await asyncio.to_thread(process.wait, START_TIMEOUT_SECONDS)
        assert process.stderr is not None
        logged = [json.loads(line) for line in process.stderr.read().splitlines()]
    assert isinstance(first, pb.WatchRegistrationEventsResponse)
    assert first.event.type == CREATED
    error = rich_error(ended.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_STOPPING")
    assert process.returncode == 0
    # Not a fault of the server's: logged as a refused call is, not as a warning.
    [line] = [line for line in logged if line.get("rpc") == "WatchRegistrationEvents"]
    assert (line["level"], line["reason"]) == ("INFO", "SERVER_STOPPING")
