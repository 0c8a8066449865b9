"""Every lock proven the pretix way: first the race, then the lock that removes it.

Each protection is tested twice against the real server on real Postgres. The control turns
the locks off (`Protections(locking=False)`) and forces the interleaving they prevent with a
barrier at a pause point, so every contender has read before any of them writes: the invariant
breaks. The real path runs the same contention with the locks on: the invariant holds. A control
also checks that every contender met at the barrier, so it cannot pass by timing out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from moim.ticketing.v1 import refund_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.conftest import PAYMENT_TOKEN, PaymentService
from tests.integration.moim_source import (
    PUBLIC_BASE_URL,
    SCHEMA,
    SOURCE_DATABASE,
    add_event,
    add_hold,
    create_database,
)
from tests.postgres import connect, lock_waiters, open_transaction, sql
from tests.rich_errors import RichError, rich_error
from ticketing_service.adapters.db.changes import Pause, Protections, no_pause
from ticketing_service.adapters.db.moim_import_writer import SqlImportTarget
from ticketing_service.adapters.db.pool import Database, PoolSettings
from ticketing_service.adapters.db.unit_of_work import SqlUnitOfWork
from ticketing_service.adapters.moim_source import PostgresMoimSource
from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.bootstrap import Service, cancel_events
from ticketing_service.domain.refunds import RefundRetryPolicy
from ticketing_service.entrypoints.dev.payment_requests import refund_body
from ticketing_service.entrypoints.grpc.server import start_server
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.expiry import fold_confirmed_seats
from ticketing_service.service_layer.moim_import import MoimImport, import_moim
from ticketing_service.service_layer.refund_handlers import cancel_batch
from ticketing_service.service_layer.refund_worker import send_due_refunds

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

T = TypeVar("T")

EVENT = "event-rush"
TIER = "general"
PRICE = 10000
# Bounds on every wait, far above what a healthy run needs, so a broken run fails, never hangs.
CALL_SECONDS = 60.0
MEETING_SECONDS = 15.0
# Room for a barrier of 20 contenders plus the calls queued behind them.
CONTENDER_POOL = PoolSettings(pool_size=30, lock_timeout_ms=10_000, connect_timeout_seconds=30)

SOLD_OUT = "FAILED_PRECONDITION/SOLD_OUT"
CONCURRENT_UPDATE = "ABORTED/CONCURRENT_UPDATE"
CONFIRMED = "CONFIRM_PAYMENT_OUTCOME_CONFIRMED"
ALREADY_CONFIRMED = "CONFIRM_PAYMENT_OUTCOME_ALREADY_CONFIRMED"
PAID_UNFULFILLED = "CONFIRM_PAYMENT_OUTCOME_PAID_UNFULFILLED"


class Meeting:
    """A pause that holds the first `parties` calls reaching `point` until all have reached it;
    later arrivals (a call passing the point again) go on."""

    def __init__(self, point: str, parties: int) -> None:
        self.point = point
        self.met = 0
        self._parties = parties
        self._arrived = 0
        self._barrier = asyncio.Barrier(parties)

    async def __call__(self, reached: str) -> None:
        if reached != self.point or self._arrived == self._parties:
            return
        self._arrived += 1
        async with asyncio.timeout(MEETING_SECONDS):
            await self._barrier.wait()
        self.met += 1


@asynccontextmanager
async def contender_server(
    database_url: str,
    payment_service: PaymentService,
    *,
    locking: bool = True,
    clock_after_lock: bool = True,
    one_snapshot: bool = True,
    pause: Pause = no_pause,
    pool: PoolSettings = CONTENDER_POOL,
) -> AsyncIterator[Stub]:
    """The real server on its own pool, with the test-only protection switches and pause point."""
    database = Database(database_url, pool)
    checkouts = HttpPaymentService(payment_service.url, PAYMENT_TOKEN, timeout_seconds=30.0)
    protections = Protections(locking, clock_after_lock, one_snapshot, pause)

    def uow() -> SqlUnitOfWork:
        return SqlUnitOfWork(database, protections=protections)

    deps = Dependencies(
        uow=uow,
        payment_service=checkouts,
        hold_seconds=600,
    )
    running = await start_server(deps, "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.TicketingServiceStub(channel)
    finally:
        await running.stop(0)
        await checkouts.aclose()
        await database.close()


async def answer_of(call: Awaitable[T]) -> T | RichError:
    """The response, or the rich error the call failed with."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        return rich_error(error)


def label(answer: object) -> str:
    """A short name for an answer, so a tally of answers reads as the outcome of the race."""
    if isinstance(answer, RichError):
        return f"{answer.code.name}/{answer.reason}"
    if isinstance(answer, pb.ConfirmPaymentResponse):
        return pb.ConfirmPaymentOutcome.Name(answer.outcome)
    assert isinstance(answer, pb.StartPaidRegistrationResponse)
    paid = answer.requires_payment and answer.reservation.checkout_url
    return "held with a checkout" if paid else "held without a checkout"


def tally(answers: Iterable[object]) -> Counter[str]:
    return Counter(label(a) for a in answers)


async def offer_tier(stub: Stub, capacity: int) -> None:
    tier = settings_pb2.TierInput(tier_id=TIER, name="General", price_amount=PRICE)
    tier.capacity = capacity
    request = pb.UpdateTicketingSettingsRequest(event_id=EVENT, tiers=[tier])
    await stub.UpdateTicketingSettings(request, timeout=CALL_SECONDS)


def start_request(user_id: str) -> pb.StartPaidRegistrationRequest:
    return pb.StartPaidRegistrationRequest(event_id=EVENT, tier_id=TIER, user_id=user_id)


async def start_all(
    stub: Stub, user_ids: list[str]
) -> list[pb.StartPaidRegistrationResponse | RichError]:
    calls = (stub.StartPaidRegistration(start_request(u), timeout=CALL_SECONDS) for u in user_ids)
    return list(await asyncio.gather(*(answer_of(c) for c in calls)))


def scalar(database_url: str, query: str, *params: object) -> object:
    [(value,)] = sql(database_url, query, *params)
    return value


def live_holds(database_url: str) -> object:
    return scalar(
        database_url,
        "SELECT count(*) FROM reservations WHERE event_id = $1 AND status = 'pending_payment'",
        EVENT,
    )


def distinct_users(count: int) -> list[str]:
    return [f"user-{uuid.uuid4()}" for _ in range(count)]


# --- (a) the tier lock: concurrent buyers never oversell -------------------------------------


async def test_control_without_the_tier_lock_buyers_who_all_counted_first_oversell(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    capacity, buyers = 5, 10
    await offer_tier(stub, capacity)
    meeting = Meeting("seats_counted", parties=buyers)
    async with contender_server(
        database_url, payment_service, locking=False, pause=meeting
    ) as contender:
        answers = await start_all(contender, distinct_users(buyers))

    assert meeting.met == buyers, tally(answers)
    assert tally(answers) == {"held with a checkout": buyers}
    holds = live_holds(database_url)
    assert isinstance(holds, int)
    assert holds > capacity


async def test_two_hundred_concurrent_buyers_of_fifty_seats_get_exactly_fifty_holds(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    await offer_tier(stub, capacity=50)
    async with contender_server(database_url, payment_service) as contender:
        answers = await start_all(contender, distinct_users(200))

    assert tally(answers) == {"held with a checkout": 50, SOLD_OUT: 150}
    assert live_holds(database_url) == 50
    assert len(payment_service.state.created_per_key) == 50


# --- (b) the reservation row lock: one payment confirms once ---------------------------------


async def held_reservation(stub: Stub) -> pb.ConfirmPaymentRequest:
    """Hold a seat through the ordinary server; the identical confirmation of its payment."""
    await offer_tier(stub, capacity=10)
    return await held_reservation_of(stub, "payer")


async def held_reservation_of(stub: Stub, user_id: str) -> pb.ConfirmPaymentRequest:
    """A hold of `user_id` on the tier as offered; the confirmation of its payment."""
    started = await stub.StartPaidRegistration(start_request(user_id), timeout=CALL_SECONDS)
    held = started.reservation
    assert held.checkout_id
    return pb.ConfirmPaymentRequest(
        reservation_id=held.reservation_id,
        checkout_id=held.checkout_id,
        payment_id="payment-1",
        tx_id="tx-1",
        provider="portone",
        amount=PRICE,
        currency_code="KRW",
    )


def settled(database_url: str, reservation_id: str) -> tuple[object, ...]:
    """The reservation's status, its registrations and its paid payment rows."""
    [row] = sql(
        database_url,
        "SELECT status,"
        " (SELECT count(*) FROM registrations g WHERE g.reservation_id = r.reservation_id),"
        " (SELECT count(*) FROM payments p WHERE p.reservation_id = r.reservation_id"
        " AND p.status = 'paid') FROM reservations r WHERE reservation_id = $1",
        reservation_id,
    )
    return row


async def confirm_all(
    stub: Stub, request: pb.ConfirmPaymentRequest, times: int
) -> list[pb.ConfirmPaymentResponse | RichError]:
    calls = (stub.ConfirmPayment(request, timeout=CALL_SECONDS) for _ in range(times))
    return list(await asyncio.gather(*(answer_of(c) for c in calls)))


async def test_control_without_the_reservation_lock_identical_confirmations_do_not_settle_once(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    request = await held_reservation(stub)
    meeting = Meeting("reservation_locked", parties=20)
    async with contender_server(
        database_url, payment_service, locking=False, pause=meeting
    ) as contender:
        answers = await confirm_all(contender, request, times=20)

    assert meeting.met == 20, tally(answers)
    assert tally(answers) != {CONFIRMED: 1, ALREADY_CONFIRMED: 19}


async def test_twenty_identical_concurrent_confirmations_confirm_once_and_register_once(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    request = await held_reservation(stub)
    async with contender_server(database_url, payment_service) as contender:
        answers = await confirm_all(contender, request, times=20)

    assert tally(answers) == {CONFIRMED: 1, ALREADY_CONFIRMED: 19}
    assert settled(database_url, request.reservation_id) == ("confirmed", 1, 1)


# --- (c) the user lock: a double submit is one hold and one checkout -------------------------


async def test_control_without_the_user_lock_a_double_submit_is_not_one_reservation(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    await offer_tier(stub, capacity=50)
    meeting = Meeting("pending_checked", parties=10)
    async with contender_server(
        database_url, payment_service, locking=False, pause=meeting
    ) as contender:
        answers = await start_all(contender, ["double-submitter"] * 10)

    assert meeting.met == 10, tally(answers)
    ids = {a.reservation.reservation_id for a in answers if not isinstance(a, RichError)}
    assert not (len(ids) == 1 and tally(answers) == {"held with a checkout": 10})
    # The partial unique index is the backstop: the race fails calls but never adds a hold.
    assert set(tally(answers)) <= {"held with a checkout", CONCURRENT_UPDATE}
    assert live_holds(database_url) == 1


async def test_ten_concurrent_identical_starts_by_one_user_share_one_hold_and_one_checkout(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    await offer_tier(stub, capacity=50)
    async with contender_server(database_url, payment_service) as contender:
        answers = await start_all(contender, ["double-submitter"] * 10)

    assert tally(answers) == {"held with a checkout": 10}
    held = {
        (a.reservation.reservation_id, a.reservation.checkout_url)
        for a in answers
        if not isinstance(a, RichError)
    }
    assert len(held) == 1
    ((reservation_id, _),) = held
    assert live_holds(database_url) == 1
    assert payment_service.state.created_per_key == {f"reservation:{reservation_id}": 1}


# --- lock_timeout: a lock held too long answers ABORTED, never a hang ------------------------


async def test_a_tier_lock_held_past_lock_timeout_answers_aborted_and_a_retry_then_succeeds(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    await offer_tier(stub, capacity=50)
    quick = PoolSettings(lock_timeout_ms=200, connect_timeout_seconds=30)
    async with contender_server(database_url, payment_service, pool=quick) as contender:
        async with open_transaction(database_url) as holder:
            await holder.execute(
                "SELECT 1 FROM tiers WHERE event_id = $1 AND tier_id = $2 FOR UPDATE", EVENT, TIER
            )
            began = time.monotonic()
            answer = await answer_of(
                contender.StartPaidRegistration(start_request("waiter"), timeout=CALL_SECONDS)
            )
            waited = time.monotonic() - began
        retried = await contender.StartPaidRegistration(
            start_request("waiter"), timeout=CALL_SECONDS
        )

    assert label(answer) == CONCURRENT_UPDATE
    assert waited < 5.0
    assert label(retried) == "held with a checkout"


async def take_the_only_seat(stub: Stub, database_url: str, seat: str) -> None:
    """Fill a tier of one seat with a seat of the kind `seat` names."""
    if seat == "imported":  # a seat Moim gave itself before the switch-over (import-moim)
        sql(database_url, "UPDATE tiers SET external_seats = 1 WHERE tier_id = $1", TIER)
        return
    payment = await held_reservation_of(stub, "first")
    if seat == "ended":
        sql(
            database_url,
            "UPDATE reservations SET expire_time = now() - interval '1 second'"
            " WHERE reservation_id = $1",
            payment.reservation_id,
        )
    if seat in ("paid", "folded"):
        await stub.ConfirmPayment(payment, timeout=CALL_SECONDS)
    if seat == "folded":  # as the sweeper folds a confirmation into the tier's count
        sql(
            database_url,
            "UPDATE reservations SET seat_folded = true WHERE reservation_id = $1",
            payment.reservation_id,
        )
        sql(database_url, "UPDATE tiers SET accepted_count = 1 WHERE tier_id = $1", TIER)


@pytest.mark.parametrize(
    ("seat", "answer"),
    [
        ("held", SOLD_OUT),
        ("paid", SOLD_OUT),
        ("folded", SOLD_OUT),
        ("imported", SOLD_OUT),
        # A hold past its end may still be confirmed: only the count under the lock can tell.
        ("ended", CONCURRENT_UPDATE),
    ],
)
async def test_a_full_tier_answers_sold_out_without_queueing_on_its_lock(
    stub: Stub, database_url: str, payment_service: PaymentService, seat: str, answer: str
) -> None:
    # In a rush most buyers find the tier full: they are answered from a read that takes no
    # lock, instead of each waiting its turn at the tier's lock (here: past lock_timeout).
    await offer_tier(stub, capacity=1)
    await take_the_only_seat(stub, database_url, seat)
    quick = PoolSettings(lock_timeout_ms=200, connect_timeout_seconds=30)
    async with (
        contender_server(database_url, payment_service, pool=quick) as contender,
        open_transaction(database_url) as holder,
    ):
        await holder.execute(
            "SELECT 1 FROM tiers WHERE event_id = $1 AND tier_id = $2 FOR UPDATE", EVENT, TIER
        )
        late = await answer_of(
            contender.StartPaidRegistration(start_request("late"), timeout=CALL_SECONDS)
        )

    assert label(late) == answer


# --- a call cancelled while it waits leaves nothing behind ------------------------------------


async def test_a_call_cancelled_while_it_waits_for_a_lock_leaves_its_connection_usable(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    request = await held_reservation(stub)
    # One connection: the call after the cancelled one must run on the same connection.
    single = PoolSettings(pool_size=1, lock_timeout_ms=10_000, connect_timeout_seconds=30)
    async with contender_server(database_url, payment_service, pool=single) as contender:
        async with open_transaction(database_url) as holder:
            await holder.execute(
                "SELECT 1 FROM reservations WHERE reservation_id = $1 FOR UPDATE",
                request.reservation_id,
            )
            with pytest.raises(grpc.aio.AioRpcError) as cancelled:
                await contender.ConfirmPayment(request, timeout=0.5)
            # The server's statement has stopped waiting (cancelled, not granted) before the
            # lock is released, so the cancelled call cannot have confirmed anything.
            async with asyncio.timeout(MEETING_SECONDS):
                while lock_waiters(database_url) != 0:  # noqa: ASYNC110 - Postgres's state: no event reports it
                    await asyncio.sleep(0.05)
        assert settled(database_url, request.reservation_id)[0] == "pending_payment"
        confirmed = await contender.ConfirmPayment(request, timeout=CALL_SECONDS)

    assert cancelled.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert label(confirmed) == CONFIRMED


# --- (d) the end of a hold: a confirmation racing a buyer never sells the seat twice ---------
#
# A confirmation of a live hold takes no tier lock: the hold's seat was counted when it was
# made. Near the hold's end two things keep a buyer who counts after the end from selling that
# seat again: the confirmation judges "live" by the clock once its row lock is granted, and a
# count treats an ended hold whose row someone has locked (maybe that confirmation) as taken.

HOLD_LEFT_SECONDS = 3.0


async def waiting_for_a_lock_or_done(database_url: str, call: asyncio.Future[T]) -> None:
    """Once a session of the database waits for a lock, or `call` is done (bounded)."""
    async with asyncio.timeout(MEETING_SECONDS):
        while lock_waiters(database_url) == 0 and not call.done():  # noqa: ASYNC110 - Postgres's state: no event reports it
            await asyncio.sleep(0.02)


class Gate:
    """A pause that holds every call reaching `point` until the test opens it."""

    def __init__(self, point: str) -> None:
        self.point = point
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self, reached: str) -> None:
        if reached != self.point:
            return
        self.reached.set()
        async with asyncio.timeout(MEETING_SECONDS):
            await self.opened.wait()

    async def stopped(self, call: Awaitable[T]) -> asyncio.Future[T]:
        """Start `call`; its future once it waits at the point (a bounded wait)."""
        started = asyncio.ensure_future(call)
        async with asyncio.timeout(MEETING_SECONDS):
            await self.reached.wait()
        return started


async def hold_ending_soon(stub: Stub, database_url: str) -> pb.ConfirmPaymentRequest:
    """The one seat of the tier, held by a payer whose hold ends in a few seconds."""
    await offer_tier(stub, capacity=1)
    request = await held_reservation_of(stub, "payer")
    scalar(
        database_url,
        "UPDATE reservations SET expire_time = now() + make_interval(secs => $1)"
        " WHERE reservation_id = $2 RETURNING 1",
        HOLD_LEFT_SECONDS,
        request.reservation_id,
    )
    return request


async def until_ended(database_url: str, reservation_id: str) -> None:
    """Wait until the database's clock is past the hold's end (it runs on its own)."""
    ended = "SELECT statement_timestamp() > expire_time FROM reservations WHERE reservation_id = $1"
    async with asyncio.timeout(MEETING_SECONDS):
        while not scalar(database_url, ended, reservation_id):  # noqa: ASYNC110 - Postgres's clock: no event reports it
            await asyncio.sleep(0.05)


def seats_given(database_url: str) -> object:
    """Confirmed reservations plus live holds of the tier: never more than its one seat."""
    return scalar(
        database_url,
        "SELECT count(*) FROM reservations WHERE event_id = $1 AND (status = 'confirmed'"
        " OR (status = 'pending_payment' AND expire_time > now()))",
        EVENT,
    )


async def confirm_waiting_on_the_row_past_the_end(
    contender: Stub, stub: Stub, database_url: str
) -> tuple[str, str]:
    """A confirmation that starts before the hold's end and waits on its row until a buyer,
    counting after the end, has taken the seat; the buyer's and the confirmation's answers."""
    request = await hold_ending_soon(stub, database_url)
    async with open_transaction(database_url) as holder:
        # Any writer of the row that does not change its status (attaching a checkout does
        # this) holds this lock; a count's share lock on the ended hold does not wait for it.
        await holder.execute(
            "SELECT 1 FROM reservations WHERE reservation_id = $1 FOR NO KEY UPDATE",
            request.reservation_id,
        )
        confirming = asyncio.ensure_future(
            answer_of(contender.ConfirmPayment(request, timeout=CALL_SECONDS))
        )
        async with asyncio.timeout(MEETING_SECONDS):
            while lock_waiters(database_url) == 0:  # noqa: ASYNC110 - Postgres's state: no event reports it
                await asyncio.sleep(0.02)
        await until_ended(database_url, request.reservation_id)
        buyer = await answer_of(stub.StartPaidRegistration(start_request("buyer")))
    return label(buyer), label(await confirming)


async def test_control_judged_by_its_start_a_confirmation_waiting_past_the_end_oversells(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    async with contender_server(database_url, payment_service, clock_after_lock=False) as contender:
        answers = await confirm_waiting_on_the_row_past_the_end(contender, stub, database_url)

    assert answers == ("held with a checkout", CONFIRMED)
    assert seats_given(database_url) == 2


async def test_a_confirmation_that_waited_past_the_end_is_late_and_sells_no_seat_twice(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    async with contender_server(database_url, payment_service) as contender:
        answers = await confirm_waiting_on_the_row_past_the_end(contender, stub, database_url)

    assert answers == ("held with a checkout", PAID_UNFULFILLED)
    assert seats_given(database_url) == 1


async def buyer_after_the_end_while_a_live_confirmation_commits(
    stub: Stub, buyers: Stub, database_url: str, payment_service: PaymentService
) -> tuple[str, str]:
    """A confirmation that judged the hold live just before its end and commits after it, and a
    buyer (served by `buyers`) counting in between; the buyer's and the confirmation's answers."""
    request = await hold_ending_soon(stub, database_url)
    gate = Gate("reservation_locked")
    async with contender_server(database_url, payment_service, pause=gate) as confirmer:
        confirming = await gate.stopped(
            answer_of(confirmer.ConfirmPayment(request, timeout=CALL_SECONDS))
        )
        await until_ended(database_url, request.reservation_id)
        buyer = await answer_of(buyers.StartPaidRegistration(start_request("buyer")))
        gate.opened.set()
        confirmed = await confirming
    return label(buyer), label(confirmed)


async def test_control_a_count_that_ignores_locked_ended_holds_sells_the_seat_twice(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    async with contender_server(database_url, payment_service, locking=False) as unlocked:
        answers = await buyer_after_the_end_while_a_live_confirmation_commits(
            stub, unlocked, database_url, payment_service
        )

    assert answers == ("held with a checkout", CONFIRMED)
    assert seats_given(database_url) == 2


async def test_an_ended_hold_whose_confirmation_is_committing_still_counts_as_taken(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    answers = await buyer_after_the_end_while_a_live_confirmation_commits(
        stub, stub, database_url, payment_service
    )

    assert answers == (SOLD_OUT, CONFIRMED)
    assert seats_given(database_url) == 1


# --- (e) a callback and a reconciliation of one payment: one registration, one payment row ---


async def callback_and_reconciliation(
    stub: Stub, contender: Stub, payment_service: PaymentService
) -> tuple[str, str]:
    """The payment's callback and a ReconcileReservation of it at once; both outcomes."""
    request = await held_reservation(stub)
    payment_service.state.mark_paid(request.checkout_id, payment_id=request.payment_id)
    reconcile = pb.ReconcileReservationRequest(reservation_id=request.reservation_id)
    callback, reconciled = await asyncio.gather(
        answer_of(contender.ConfirmPayment(request, timeout=CALL_SECONDS)),
        answer_of(contender.ReconcileReservation(reconcile, timeout=CALL_SECONDS)),
    )
    if isinstance(reconciled, pb.ReconcileReservationResponse):
        return label(callback), pb.ConfirmPaymentOutcome.Name(reconciled.outcome)
    return label(callback), label(reconciled)


async def test_control_without_the_reservation_lock_a_callback_and_a_reconciliation_both_settle(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    meeting = Meeting("reservation_locked", parties=2)
    async with contender_server(
        database_url, payment_service, locking=False, pause=meeting
    ) as contender:
        outcomes = await callback_and_reconciliation(stub, contender, payment_service)

    # Both settle the same payment at once: both claim it, or the second collides with the first's
    # registration (the unique index is the last line of defence, and it answers INTERNAL).
    assert meeting.met == 2, outcomes
    assert sorted(outcomes) != sorted([CONFIRMED, ALREADY_CONFIRMED])
    assert CONFIRMED in outcomes


async def test_a_callback_and_a_reconciliation_racing_give_one_registration_and_one_payment(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    async with contender_server(database_url, payment_service) as contender:
        outcomes = await callback_and_reconciliation(stub, contender, payment_service)

    assert sorted(outcomes) == sorted([CONFIRMED, ALREADY_CONFIRMED])
    assert settled_any(database_url) == ("confirmed", 1, 1)


def settled_any(database_url: str) -> tuple[object, ...]:
    """The one reservation's status, its registrations and its paid payment rows."""
    [(reservation_id,)] = sql(database_url, "SELECT reservation_id::text FROM reservations")
    return settled(database_url, reservation_id)


# --- (f) two refunds of one payment at once: together they never exceed what was paid ---


async def two_refunds_at_once(
    stub: Stub, contender: Stub, payment_service: PaymentService
) -> tuple[str, str]:
    """Two organizers refund 6,000 each of one 10,000 payment at once; both answers."""
    request = await held_reservation(stub)
    await stub.ConfirmPayment(request)
    refunds = [
        pb.RefundReservationRequest(
            reservation_id=request.reservation_id,
            amount=6000,
            reason=refund_pb2.REFUND_REASON_ORGANIZER,
            request_id=f"organizer-{n}",
        )
        for n in (1, 2)
    ]
    first, second = await asyncio.gather(
        *(answer_of(contender.RefundReservation(r, timeout=CALL_SECONDS)) for r in refunds)
    )
    return refund_label(first), refund_label(second)


def refund_label(answer: object) -> str:
    return "refunded" if isinstance(answer, pb.RefundReservationResponse) else label(answer)


def refunds_owed(database_url: str) -> int:
    [(owed,)] = sql(database_url, "SELECT coalesce(sum(amount), 0) FROM refunds")
    return int(owed)


async def test_control_without_the_reservation_lock_two_refunds_exceed_the_payment(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    # Both have read the payment's refunds (none) before either writes its own.
    meeting = Meeting("refunds_read", parties=2)
    async with contender_server(
        database_url, payment_service, locking=False, pause=meeting
    ) as contender:
        answers = await two_refunds_at_once(stub, contender, payment_service)

    assert meeting.met == 2, answers
    assert answers == ("refunded", "refunded")
    assert refunds_owed(database_url) == 12000  # more than the 10,000 paid


async def test_two_refunds_at_once_never_exceed_the_payment(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    async with contender_server(database_url, payment_service) as contender:
        answers = await two_refunds_at_once(stub, contender, payment_service)

    assert sorted(answers) == ["FAILED_PRECONDITION/REFUND_EXCEEDS_PAID", "refunded"]
    assert refunds_owed(database_url) == 6000


# --- (g0) a tier removed while a buyer waits to count its seats: the buyer hears it is gone ---


async def test_a_tier_removed_before_its_seats_are_counted_answers_tier_not_found(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    # The buyer had read the settings (the tier was there); the save removing it committed
    # before the buyer took the tier's lock. The buyer was told SOLD_OUT, which no retry mends.
    await offer_tier(stub, capacity=10)
    gate = Gate("pending_checked")
    async with contender_server(database_url, payment_service, pause=gate) as buyer:
        holding = await gate.stopped(
            answer_of(buyer.StartPaidRegistration(start_request("buyer"), timeout=CALL_SECONDS))
        )
        other = settings_pb2.TierInput(tier_id="other", name="Other", price_amount=PRICE)
        await stub.UpdateTicketingSettings(
            pb.UpdateTicketingSettingsRequest(event_id=EVENT, tiers=[other]), timeout=CALL_SECONDS
        )
        gate.opened.set()
        held = await holding

    assert label(held) == "NOT_FOUND/TIER_NOT_FOUND"
    assert scalar(database_url, "SELECT count(*) FROM reservations") == 0


# --- (g) a hold counted just before the event was cancelled: the cancellation still finds it ---


async def hold_counted_while_the_event_is_cancelled(
    stub: Stub,
    canceller: Stub,
    deps: Dependencies,
    database_url: str,
    payment_service: PaymentService,
) -> tuple[str, bool]:
    """A StartPaidRegistration paused after counting its seat while `canceller` cancels the event
    and the cancellation runs; then the hold goes on. Its status at the end, and whether the
    cancellation counted itself done."""
    await offer_tier(stub, capacity=10)
    gate = Gate("seats_counted")
    async with contender_server(database_url, payment_service, pause=gate) as buyer:
        holding = await gate.stopped(
            answer_of(buyer.StartPaidRegistration(start_request("buyer"), timeout=CALL_SECONDS))
        )
        cancelling = asyncio.ensure_future(
            canceller.CancelEvent(pb.CancelEventRequest(event_id=EVENT), timeout=CALL_SECONDS)
        )
        # Either CancelEvent waits for the buyer's tier lock, or (the control) it is done.
        await waiting_for_a_lock_or_done(database_url, cancelling)
        await cancel_events(deps)
        gate.opened.set()
        held = await holding
        await cancelling
    await cancel_events(deps)
    [(status, done)] = sql(
        database_url,
        "SELECT r.status, s.cancel_done_time IS NOT NULL FROM reservations r"
        " JOIN ticketing_settings s USING (event_id)",
    )
    assert isinstance(held, pb.StartPaidRegistrationResponse), held
    return status, done


async def test_control_a_cancellation_that_takes_no_tier_lock_leaves_a_live_hold_behind(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    async with contender_server(database_url, payment_service, locking=False) as unlocked:
        outcome = await hold_counted_while_the_event_is_cancelled(
            stub, unlocked, deps, database_url, payment_service
        )

    assert outcome == ("pending_payment", True)  # a live hold on an event cancelled and done


async def test_a_hold_counted_just_before_the_event_was_cancelled_is_cancelled_with_it(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    outcome = await hold_counted_while_the_event_is_cancelled(
        stub, stub, deps, database_url, payment_service
    )

    assert outcome == ("cancelled", True)


# --- (h) a seat given up while the event is cancelled: never under the policy once it answered ---


async def seat_given_up_while_the_event_is_cancelled(
    stub: Stub, user: Stub, gate: Gate, database_url: str
) -> tuple[bool, list[tuple[str, int]]]:
    """A CancelRegistration on `user`'s server, paused once it read that the event is on, while
    CancelEvent runs; then it goes on. Whether CancelEvent answered while the seat was still
    held, and the refunds owed (reason, amount)."""
    start = Timestamp()
    start.FromDatetime(datetime.now(UTC) + timedelta(hours=10))  # the policy gives 0 %
    tier = settings_pb2.TierInput(tier_id=TIER, name="General", price_amount=PRICE, capacity=10)
    await stub.UpdateTicketingSettings(
        pb.UpdateTicketingSettingsRequest(event_id=EVENT, tiers=[tier], event_start_time=start)
    )
    paid = await held_reservation_of(stub, "payer")
    await stub.ConfirmPayment(paid, timeout=CALL_SECONDS)
    give_up = pb.CancelRegistrationRequest(reservation_id=paid.reservation_id, user_id="payer")
    giving_up = await gate.stopped(
        answer_of(user.CancelRegistration(give_up, timeout=CALL_SECONDS))
    )
    cancelling = asyncio.ensure_future(
        stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT), timeout=CALL_SECONDS)
    )
    # Either CancelEvent waits for the tier the user holds, or (the control) it answers.
    await waiting_for_a_lock_or_done(database_url, cancelling)
    answered_first = cancelling.done()
    gate.opened.set()
    assert isinstance(await giving_up, pb.CancelRegistrationResponse)
    await cancelling
    owed = sql(database_url, "SELECT reason, amount FROM refunds ORDER BY create_time")
    return answered_first, [(str(reason), int(amount)) for reason, amount in owed]


async def test_control_without_the_tier_lock_a_seat_is_given_up_under_the_policy_after_cancel(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    gate = Gate("event_read")
    async with contender_server(database_url, payment_service, locking=False, pause=gate) as user:
        outcome = await seat_given_up_while_the_event_is_cancelled(stub, user, gate, database_url)

    # CancelEvent answered while the seat was held, and the seat still got the policy's 0 %,
    # not the cancellation's full refund.
    assert outcome == (True, [])


async def test_a_seat_given_up_while_the_event_is_cancelled_comes_first_or_gets_it_all(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    gate = Gate("event_read")
    async with contender_server(database_url, payment_service, pause=gate) as user:
        outcome = await seat_given_up_while_the_event_is_cancelled(stub, user, gate, database_url)

    # CancelEvent waited for the tier: the seat was given up before the event was cancelled.
    assert outcome == (False, [])


# --- (i) import-moim in the dual run: a hold it brings in never takes a seat sold meanwhile ---


async def sale_while_moim_holds_come_in(
    stub: Stub, database_url: str, *, locking: bool
) -> tuple[str, object]:
    """Two live holds of Moim on a tier of two seats, imported in the dual run, with the import
    paused once it counted the service's holds while a buyer of the service starts; then the
    import goes on. The buyer's answer, and the tier's live holds at the end."""
    source_url = await create_database(database_url, SOURCE_DATABASE, SCHEMA.read_text())
    moim = await connect(source_url)
    database = Database(database_url, CONTENDER_POOL)

    def moim_import(protections: Protections) -> MoimImport:
        return MoimImport(
            source=PostgresMoimSource(source_url, CONTENDER_POOL),
            target=lambda: SqlImportTarget(database, protections),
            public_base_url=PUBLIC_BASE_URL,
        )

    try:
        event, tier = await add_event(moim, "Two seats", capacity=2)
        await import_moim(moim_import(Protections()), dry_run=False)  # the event and its tier
        for name in ("first-in-moim", "second-in-moim"):
            await add_hold(moim, event, tier, name)
        gate = Gate("import_counted")
        paused = Protections(locking, pause=gate)
        imported = await gate.stopped(import_moim(moim_import(paused), dry_run=False))
        buy = pb.StartPaidRegistrationRequest(event_id=event, tier_id=tier, user_id="buyer")
        buying = asyncio.ensure_future(
            answer_of(stub.StartPaidRegistration(buy, timeout=CALL_SECONDS))
        )
        # Either the buyer waits for the tier the import holds, or (the control) it is done.
        await waiting_for_a_lock_or_done(database_url, buying)
        gate.opened.set()
        [outcome] = (await imported).outcomes
        assert outcome.failure is None, outcome.failure
        bought = await buying
    finally:
        await moim.close()
        await database.close()
    held = scalar(
        database_url,
        "SELECT count(*) FROM reservations WHERE event_id = $1 AND status = 'pending_payment'",
        event,
    )
    return label(bought), held


async def test_control_an_import_that_takes_no_tier_lock_brings_in_holds_over_capacity(
    stub: Stub, database_url: str
) -> None:
    outcome = await sale_while_moim_holds_come_in(stub, database_url, locking=False)

    assert outcome == ("held with a checkout", 3)  # three live holds on a tier of two seats


async def test_a_buyer_during_the_import_waits_for_it_and_finds_the_tier_sold_out(
    stub: Stub, database_url: str
) -> None:
    outcome = await sale_while_moim_holds_come_in(stub, database_url, locking=True)

    assert outcome == (SOLD_OUT, 2)


# --- (j) a refund's try recorded while the sender's was under way: the stale one is dropped ---


@asynccontextmanager
async def background_worker(
    database_url: str, payment_service: PaymentService, pause: Pause
) -> AsyncIterator[Dependencies]:
    """A replica's background work on its own pool, pausing as told; a refund's first attempt
    is its last."""
    database = Database(database_url, CONTENDER_POOL)
    checkouts = HttpPaymentService(payment_service.url, PAYMENT_TOKEN, timeout_seconds=30.0)
    protections = Protections(pause=pause)

    def uow() -> SqlUnitOfWork:
        return SqlUnitOfWork(database, protections=protections)

    try:
        yield Dependencies(
            uow=uow,
            payment_service=checkouts,
            hold_seconds=600,
            refund_retry=RefundRetryPolicy(max_attempts=1),
        )
    finally:
        await checkouts.aclose()
        await database.close()


async def test_a_sender_s_stale_failure_never_overwrites_the_pending_a_refresh_recorded(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    state = payment_service.state
    request = await held_reservation(stub)
    state.mark_paid(request.checkout_id, payment_id=request.payment_id)
    await stub.ConfirmPayment(request)
    made = await stub.RefundReservation(
        pb.RefundReservationRequest(
            reservation_id=request.reservation_id,
            reason=refund_pb2.REFUND_REASON_ORGANIZER,
            request_id="organizer",
        )
    )
    refund_id, key = made.refund.refund_id, f"refund:{made.refund.refund_id}"
    state.refund_settlement = "pending"
    state.faults["create_refund"] = "error_500"
    gate = Gate("refund_recording")

    async with background_worker(database_url, payment_service, gate) as sender:
        # Its one send failed and the payment service did not know the refund: it fails it...
        sending = await gate.stopped(send_due_refunds(sender))
        # ... while the send the payment service had not yet answered lands there, and a
        # callback's RefreshRefund records the refund pending.
        [sent] = [r for r in state.requests if r.endpoint == "create_refund"]
        state.open_refund(key, refund_body(key, sent.body))
        refreshed = await stub.RefreshRefund(
            pb.RefreshRefundRequest(refund_id=refund_id), timeout=CALL_SECONDS
        )
        gate.opened.set()
        await sending

    assert refreshed.refund.state == refund_pb2.REFUND_STATE_PENDING
    assert sql(database_url, "SELECT status, failure_code, attempts FROM refunds") == [
        ("pending", None, 1)
    ]
    failed = "SELECT count(*) FROM registration_events WHERE type = 'refund_failed'"
    assert sql(database_url, failed) == [(0,)]


# --- (k) a settings update beside an event's cancellation batch: one waits, none deadlocks ---


async def test_a_settings_update_beside_a_cancellation_batch_waits_for_it_without_a_deadlock(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    # The batch took a folded seat's tier (its count) and then the event's settings row to
    # count its progress; the update took the settings row and then the tiers. Each waited for
    # the other, and Postgres aborted one: an organizer's save answered ABORTED.
    request = await held_reservation(stub)
    payment_service.state.mark_paid(request.checkout_id, payment_id=request.payment_id)
    await stub.ConfirmPayment(request, timeout=CALL_SECONDS)
    gate = Gate("cancellation_finishing")
    async with background_worker(database_url, payment_service, gate) as worker:
        assert await fold_confirmed_seats(worker) == 1  # the seat is in the tier's count
        await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT), timeout=CALL_SECONDS)
        batch = await gate.stopped(cancel_batch(worker, 10))
        saved = asyncio.ensure_future(answer_of(offer_tier(stub, capacity=20)))
        await waiting_for_a_lock_or_done(database_url, saved)
        gate.opened.set()
        cancelled = await batch
        updated = await saved

    assert cancelled == 1
    assert updated is None, updated  # saved, not aborted


# --- (l) a reservation read while its refund settles: the amount and the refunds agree ---


async def refund_settling_during_a_read(
    stub: Stub,
    service: Service,
    database_url: str,
    payment_service: PaymentService,
    *,
    one_snapshot: bool = True,
) -> pb.GetReservationResponse:
    """GetReservation of a refunded seat, paused after it read the reservation while the refund
    is recorded as made; the answer."""
    request = await held_reservation(stub)
    payment_service.state.mark_paid(request.checkout_id, payment_id=request.payment_id)
    await stub.ConfirmPayment(request, timeout=CALL_SECONDS)
    await stub.RefundReservation(
        pb.RefundReservationRequest(
            reservation_id=request.reservation_id,
            reason=refund_pb2.REFUND_REASON_ORGANIZER,
            request_id="organizer",
        ),
        timeout=CALL_SECONDS,
    )
    gate = Gate("reservation_read")
    async with contender_server(
        database_url, payment_service, one_snapshot=one_snapshot, pause=gate
    ) as reader:
        reading = await gate.stopped(
            reader.GetReservation(
                pb.GetReservationRequest(reservation_id=request.reservation_id),
                timeout=CALL_SECONDS,
            )
        )
        await send_due_refunds(service.deps)  # the refund is made and recorded
        gate.opened.set()
        return await reading


async def test_control_in_two_moments_a_read_shows_a_refund_made_and_nothing_refunded(
    stub: Stub, service: Service, database_url: str, payment_service: PaymentService
) -> None:
    answer = await refund_settling_during_a_read(
        stub, service, database_url, payment_service, one_snapshot=False
    )

    [refund] = answer.reservation.refunds
    assert (refund.state, refund.amount) == (refund_pb2.REFUND_STATE_SUCCEEDED, PRICE)
    assert answer.reservation.refunded_amount == 0


async def test_a_reservation_and_its_refunds_are_read_from_one_moment(
    stub: Stub, service: Service, database_url: str, payment_service: PaymentService
) -> None:
    answer = await refund_settling_during_a_read(stub, service, database_url, payment_service)

    # As the reservation was read: the refund not yet made, nothing refunded.
    [refund] = answer.reservation.refunds
    assert (refund.state, refund.amount) == (refund_pb2.REFUND_STATE_REQUESTED, PRICE)
    assert answer.reservation.refunded_amount == 0
    assert sql(database_url, "SELECT refunded_amount FROM reservations") == [(PRICE,)]
