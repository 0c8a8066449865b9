"""Refunds and giving up a seat, through the real server, Postgres and the payment stand-in:
money ends in a seat or back with the payer (SPEC §10)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from moim.ticketing.v1 import refund_pb2, registration_event_pb2, reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.callbacks import HMAC_SECRET, hmac_signed, post
from tests.integration.conftest import PaymentService, service_config, serving
from tests.integration.flows import (
    EVENT,
    end_hold,
    hold,
    paid_tier,
    payment_for,
    sql,
    status_becomes,
)
from tests.rich_errors import rich_error
from ticketing_service.bootstrap import Service, cancel_events, wired
from ticketing_service.domain.refunds import RefundStatus
from ticketing_service.entrypoints.webhook.app import CALLBACK_PATH
from ticketing_service.service_layer.ports import RefundChange
from ticketing_service.service_layer.refund_worker import send_due_refunds

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

GUARD_SECONDS = 20
SUCCEEDED = refund_pb2.REFUND_STATE_SUCCEEDED
REQUESTED = refund_pb2.REFUND_STATE_REQUESTED
REFUND_FAILED = refund_pb2.REFUND_STATE_FAILED


async def configure(
    stub: Stub,
    *,
    starts_in: timedelta | None = None,
    price: int = 30000,
    currency: str = "KRW",
    capacity: int = 1,
) -> None:
    """The event with one paid tier of `capacity` seats, starting `starts_in` from now."""
    request = pb.UpdateTicketingSettingsRequest(
        event_id=EVENT,
        event_title="Launch party",
        tiers=[paid_tier("vip", price=price, capacity=capacity)],
        currency_code=currency,
    )
    if starts_in is not None:
        start = Timestamp()
        start.FromDatetime(datetime.now(UTC) + starts_in)
        request.event_start_time.CopyFrom(start)
    await stub.UpdateTicketingSettings(request)


async def paid_seat(
    stub: Stub, payment_service: PaymentService, user_id: str
) -> reservation_pb2.Reservation:
    """A confirmed reservation, paid at the payment service as ConfirmPayment says."""
    held = await hold(stub, user_id)
    request = payment_for(held)
    payment_service.state.mark_paid(held.checkout_id, payment_id=request.payment_id)
    confirmed = await stub.ConfirmPayment(request)
    assert confirmed.reservation.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
    return confirmed.reservation


async def reservation(stub: Stub, reservation_id: str) -> reservation_pb2.Reservation:
    answer = await stub.GetReservation(pb.GetReservationRequest(reservation_id=reservation_id))
    return answer.reservation


async def error_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        rich = rich_error(error)
        return rich.code, rich.reason
    raise AssertionError("the call succeeded")


def refund_posts(payment_service: PaymentService) -> int:
    """How many refunds were sent to the payment service (POST /v1/ticket-refunds)."""
    return sum(1 for r in payment_service.state.requests if r.endpoint == "create_refund")


@asynccontextmanager
async def refunding_service(
    database_url: str, payment_url: str, **settings: str
) -> AsyncIterator[tuple[Stub, Service]]:
    """The service as `serve` runs it, its background passes every 0.2 s."""
    config = service_config(
        database_url, payment_url, TICKETING_SWEEP_INTERVAL_SECONDS="0.2", **settings
    )
    async with serving(config) as running:
        yield running


async def refunded(stub: Stub, reservation_id: str, amount: int) -> reservation_pb2.Reservation:
    """The reservation once `amount` of it was refunded (polled; bounded by the guard)."""
    async with asyncio.timeout(GUARD_SECONDS):
        while True:  # the server's state: polled, bounded by the guard
            found = await reservation(stub, reservation_id)
            if found.refunded_amount == amount:
                return found
            await asyncio.sleep(0.05)


async def feed_event(stub: Stub, event_type: int) -> registration_event_pb2.RegistrationEvent:
    """The first feed event of `event_type`, once numbered (polled; bounded by the guard)."""
    async with asyncio.timeout(GUARD_SECONDS):
        while True:  # the sequencer numbers events just after they commit
            page = await stub.ListRegistrationEvents(pb.ListRegistrationEventsRequest())
            found = [e for e in page.events if e.type == event_type]
            if found:
                return found[0]
            await asyncio.sleep(0.05)


def back_off_over(database_url: str) -> None:
    """Every refund waiting out its back-off is due now."""
    sql(database_url, "UPDATE refunds SET next_attempt_time = now()")


# --- owed without anyone asking ---


async def test_a_paid_unfulfilled_reservation_is_refunded_in_full_without_anyone_asking(
    database_url: str, payment_service: PaymentService
) -> None:
    async with refunding_service(database_url, payment_service.url) as (stub, _):
        await configure(stub)
        late = await hold(stub, "late")
        end_hold(database_url, late.reservation_id)
        # Until the service's pass has expired it, the pass holds its row lock, and a hold past
        # its end that another transaction has locked still counts as taken.
        await status_becomes(stub, late.reservation_id, reservation_pb2.RESERVATION_STATUS_EXPIRED)
        await paid_seat(stub, payment_service, "on-time")
        request = payment_for(late)
        payment_service.state.mark_paid(late.checkout_id, payment_id=request.payment_id)
        answer = await stub.ConfirmPayment(request)
        assert answer.outcome == pb.CONFIRM_PAYMENT_OUTCOME_PAID_UNFULFILLED
        # The answer names the refund it owes (it was empty before).
        assert [r.reason for r in answer.reservation.refunds] == [
            refund_pb2.REFUND_REASON_PAID_UNFULFILLED
        ]

        found = await refunded(stub, late.reservation_id, 30000)

    [refund] = found.refunds
    assert (refund.amount, refund.state) == (30000, SUCCEEDED)
    assert refund.reason == refund_pb2.REFUND_REASON_PAID_UNFULFILLED
    assert refund.payment_id == request.payment_id
    assert payment_service.state.created_per_key[f"refund:{refund.refund_id}"] == 1


async def test_with_auto_refund_off_a_paid_unfulfilled_reservation_owes_nothing_by_itself(
    database_url: str, payment_service: PaymentService
) -> None:
    async with refunding_service(
        database_url, payment_service.url, TICKETING_AUTO_REFUND="false"
    ) as (stub, service):
        await configure(stub)
        late = await hold(stub, "late")
        end_hold(database_url, late.reservation_id)
        # As in the test above: not before the pass has expired it.
        await status_becomes(stub, late.reservation_id, reservation_pb2.RESERVATION_STATUS_EXPIRED)
        await paid_seat(stub, payment_service, "on-time")
        await stub.ConfirmPayment(payment_for(late))
        await send_due_refunds(service.deps)

        found = await reservation(stub, late.reservation_id)

    assert found.status == reservation_pb2.RESERVATION_STATUS_PAID_UNFULFILLED
    assert list(found.refunds) == []


# --- a user gives up a seat ---


async def test_cancelling_100_hours_before_the_start_refunds_70_percent_and_resells_the_seat(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub, starts_in=timedelta(hours=100), price=30001)
    seat = await paid_seat(stub, payment_service, "giver")

    cancelled = await stub.CancelRegistration(
        pb.CancelRegistrationRequest(
            reservation_id=seat.reservation_id, user_id="giver", request_id="cancel-1"
        )
    )
    resold = await hold(stub, "taker")
    await send_due_refunds(service.deps)

    assert cancelled.reservation.status == (
        reservation_pb2.RESERVATION_STATUS_REGISTRATION_CANCELLED
    )
    assert (cancelled.refund.amount, cancelled.refund.state) == (21000, REQUESTED)  # floor(70 %)
    assert cancelled.refund.reason == refund_pb2.REFUND_REASON_CANCELLATION
    assert resold.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    after = await reservation(stub, seat.reservation_id)
    assert after.refunded_amount == 21000
    assert [r.state for r in after.refunds] == [SUCCEEDED]


async def test_cancelling_on_the_day_refunds_nothing_and_frees_the_seat_in_usd(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub, starts_in=timedelta(hours=5), price=1999, currency="USD")
    seat = await paid_seat(stub, payment_service, "giver")

    cancelled = await stub.CancelRegistration(
        pb.CancelRegistrationRequest(reservation_id=seat.reservation_id, user_id="giver")
    )
    resold = await hold(stub, "taker")

    assert cancelled.reservation.status == (
        reservation_pb2.RESERVATION_STATUS_REGISTRATION_CANCELLED
    )
    assert not cancelled.HasField("refund")
    assert list(cancelled.reservation.refunds) == []
    assert resold.amount == 1999


async def test_a_week_ahead_a_usd_seat_is_refunded_in_full_and_a_repeat_answers_the_same(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub, starts_in=timedelta(days=8), price=1999, currency="USD")
    seat = await paid_seat(stub, payment_service, "giver")
    request = pb.CancelRegistrationRequest(
        reservation_id=seat.reservation_id, user_id="giver", request_id="c-1"
    )

    first = await stub.CancelRegistration(request)
    again = await stub.CancelRegistration(request)

    assert (first.refund.amount, first.refund.currency_code) == (1999, "USD")
    assert again.refund.refund_id == first.refund.refund_id
    assert len(again.reservation.refunds) == 1


async def test_a_user_who_gave_up_a_seat_may_register_again(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure(stub, capacity=2)
    seat = await paid_seat(stub, payment_service, "returning")
    await stub.CancelRegistration(
        pb.CancelRegistrationRequest(reservation_id=seat.reservation_id, user_id="returning")
    )

    again = await paid_seat(stub, payment_service, "returning")

    assert again.registration_id not in ("", seat.registration_id)


async def test_only_the_owner_gives_up_a_seat_and_only_a_confirmed_one(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure(stub, capacity=2)
    seat = await paid_seat(stub, payment_service, "owner")
    pending = await hold(stub, "holder")

    someone_else = await error_of(
        stub.CancelRegistration(
            pb.CancelRegistrationRequest(reservation_id=seat.reservation_id, user_id="thief")
        )
    )
    a_hold = await error_of(
        stub.CancelRegistration(
            pb.CancelRegistrationRequest(reservation_id=pending.reservation_id, user_id="holder")
        )
    )

    assert someone_else == (grpc.StatusCode.PERMISSION_DENIED, "NOT_RESERVATION_OWNER")
    assert a_hold == (grpc.StatusCode.FAILED_PRECONDITION, "REGISTRATION_NOT_CANCELLABLE")


# --- an organizer refunds ---


def refunds_settle_later_through(
    shim: httpx.AsyncClient, payment_service: PaymentService, seat: reservation_pb2.Reservation
) -> None:
    """The payment service settles refunds later, and tells of each with a signed callback to
    the shim, as the seat's checkout names it."""
    state = payment_service.state
    state.refund_settlement = "pending"
    state.refund_callbacks = True
    state.callback_secret = HMAC_SECRET
    state.checkout_for(seat.reservation_id).body["callbackUrl"] = f"{shim.base_url}{CALLBACK_PATH}"


def refund_request(seat: reservation_pb2.Reservation, amount: int, request_id: str) -> Any:
    return pb.RefundReservationRequest(
        reservation_id=seat.reservation_id,
        amount=amount,
        reason=refund_pb2.REFUND_REASON_GOODWILL,
        request_id=request_id,
    )


async def test_partial_refunds_never_exceed_the_payment(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")

    first = await stub.RefundReservation(refund_request(seat, 10000, "r-1"))
    too_much = await error_of(stub.RefundReservation(refund_request(seat, 20001, "r-2")))
    rest = await stub.RefundReservation(refund_request(seat, 0, "r-3"))
    nothing_left = await error_of(stub.RefundReservation(refund_request(seat, 0, "r-4")))
    await send_due_refunds(service.deps)

    assert (first.refund.amount, rest.refund.amount) == (10000, 20000)
    assert too_much == (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_PAID")
    assert nothing_left == too_much
    after = await reservation(stub, seat.reservation_id)
    assert after.refunded_amount == 30000
    assert after.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED  # the seat is kept


async def test_a_refund_repeated_with_its_request_id_is_made_once_and_other_data_is_refused(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")

    first = await stub.RefundReservation(refund_request(seat, 5000, "same"))
    again = await stub.RefundReservation(refund_request(seat, 5000, "same"))
    other = await error_of(stub.RefundReservation(refund_request(seat, 6000, "same")))

    assert again.refund.refund_id == first.refund.refund_id
    assert len(again.reservation.refunds) == 1
    assert other == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")


async def test_one_request_id_names_one_refund_of_a_reservation_whichever_call_made_it(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")
    await stub.RefundReservation(refund_request(seat, 5000, "press-1"))

    def give_up(request_id: str) -> Any:
        return stub.CancelRegistration(
            pb.CancelRegistrationRequest(
                reservation_id=seat.reservation_id, user_id="payer", request_id=request_id
            )
        )

    reused = await error_of(give_up("press-1"))
    kept = await reservation(stub, seat.reservation_id)
    given_up = await give_up("press-2")
    refund_again = await error_of(stub.RefundReservation(refund_request(seat, 0, "press-2")))

    assert reused == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert kept.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
    assert [r.amount for r in kept.refunds] == [5000]
    assert given_up.reservation.status == reservation_pb2.RESERVATION_STATUS_REGISTRATION_CANCELLED
    assert refund_again == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")


async def test_a_refund_that_releases_the_seat_puts_it_back_on_sale(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")
    request = refund_request(seat, 0, "release")
    request.reason = refund_pb2.REFUND_REASON_ORGANIZER
    request.release_seat = True

    answer = await stub.RefundReservation(request)
    resold = await hold(stub, "next")

    assert answer.reservation.status == (reservation_pb2.RESERVATION_STATUS_REGISTRATION_CANCELLED)
    assert answer.refund.amount == 30000
    assert resold.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT


async def test_bad_refund_requests_are_refused_naming_the_field(stub: Stub) -> None:
    request = pb.RefundReservationRequest(reservation_id="not-a-uuid", amount=-1)

    code, reason = await error_of(stub.RefundReservation(request))
    service_only = pb.RefundReservationRequest(
        reservation_id="6f1c8a52-4f7e-4a57-9d0f-4f1f9d3c2b11",
        reason=refund_pb2.REFUND_REASON_EVENT_CANCELLED,
        request_id="x",
    )

    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert await error_of(stub.RefundReservation(service_only)) == (code, reason)


# --- the payment service fails, and two senders ---


async def test_a_refund_survives_a_payment_service_outage_and_is_made_exactly_once(
    database_url: str, payment_service: PaymentService
) -> None:
    config = service_config(database_url, payment_service.url)
    async with serving(config) as (stub, service):
        await configure(stub)
        seat = await paid_seat(stub, payment_service, "payer")
        payment_service.state.faults["create_refund"] = "error_503"
        made = await stub.RefundReservation(refund_request(seat, 0, "outage"))
        await send_due_refunds(service.deps)
        during = await reservation(stub, seat.reservation_id)
        del payment_service.state.faults["create_refund"]
        back_off_over(database_url)
        await send_due_refunds(service.deps)
        after = await reservation(stub, seat.reservation_id)

    assert [r.state for r in during.refunds] == [REQUESTED]
    assert [r.state for r in after.refunds] == [SUCCEEDED]
    assert payment_service.state.created_per_key[f"refund:{made.refund.refund_id}"] == 1
    assert refund_posts(payment_service) == 2


async def test_a_refund_the_payment_service_refuses_is_failed_and_announced(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")
    payment_service.state.refund_settlement = "fail"

    await stub.RefundReservation(refund_request(seat, 0, "declined"))
    await send_due_refunds(service.deps)
    after = await reservation(stub, seat.reservation_id)
    feed = await feed_event(stub, registration_event_pb2.REGISTRATION_EVENT_TYPE_REFUND_FAILED)

    [refund] = after.refunds
    assert (refund.state, refund.failure_code) == (
        refund_pb2.REFUND_STATE_FAILED,
        "refund_declined",
    )
    assert after.refunded_amount == 0
    assert feed.refund.refund_id == refund.refund_id
    assert feed.reservation.reservation_id == seat.reservation_id


async def test_after_the_last_attempt_an_unsent_refund_is_failed_for_an_operator(
    database_url: str, payment_service: PaymentService
) -> None:
    config = service_config(
        database_url,
        payment_service.url,
        TICKETING_REFUND_MAX_ATTEMPTS="2",
    )
    async with serving(config) as (stub, service):
        await configure(stub)
        seat = await paid_seat(stub, payment_service, "payer")
        payment_service.state.faults["create_refund"] = "error_500"
        await stub.RefundReservation(refund_request(seat, 0, "doomed"))
        await send_due_refunds(service.deps)
        back_off_over(database_url)
        await send_due_refunds(service.deps)
        after = await reservation(stub, seat.reservation_id)

    [refund] = after.refunds
    assert (refund.state, refund.failure_code) == (refund_pb2.REFUND_STATE_FAILED, "max_attempts")


async def test_a_pending_refund_read_with_a_rotated_token_stays_pending_and_counts(
    stub: Stub, service: Service, payment_service: PaymentService, database_url: str
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")
    state = payment_service.state
    state.refund_settlement = "pending"
    made = await stub.RefundReservation(refund_request(seat, 0, "first"))
    await send_due_refunds(service.deps)
    token, state.token = state.token, "rotated"  # every read answers 401 unauthenticated

    back_off_over(database_url)
    await send_due_refunds(service.deps)
    during = await reservation(stub, seat.reservation_id)
    second = await error_of(stub.RefundReservation(refund_request(seat, 0, "second")))
    state.token = token
    state.settle_refund(made.refund.refund_id)
    back_off_over(database_url)
    await send_due_refunds(service.deps)
    after = await reservation(stub, seat.reservation_id)

    assert [r.state for r in during.refunds] == [refund_pb2.REFUND_STATE_PENDING]
    assert second == (grpc.StatusCode.FAILED_PRECONDITION, "REFUND_EXCEEDS_PAID")
    assert [r.state for r in after.refunds] == [SUCCEEDED]
    assert after.refunded_amount == 30000
    assert refund_posts(payment_service) == 1


async def test_a_refund_answered_succeeded_for_another_amount_is_failed_for_an_operator(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    # It was recorded as made for its whole amount, whatever the payment service returned.
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")
    state = payment_service.state
    state.faults["create_refund"] = "short_refund"
    made = await stub.RefundReservation(refund_request(seat, 0, "short"))

    await send_due_refunds(service.deps)
    after = await reservation(stub, seat.reservation_id)

    [refund] = after.refunds
    assert (refund.refund_id, refund.state) == (made.refund.refund_id, REFUND_FAILED)
    assert (refund.failure_code, after.refunded_amount) == ("refunded_amount_mismatch", 0)


async def test_a_refund_whose_last_answer_came_too_late_is_recorded_as_made_not_failed(
    database_url: str, payment_service: PaymentService
) -> None:
    config = service_config(database_url, payment_service.url, TICKETING_REFUND_MAX_ATTEMPTS="1")
    async with serving(config) as (stub, service):
        await configure(stub)
        seat = await paid_seat(stub, payment_service, "payer")
        # The payment service makes the refund; its answer comes after the client's timeout.
        payment_service.state.faults["create_refund"] = "late"
        made = await stub.RefundReservation(refund_request(seat, 0, "late"))
        await send_due_refunds(service.deps)
        after = await reservation(stub, seat.reservation_id)
        payment_service.state.release.set()

    assert [(r.state, r.failure_code) for r in after.refunds] == [(SUCCEEDED, "")]
    assert after.refunded_amount == 30000
    assert payment_service.state.created_per_key[f"refund:{made.refund.refund_id}"] == 1


async def test_after_the_last_attempt_a_refund_nobody_can_tell_of_is_failed_as_unknown(
    database_url: str, payment_service: PaymentService
) -> None:
    config = service_config(database_url, payment_service.url, TICKETING_REFUND_MAX_ATTEMPTS="1")
    async with serving(config) as (stub, service):
        await configure(stub)
        seat = await paid_seat(stub, payment_service, "payer")
        state = payment_service.state
        state.faults["create_refund"] = "garbage"  # a 2xx that is not the contract's
        state.faults["get_refund"] = "error_400"  # a refusal, not "never taken"
        await stub.RefundReservation(refund_request(seat, 0, "unknown"))
        await send_due_refunds(service.deps)
        after = await reservation(stub, seat.reservation_id)

    # Left requested, it was sent for ever with nobody told; failed, the alert fires, and its
    # code tells the operator to ask the payment team before refunding again.
    assert [(r.state, r.failure_code) for r in after.refunds] == [
        (REFUND_FAILED, "outcome_unknown")
    ]


async def test_a_resend_refused_after_a_late_answer_records_the_refund_the_first_send_made(
    stub: Stub, service: Service, payment_service: PaymentService, database_url: str
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")
    state = payment_service.state
    state.faults["create_refund"] = "late"  # made, answered after the client gave up
    await stub.RefundReservation(refund_request(seat, 0, "late"))
    await send_due_refunds(service.deps)
    state.faults["create_refund"] = "error_400"  # the resend is refused
    back_off_over(database_url)

    await send_due_refunds(service.deps)
    after = await reservation(stub, seat.reservation_id)
    state.release.set()

    assert [(r.state, r.failure_code) for r in after.refunds] == [(SUCCEEDED, "")]
    assert after.refunded_amount == 30000


async def test_two_replicas_refund_senders_never_send_one_refund_twice(
    stub: Stub, config: Any, payment_service: PaymentService
) -> None:
    await configure(stub, capacity=10)
    seats = [await paid_seat(stub, payment_service, f"payer-{i}") for i in range(10)]
    for seat in seats:
        await stub.RefundReservation(refund_request(seat, 0, "all"))
    payment_service.state.faults["create_refund"] = "held"  # answered only once released
    payment_service.state.received.clear()  # set by the checkouts above

    # Two more processes' worth of the service, with no background passes of their own.
    url = config.database_url
    async with wired(config, url) as one, wired(config, url) as other:
        first = asyncio.ensure_future(send_due_refunds(one.deps))
        # The first sender claimed the refunds and is held mid-call; the second one, on its
        # timer, finds every refund leased and sends nothing.
        async with asyncio.timeout(GUARD_SECONDS):
            await payment_service.state.received.wait()
            second = await send_due_refunds(other.deps)
        payment_service.state.release.set()
        sent = [await first, second]

    assert sent == [10, 0]
    assert refund_posts(payment_service) == 10
    assert all(n == 1 for n in payment_service.state.created_per_key.values())


# --- the organizer cancels the event ---


async def test_cancelling_an_event_stops_sales_cancels_holds_and_refunds_everyone(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub, capacity=10)
    seats = [await paid_seat(stub, payment_service, f"guest-{i}") for i in range(3)]
    pending = await hold(stub, "undecided")

    started = await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT, request_id="c"))
    refused = await error_of(
        stub.StartPaidRegistration(
            pb.StartPaidRegistrationRequest(event_id=EVENT, tier_id="vip", user_id="latecomer")
        )
    )
    await cancel_events(service.deps)
    await send_due_refunds(service.deps)
    progress = await stub.GetEventCancellation(pb.GetEventCancellationRequest(event_id=EVENT))

    assert (started.cancellation.done, started.cancellation.reservations_total) == (False, 4)
    assert refused == (grpc.StatusCode.FAILED_PRECONDITION, "EVENT_CANCELLED")
    done = progress.cancellation
    assert (done.done, done.reservations_done, done.reservations_total) == (True, 4, 4)
    assert (done.refunds_succeeded, done.refunds_pending, done.refunds_failed) == (3, 0, 0)
    for seat in seats:
        after = await reservation(stub, seat.reservation_id)
        assert after.status == reservation_pb2.RESERVATION_STATUS_REGISTRATION_CANCELLED
        assert after.refunded_amount == 30000
        assert after.refunds[0].reason == refund_pb2.REFUND_REASON_EVENT_CANCELLED
    released = await reservation(stub, pending.reservation_id)
    assert released.status == reservation_pb2.RESERVATION_STATUS_CANCELLED


async def test_a_cancelled_event_s_settings_say_when_it_was_cancelled(stub: Stub) -> None:
    # They read as on sale (enabled, no mark) after CancelEvent: Moim showed the event selling.
    await configure(stub)
    on = await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id=EVENT))
    before = datetime.now(UTC).replace(microsecond=0)

    await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT))
    read = await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id=EVENT))
    await configure(stub, capacity=5)  # still saved, as Moim may
    saved = await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id=EVENT))

    assert not on.settings.HasField("cancel_time")
    cancelled = read.settings.cancel_time.ToDatetime(UTC)
    assert before <= cancelled <= datetime.now(UTC)
    assert saved.settings.cancel_time.ToDatetime(UTC) == cancelled


async def test_a_seat_given_up_before_the_cancellation_reached_it_is_refunded_in_full(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub, starts_in=timedelta(hours=10), capacity=2)  # the policy gives 0 %
    mine = await paid_seat(stub, payment_service, "quick")
    await paid_seat(stub, payment_service, "patient")
    await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT))

    given_up = await stub.CancelRegistration(
        pb.CancelRegistrationRequest(reservation_id=mine.reservation_id, user_id="quick")
    )
    await cancel_events(service.deps)
    progress = await stub.GetEventCancellation(pb.GetEventCancellationRequest(event_id=EVENT))

    # Before, the policy's 0 % applied, and the cancellation's batches then skipped the seat.
    [refund] = given_up.reservation.refunds
    assert (refund.amount, refund.reason) == (30000, refund_pb2.REFUND_REASON_EVENT_CANCELLED)
    done = progress.cancellation
    assert (done.done, done.reservations_done, done.reservations_total) == (True, 2, 2)


async def test_a_seat_an_organizer_releases_before_the_cancellation_reached_it_owes_the_rest(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "guest")
    await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT))

    await stub.RefundReservation(
        pb.RefundReservationRequest(
            reservation_id=seat.reservation_id,
            amount=1000,
            reason=refund_pb2.REFUND_REASON_GOODWILL,
            release_seat=True,
            request_id="goodwill",
        )
    )
    await cancel_events(service.deps)

    refunds = (await reservation(stub, seat.reservation_id)).refunds
    assert sorted((r.amount, r.reason) for r in refunds) == [
        (1000, refund_pb2.REFUND_REASON_GOODWILL),
        (29000, refund_pb2.REFUND_REASON_EVENT_CANCELLED),
    ]


async def test_refunded_amount_counts_only_the_refunds_of_the_payment_that_settled_it(
    stub: Stub, service: Service, payment_service: PaymentService
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "guest")
    # A second payment of the settled reservation (a second tab): owed back as a duplicate.
    await error_of(stub.ConfirmPayment(payment_for(seat, payment_id="pay-twice")))
    [duplicate] = (await reservation(stub, seat.reservation_id)).refunds
    # The sandbox takes one payment per checkout: the duplicate's refund is settled here.
    async with service.deps.uow() as uow:
        settled = RefundChange(RefundStatus.SUCCEEDED, attempts=1, retry_in=None)
        read = await uow.refunds.get(duplicate.refund_id)
        assert read is not None
        await uow.refunds.record(read, settled)
        await uow.commit()

    await stub.RefundReservation(refund_request(seat, 1000, "organizer"))
    await send_due_refunds(service.deps)

    after = await reservation(stub, seat.reservation_id)
    # Before, 31000 of a 30000 payment: the duplicate's refund was added to it.
    assert after.refunded_amount == 1000
    assert sorted(r.amount for r in after.refunds) == [1000, 30000]


async def test_a_live_hold_paid_after_the_event_was_cancelled_gets_no_seat_and_is_refunded(
    stub: Stub, service: Service
) -> None:
    await configure(stub, capacity=10)
    live = await hold(stub, "quick-payer")
    await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT))

    answer = await stub.ConfirmPayment(payment_for(live))
    await cancel_events(service.deps)
    progress = await stub.GetEventCancellation(pb.GetEventCancellationRequest(event_id=EVENT))

    # Before, CONFIRMED: a seat sold after CancelEvent answered, cancelled again by its batch.
    assert answer.outcome == pb.CONFIRM_PAYMENT_OUTCOME_PAID_UNFULFILLED
    assert [r.reason for r in answer.reservation.refunds] == [
        refund_pb2.REFUND_REASON_PAID_UNFULFILLED
    ]
    done = progress.cancellation
    assert (done.done, done.reservations_done, done.reservations_total) == (True, 1, 1)


async def test_a_late_payment_after_the_event_was_cancelled_gets_no_seat_and_is_refunded(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    await configure(stub, capacity=10)
    late = await hold(stub, "late")
    end_hold(database_url, late.reservation_id)
    await stub.CancelEvent(pb.CancelEventRequest(event_id=EVENT))

    answer = await stub.ConfirmPayment(payment_for(late))

    assert answer.outcome == pb.CONFIRM_PAYMENT_OUTCOME_PAID_UNFULFILLED
    assert [r.reason for r in (await reservation(stub, late.reservation_id)).refunds] == [
        refund_pb2.REFUND_REASON_PAID_UNFULFILLED
    ]


async def test_the_cancellation_of_an_event_never_cancelled_is_not_found(stub: Stub) -> None:
    await configure(stub)

    missing = await error_of(
        stub.GetEventCancellation(pb.GetEventCancellationRequest(event_id=EVENT))
    )
    unknown = await error_of(stub.CancelEvent(pb.CancelEventRequest(event_id="no-such-event")))
    unknown_progress = await error_of(
        stub.GetEventCancellation(pb.GetEventCancellationRequest(event_id="no-such-event"))
    )

    assert missing == (grpc.StatusCode.NOT_FOUND, "EVENT_NOT_CANCELLED")
    assert unknown == unknown_progress == (grpc.StatusCode.NOT_FOUND, "EVENT_NOT_FOUND")


# --- the payment service's refund callbacks, through the real shim ---


async def test_a_refund_callback_through_the_shim_settles_a_pending_refund_at_once(
    stub: Stub, service: Service, shim: httpx.AsyncClient, payment_service: PaymentService
) -> None:
    await configure(stub)
    seat = await paid_seat(stub, payment_service, "payer")
    state = payment_service.state
    refunds_settle_later_through(shim, payment_service, seat)
    made = await stub.RefundReservation(refund_request(seat, 0, "pending"))
    await send_due_refunds(service.deps)
    pending = await reservation(stub, seat.reservation_id)

    state.settle_refund(made.refund.refund_id)  # the payment service calls back; nobody polls
    await state.drain_callbacks()
    after = await reservation(stub, seat.reservation_id)

    assert [r.state for r in pending.refunds] == [refund_pb2.REFUND_STATE_PENDING]
    [sent] = state.sent_callbacks
    assert (sent.payload["type"], sent.status_code) == ("ticket_payment.refunded", 200)
    assert [r.state for r in after.refunds] == [SUCCEEDED]
    assert after.refunded_amount == 30000


async def test_a_signed_refund_callback_for_an_unknown_refund_is_answered_and_changes_nothing(
    stub: Stub, shim: httpx.AsyncClient
) -> None:
    body = json.dumps(
        {"type": "ticket_payment.refund_failed", "refundId": str(uuid.uuid4()), "failureCode": "x"}
    ).encode()

    response = await post(shim, hmac_signed(body, delivery_id="refund-delivery-1"))

    assert (response.status_code, response.json()["reason"]) == (200, "REFUND_NOT_FOUND")
