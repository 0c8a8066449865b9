"""StartPaidRegistration, GetReservation and CancelReservation: every rule of SPEC §3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.conftest import PAYMENT_TOKEN, PaymentService
from tests.integration.flows import (
    EVENT,
    PRICE,
    configure_event,
    end_hold,
    hold,
    paid_tier,
    payment_for,
    sql,
    start,
    status_of,
)
from tests.rich_errors import rich_error
from ticketing_service.entrypoints.dev.payment_state import Fault

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

PENDING = reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT


async def failure(call: object) -> tuple[grpc.StatusCode, str]:
    """The code and reason of a call expected to fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]  # a grpc.aio call is awaitable
    error = rich_error(caught.value)
    return error.code, error.reason


async def test_a_hold_opens_a_checkout_exactly_as_the_payment_service_expects(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    response = await start(
        stub,
        "user-1",
        customer=reservation_pb2.Customer(name="Kim", email="kim@example.com"),
        answers=[
            reservation_pb2.Answer(question_id="q1", answer="Vegan"),
            reservation_pb2.Answer(question_id="q2", answer="   "),
        ],
    )
    reservation = response.reservation
    assert response.requires_payment
    assert reservation.status == PENDING
    assert (reservation.amount, reservation.currency_code, reservation.provider) == (
        PRICE,
        "KRW",
        "portone",
    )
    assert reservation.checkout_url.endswith(reservation.checkout_id)
    assert [(a.question_id, a.answer) for a in reservation.answers] == [("q1", "Vegan")]
    hold_length = reservation.expire_time.ToDatetime() - reservation.create_time.ToDatetime()
    assert hold_length == timedelta(seconds=600)

    [received] = payment_service.state.requests
    assert received.headers["authorization"] == f"Bearer {PAYMENT_TOKEN}"
    assert received.headers["idempotency-key"] == f"reservation:{reservation.reservation_id}"
    assert isinstance(received.body, dict)
    expires_at = received.body.pop("expiresAt")
    assert isinstance(expires_at, str)
    assert expires_at.endswith("Z")
    assert datetime.fromisoformat(expires_at) == reservation.expire_time.ToDatetime(tzinfo=UTC)
    assert received.body == {
        "provider": "portone",
        "paymentMethodFamily": "easy_pay",
        "reservationId": reservation.reservation_id,
        "eventId": EVENT,
        "tierId": "vip",
        "orderName": "Launch party - VIP",
        "amount": PRICE,
        "currency": "KRW",
        "customer": {"moimUserId": "user-1", "name": "Kim", "email": "kim@example.com"},
        "successUrl": f"https://moim.example/events/{EVENT}/register?payment=success",
        "cancelUrl": f"https://moim.example/events/{EVENT}/register?payment=cancel",
        "callbackUrl": "http://127.0.0.1:9/api/ticket-payment-callbacks",
    }


async def test_given_urls_are_passed_on_instead_of_the_defaults(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    await start(stub, "u", success_url="https://a.example/ok", cancel_url="https://a.example/no")
    body = payment_service.state.requests[0].body
    assert isinstance(body, dict)
    assert (body["successUrl"], body["cancelUrl"]) == (
        "https://a.example/ok",
        "https://a.example/no",
    )


async def test_a_usd_tier_is_charged_in_cents(stub: Stub, payment_service: PaymentService) -> None:
    await configure_event(stub, paid_tier("vip", price=1050), currency="USD")
    reservation = await hold(stub, "u")
    assert (reservation.amount, reservation.currency_code) == (1050, "USD")
    body = payment_service.state.requests[0].body
    assert isinstance(body, dict)
    assert (body["amount"], body["currency"]) == (1050, "USD")


async def test_a_free_tier_needs_no_payment_and_stores_nothing(
    stub: Stub, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub, paid_tier("free", price=0), paid_tier("vip"))
    response = await start(stub, "user-1", "free")
    assert not response.requires_payment
    assert not response.HasField("reservation")
    assert sql(database_url, "SELECT count(*) FROM reservations") == [(0,)]
    assert payment_service.state.requests == []


async def test_a_repeat_for_the_same_tier_returns_the_same_hold_and_checkout(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    first = await hold(stub, "user-1")
    again = await hold(stub, "user-1")
    assert again == first
    assert sum(payment_service.state.created_per_key.values()) == 1


async def test_a_live_hold_in_another_tier_is_reservation_pending(stub: Stub) -> None:
    await configure_event(stub, paid_tier("vip"), paid_tier("floor"))
    held = await hold(stub, "user-1", "vip")
    code, reason = await failure(start(stub, "user-1", "floor"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "RESERVATION_PENDING")
    cancelled = await stub.CancelReservation(
        pb.CancelReservationRequest(reservation_id=held.reservation_id, user_id="user-1")
    )
    assert cancelled.reservation.status == reservation_pb2.RESERVATION_STATUS_CANCELLED
    assert (await hold(stub, "user-1", "floor")).tier_id == "floor"


async def test_an_expired_hold_is_marked_expired_and_replaced(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip"), paid_tier("floor"))
    old = await hold(stub, "user-1", "vip")
    end_hold(database_url, old.reservation_id)
    new = await hold(stub, "user-1", "floor")
    assert new.reservation_id != old.reservation_id
    assert status_of(database_url, old.reservation_id) == "expired"


async def test_a_registered_user_is_already_registered(stub: Stub) -> None:
    await configure_event(stub)
    await stub.ConfirmPayment(payment_for(await hold(stub, "user-1")))
    code, reason = await failure(start(stub, "user-1"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ALREADY_REGISTERED")


async def test_live_holds_take_seats_until_they_expire(stub: Stub, database_url: str) -> None:
    await configure_event(stub, paid_tier("vip", capacity=2))
    first = await hold(stub, "a")
    await stub.ConfirmPayment(payment_for(await hold(stub, "b")))
    code, reason = await failure(start(stub, "c"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT")
    end_hold(database_url, first.reservation_id)
    assert (await hold(stub, "c")).status == PENDING
    code, reason = await failure(start(stub, "d"))
    assert reason == "SOLD_OUT"


async def test_an_unlimited_tier_never_sells_out(stub: Stub) -> None:
    await configure_event(stub, paid_tier("vip"))
    for user in range(5):
        assert (await hold(stub, f"user-{user}")).status == PENDING


async def test_unknown_events_and_tiers_are_not_found(stub: Stub) -> None:
    await configure_event(stub)
    assert await failure(start(stub, "u", event_id="other")) == (
        grpc.StatusCode.NOT_FOUND,
        "EVENT_NOT_FOUND",
    )
    assert await failure(start(stub, "u", "nope")) == (grpc.StatusCode.NOT_FOUND, "TIER_NOT_FOUND")


@pytest.mark.parametrize("price", [PRICE, 0], ids=["paid", "free"])
async def test_a_tier_outside_its_sale_window_is_not_on_sale(stub: Stub, price: int) -> None:
    # A free tier answered requires_payment=false there: Moim registered users after the sale.
    later = paid_tier("later", price)
    later.sale_start_time.FromDatetime(datetime.now(UTC) + timedelta(days=1))
    over = paid_tier("over", price)
    over.sale_end_time.FromDatetime(datetime.now(UTC) - timedelta(seconds=1))
    await configure_event(stub, later, over)
    for tier in ("later", "over"):
        assert (await failure(start(stub, "u", tier)))[1] == "TIER_NOT_ON_SALE"


async def test_a_tier_on_sale_from_1970_to_the_last_second_of_9999_sells(stub: Stub) -> None:
    # The widest window settings take. One a microsecond wider at either end was stored as
    # infinity, and every hold of the tier answered INTERNAL.
    always = paid_tier("vip")
    always.sale_start_time.CopyFrom(Timestamp(seconds=0))
    always.sale_end_time.CopyFrom(Timestamp(seconds=253402300799))
    await configure_event(stub, always)
    assert (await hold(stub, "u")).status == PENDING


async def test_a_retained_tier_is_not_on_sale_but_a_retry_gets_its_live_hold(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure_event(stub, paid_tier("vip"), paid_tier("floor"))
    held = await hold(stub, "holder", "vip")
    await configure_event(stub, paid_tier("floor"))

    assert (await failure(start(stub, "u", "vip")))[1] == "TIER_NOT_ON_SALE"
    # The holder's retry (a double submit) answered TIER_NOT_ON_SALE while the hold, still
    # payable, stood: Moim told a user who could pay that nothing was on sale.
    assert await hold(stub, "holder", "vip") == held
    assert sum(payment_service.state.created_per_key.values()) == 1


async def test_an_external_event_does_not_take_payments_here(stub: Stub) -> None:
    await stub.UpdateTicketingSettings(
        pb.UpdateTicketingSettingsRequest(
            event_id=EVENT, tiers=[paid_tier("vip")], external_url="https://tickets.example"
        )
    )
    assert await failure(start(stub, "u")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAID_TICKETING_NOT_ENABLED",
    )


async def test_a_legacy_paid_event_without_currency_is_currency_missing(
    stub: Stub, database_url: str
) -> None:
    sql(
        database_url,
        "INSERT INTO ticketing_settings (event_id, mode, provider, enabled, legacy)"
        " VALUES ($1, 'paid', 'portone', true, true)",
        EVENT,
    )
    await configure_event(stub)
    assert await failure(start(stub, "u")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAID_TICKETING_CURRENCY_MISSING",
    )


# 408, 409 (the same idempotency key still in flight), 425 and 429 say "not now", not "no".
@pytest.mark.parametrize(
    "fault",
    ["hang", "error_500", "error_503", "error_408", "error_409", "error_425", "error_429"],
)
async def test_a_transient_checkout_failure_keeps_the_hold_and_a_retry_reuses_its_key(
    stub: Stub, database_url: str, payment_service: PaymentService, fault: Fault
) -> None:
    await configure_event(stub)
    payment_service.state.faults["create_checkout"] = fault
    code, reason = await failure(start(stub, "user-1"))
    assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "PAYMENT_SERVICE_UNAVAILABLE")
    [(reservation_id, status, checkout)] = sql(
        database_url, "SELECT reservation_id::text, status, checkout_id FROM reservations"
    )
    assert (status, checkout) == ("pending_payment", None)

    payment_service.state.faults.clear()
    retried = await hold(stub, "user-1")
    assert retried.reservation_id == reservation_id
    assert retried.checkout_url
    keys = {r.headers["idempotency-key"] for r in payment_service.state.requests}
    assert keys == {f"reservation:{reservation_id}"}


@pytest.mark.parametrize("fault", ["error_400", "garbage", "missing_fields", "huge"])
async def test_a_definitive_checkout_failure_cancels_the_hold_and_frees_the_seat(
    stub: Stub, database_url: str, payment_service: PaymentService, fault: Fault
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    payment_service.state.faults["create_checkout"] = fault
    code, reason = await failure(start(stub, "user-1"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CHECKOUT_REJECTED")
    assert sql(database_url, "SELECT status FROM reservations") == [("cancelled",)]
    payment_service.state.faults.clear()
    assert (await hold(stub, "user-2")).status == PENDING


async def test_get_reservation_reads_it_and_unknown_ids_are_not_found(stub: Stub) -> None:
    await configure_event(stub)
    held = await hold(stub, "user-1")
    read = await stub.GetReservation(pb.GetReservationRequest(reservation_id=held.reservation_id))
    assert read.reservation == held
    missing = pb.GetReservationRequest(reservation_id="00000000-0000-4000-8000-000000000000")
    assert await failure(stub.GetReservation(missing)) == (
        grpc.StatusCode.NOT_FOUND,
        "RESERVATION_NOT_FOUND",
    )


async def test_only_the_owner_cancels_and_only_a_pending_hold(stub: Stub) -> None:
    await configure_event(stub)
    held = await hold(stub, "owner")
    by_other = pb.CancelReservationRequest(reservation_id=held.reservation_id, user_id="other")
    assert await failure(stub.CancelReservation(by_other)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_RESERVATION_OWNER",
    )
    confirmed = await hold(stub, "payer")
    await stub.ConfirmPayment(payment_for(confirmed))
    late = pb.CancelReservationRequest(reservation_id=confirmed.reservation_id, user_id="payer")
    assert await failure(stub.CancelReservation(late)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "RESERVATION_NOT_CANCELLABLE",
    )


async def test_cancelling_twice_answers_the_cancelled_reservation(stub: Stub) -> None:
    await configure_event(stub)
    held = await hold(stub, "owner")
    request = pb.CancelReservationRequest(reservation_id=held.reservation_id, user_id="owner")
    first = await stub.CancelReservation(request)
    assert (await stub.CancelReservation(request)).reservation == first.reservation


INVALID_STARTS: list[tuple[dict[str, object], list[str]]] = [
    ({"event_id": ""}, ["event_id"]),
    ({"tier_id": ""}, ["tier_id"]),
    ({"user_id": "u" * 129}, ["user_id"]),
    ({"success_url": "ftp://x"}, ["success_url"]),
    ({"cancel_url": "not a url"}, ["cancel_url"]),
    ({"customer": reservation_pb2.Customer(email="e" * 400)}, ["customer.email"]),
    ({"answers": [reservation_pb2.Answer(question_id="", answer="x")]}, ["answers[0].question_id"]),
    (
        {"answers": [reservation_pb2.Answer(question_id="q", answer="a" * 4001)]},
        ["answers[0].answer"],
    ),
    ({"answers": [reservation_pb2.Answer(question_id=f"q{i}") for i in range(51)]}, ["answers"]),
    ({"request_id": "r" * 129}, ["request_id"]),
    # NUL is valid in a protobuf string but cannot be stored by Postgres: refused by field.
    ({"user_id": "u\x00"}, ["user_id"]),
    (
        {"answers": [reservation_pb2.Answer(question_id="q", answer="a\x00b")]},
        ["answers[0].answer"],
    ),
    ({"customer": reservation_pb2.Customer(name="\x00")}, ["customer.name"]),
]


@pytest.mark.parametrize(("fields", "bad"), INVALID_STARTS)
async def test_invalid_starts_are_invalid_argument_and_hold_nothing(
    stub: Stub, database_url: str, fields: dict[str, object], bad: list[str]
) -> None:
    await configure_event(stub)
    request = {"event_id": EVENT, "tier_id": "vip", "user_id": "u"} | fields
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.StartPaidRegistration(pb.StartPaidRegistrationRequest(**request))  # type: ignore[arg-type]  # fields of mixed types, checked by protobuf at runtime
    error = rich_error(caught.value)
    assert (error.code, sorted(set(error.fields))) == (grpc.StatusCode.INVALID_ARGUMENT, bad)
    assert sql(database_url, "SELECT count(*) FROM reservations") == [(0,)]


@pytest.mark.parametrize("reservation_id", ["", "42", "not-a-uuid", "x" * 500])
async def test_reservation_ids_that_are_not_uuids_are_invalid_argument(
    stub: Stub, reservation_id: str
) -> None:
    requests = [
        stub.GetReservation(pb.GetReservationRequest(reservation_id=reservation_id)),
        stub.CancelReservation(
            pb.CancelReservationRequest(reservation_id=reservation_id, user_id="u")
        ),
    ]
    for call in requests:
        assert (await failure(call))[0] == grpc.StatusCode.INVALID_ARGUMENT


async def test_find_reservation_answers_the_users_latest_reservation_for_the_event(
    stub: Stub, database_url: str
) -> None:
    await configure_event(stub)
    first = await hold(stub, "user-1")
    end_hold(database_url, first.reservation_id)
    latest = await hold(stub, "user-1")  # the lapsed hold is expired and a new one made
    await hold(stub, "user-2")

    found = await stub.FindReservation(pb.FindReservationRequest(event_id=EVENT, user_id="user-1"))

    assert found.reservation == latest
    nobody = pb.FindReservationRequest(event_id=EVENT, user_id="nobody")
    assert await failure(stub.FindReservation(nobody)) == (
        grpc.StatusCode.NOT_FOUND,
        "RESERVATION_NOT_FOUND",
    )
    blank = pb.FindReservationRequest(event_id=EVENT)
    assert await failure(stub.FindReservation(blank)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_a_tier_without_a_sale_end_closes_when_the_event_starts(stub: Stub) -> None:
    started = Timestamp()
    started.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    await stub.UpdateTicketingSettings(
        pb.UpdateTicketingSettingsRequest(
            event_id=EVENT, tiers=[paid_tier("vip", capacity=2)], event_start_time=started
        )
    )
    assert await failure(start(stub, "late-comer")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "TIER_NOT_ON_SALE",
    )
