"""HttpPaymentService's checkouts against httpx.MockTransport: the wire and every failure class."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from tests.unit.payment_transport import (
    BASE_URL,
    TOKEN,
    Handler,
    Recorder,
    answering,
    client_with,
    error_body,
    raising,
)
from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutNotFound,
    CheckoutRequest,
    CheckoutState,
    CheckoutStatus,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)

REQUEST = CheckoutRequest(
    reservation_id="res-1",
    event_id="evt-1",
    tier_id="tier-1",
    order_name="Jazz Night - VIP",
    amount=55000,
    currency_code="KRW",
    provider="portone",
    user_id="user-1",
    customer_name="Kim",
    customer_email="kim@example.com",
    success_url="https://moim.example/success",
    cancel_url="https://moim.example/cancel",
    callback_url="https://shim.example/callback",
    expire_time=datetime(2030, 5, 1, 3, 30, tzinfo=UTC),
)
CREATED = {
    "checkoutId": "chk_1",
    "checkoutUrl": "https://pay.example/checkout/chk_1",
    "status": "requires_payment",
}
PAID = {
    "checkoutId": "chk_1",
    "reservationId": "res-1",
    "status": "paid",
    "amount": 55000,
    "currency": "KRW",
    "paymentId": "pay_1",
    "txId": "tx_1",
    "paidAt": "2030-05-01T12:10:00+09:00",
}


async def checkout_with(
    handler: Handler,
    request: CheckoutRequest = REQUEST,
    timeout_seconds: float = 1.0,
    base_url: str = BASE_URL,
) -> Checkout:
    """Run one create_checkout through a client whose transport is `handler`."""
    async with client_with(handler, timeout_seconds, base_url) as client:
        return await client.create_checkout(request)


async def status_with(handler: Handler, checkout_id: str = "chk_1") -> CheckoutStatus:
    """Run one get_checkout through a client whose transport is `handler`."""
    async with client_with(handler) as client:
        return await client.get_checkout(checkout_id)


# --- opening a checkout: what goes over the wire -----------------------------------------------


async def test_it_posts_to_the_ticket_checkouts_path_under_the_base_url() -> None:
    recorder = Recorder(201, CREATED)
    await checkout_with(recorder)
    assert [(r.method, str(r.url)) for r in recorder.sent] == [
        ("POST", "https://payments.example/api/v1/ticket-checkouts")
    ]


async def test_a_trailing_slash_on_the_base_url_does_not_double_the_slash() -> None:
    recorder = Recorder(201, CREATED)
    await checkout_with(recorder, base_url=BASE_URL + "/")
    assert str(recorder.sent[0].url) == "https://payments.example/api/v1/ticket-checkouts"


async def test_it_sends_the_bearer_token_the_reservation_idempotency_key_and_json_headers() -> None:
    recorder = Recorder(201, CREATED)
    await checkout_with(recorder)
    headers = recorder.sent[0].headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["idempotency-key"] == "reservation:res-1"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"


async def test_the_body_carries_every_field_under_its_spec_name() -> None:
    recorder = Recorder(201, CREATED)
    await checkout_with(recorder)
    assert recorder.only_body() == {
        "provider": "portone",
        "paymentMethodFamily": "easy_pay",
        "reservationId": "res-1",
        "eventId": "evt-1",
        "tierId": "tier-1",
        "orderName": "Jazz Night - VIP",
        "amount": 55000,
        "currency": "KRW",
        "customer": {"moimUserId": "user-1", "name": "Kim", "email": "kim@example.com"},
        "successUrl": "https://moim.example/success",
        "cancelUrl": "https://moim.example/cancel",
        "callbackUrl": "https://shim.example/callback",
        "expiresAt": "2030-05-01T03:30:00Z",
    }


async def test_the_hold_end_is_sent_in_utc_whatever_zone_it_was_given_in() -> None:
    recorder = Recorder(201, CREATED)
    seoul = timezone(timedelta(hours=9))
    in_seoul = datetime(2030, 5, 1, 12, 30, 0, 250000, tzinfo=seoul)
    await checkout_with(recorder, request=dataclasses.replace(REQUEST, expire_time=in_seoul))
    body = recorder.only_body()
    assert isinstance(body, dict)
    assert body["expiresAt"] == "2030-05-01T03:30:00.250000Z"


async def test_the_amount_is_sent_as_a_json_integer_never_a_float_or_string() -> None:
    recorder = Recorder(201, CREATED)
    await checkout_with(recorder)
    assert b'"amount":55000' in recorder.sent[0].content.replace(b" ", b"")


async def test_an_absent_customer_name_and_email_are_omitted_rather_than_sent_as_null() -> None:
    recorder = Recorder(201, CREATED)
    anonymous = dataclasses.replace(REQUEST, customer_name=None, customer_email=None)
    await checkout_with(recorder, request=anonymous)
    body = recorder.only_body()
    assert isinstance(body, dict)
    assert body["customer"] == {"moimUserId": "user-1"}


# --- opening a checkout: answers -----------------------------------------------------------------


@pytest.mark.parametrize("status", ["requires_payment", "payment_pending", "paid"])
@pytest.mark.parametrize("http_status", [200, 201])
async def test_every_status_the_spec_allows_returns_the_checkout(
    status: str, http_status: int
) -> None:
    checkout = await checkout_with(Recorder(http_status, {**CREATED, "status": status}))
    assert checkout == Checkout("chk_1", "https://pay.example/checkout/chk_1", status)


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.ConnectError, httpx.RemoteProtocolError],
)
async def test_a_transport_failure_is_unreachable(error: type[httpx.TransportError]) -> None:
    with pytest.raises(PaymentServiceUnreachable, match="retry"):
        await checkout_with(raising(error))


async def test_an_answer_in_a_content_coding_is_malformed_even_if_it_decodes_to_one() -> None:
    compressed = gzip.compress(json.dumps(CREATED).encode())  # never asked for: not decoded

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return httpx.Response(201, content=compressed, headers={"Content-Encoding": "gzip"})

    with pytest.raises(PaymentServiceRefused, match="malformed"):
        await checkout_with(answer)


async def test_a_process_out_of_files_is_unreachable_not_a_fault() -> None:
    def out_of_files(request: httpx.Request) -> httpx.Response:
        raise OSError(errno.EMFILE, "Too many open files")  # httpx lets this one through

    with pytest.raises(PaymentServiceUnreachable, match="retry"):
        await checkout_with(out_of_files)


@pytest.mark.parametrize("http_status", [500, 502, 503, 429, 408, 409, 425])
async def test_a_server_error_a_rate_limit_or_a_key_in_flight_is_unreachable(
    http_status: int,
) -> None:
    with pytest.raises(PaymentServiceUnreachable, match=str(http_status)):
        await checkout_with(Recorder(http_status, error_body("busy")))


async def test_a_400_is_refused_with_the_code_and_message_from_the_error_body() -> None:
    error = {"code": "invalid_request", "message": "amount must be positive"}
    with pytest.raises(PaymentServiceRefused) as refused:
        await checkout_with(Recorder(400, error))
    assert "400" in str(refused.value)
    assert "invalid_request: amount must be positive" in str(refused.value)


@pytest.mark.parametrize(("http_status", "content"), [(404, b"not found"), (302, b""), (401, b"")])
async def test_any_other_non_2xx_answer_is_refused(http_status: int, content: bytes) -> None:
    with pytest.raises(PaymentServiceRefused, match=str(http_status)):
        await checkout_with(answering(http_status, content))


async def test_a_checkout_url_scheme_in_capitals_is_taken() -> None:
    # Schemes have no case (RFC 3986): such a checkout was refused and its hold released.
    url = "HTTPS://pay.example/checkout/chk_1"
    checkout = await checkout_with(Recorder(201, {**CREATED, "checkoutUrl": url}))
    assert checkout.checkout_url == url


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"<html>oops</html>", id="not-json"),
        pytest.param(b"\xff\xfe\xfa", id="not-text"),
        pytest.param(json.dumps([CREATED]).encode(), id="json-array"),
        pytest.param(b"null", id="json-null"),
        pytest.param(json.dumps({**CREATED, "checkoutUrl": None}).encode(), id="null-url"),
        pytest.param(json.dumps({**CREATED, "checkoutUrl": ""}).encode(), id="empty-url"),
        pytest.param(json.dumps({"checkoutId": "c", "status": "paid"}).encode(), id="no-url"),
        pytest.param(json.dumps({**CREATED, "checkoutId": ""}).encode(), id="empty-id"),
        pytest.param(json.dumps({**CREATED, "checkoutId": 7}).encode(), id="numeric-id"),
        pytest.param(json.dumps({**CREATED, "status": "refunded"}).encode(), id="unknown-status"),
        pytest.param(json.dumps({**CREATED, "status": "expired"}).encode(), id="expired-status"),
        pytest.param(json.dumps({**CREATED, "status": None}).encode(), id="null-status"),
        # what the service could not confirm by a callback, or would hand a user as a link
        pytest.param(json.dumps({**CREATED, "checkoutId": "c" * 129}).encode(), id="long-id"),
        pytest.param(json.dumps({**CREATED, "checkoutId": "c\u0000"}).encode(), id="nul-id"),
        pytest.param(json.dumps({**CREATED, "checkoutUrl": "javascript:x"}).encode(), id="js-url"),
        pytest.param(
            json.dumps({**CREATED, "checkoutUrl": "https://p/" + "a" * 2048}).encode(),
            id="long-url",
        ),
    ],
)
async def test_a_2xx_with_a_malformed_body_is_refused(content: bytes) -> None:
    with pytest.raises(PaymentServiceRefused, match="malformed"):
        await checkout_with(answering(201, content))


# --- reading a checkout --------------------------------------------------------------------------


async def test_reading_gets_the_checkout_path_with_the_token_and_no_idempotency_key() -> None:
    recorder = Recorder(200, PAID)
    await status_with(recorder)
    sent = recorder.only_request()
    assert (sent.method, str(sent.url)) == (
        "GET",
        "https://payments.example/api/v1/ticket-checkouts/chk_1",
    )
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert "idempotency-key" not in sent.headers
    assert sent.content == b""


async def test_a_checkout_id_cannot_reach_another_path() -> None:
    recorder = Recorder(200, {**PAID, "checkoutId": "../refunds?x"})
    await status_with(recorder, "../refunds?x")
    assert recorder.only_request().url.raw_path == b"/api/v1/ticket-checkouts/..%2Frefunds%3Fx"


async def test_a_paid_checkout_carries_its_payment() -> None:
    status = await status_with(Recorder(200, PAID))
    assert status == CheckoutStatus(
        checkout_id="chk_1",
        reservation_id="res-1",
        status=CheckoutState.PAID,
        amount=55000,
        currency_code="KRW",
        payment_id="pay_1",
        tx_id="tx_1",
        paid_time=datetime(2030, 5, 1, 3, 10, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "state", [s for s in CheckoutState if s is not CheckoutState.PAID], ids=str
)
async def test_every_unpaid_status_reads_without_payment_fields(state: CheckoutState) -> None:
    unpaid = {k: v for k, v in PAID.items() if k not in {"paymentId", "txId", "paidAt"}}
    status = await status_with(Recorder(200, {**unpaid, "status": state.value}))
    assert (status.status, status.payment_id, status.tx_id, status.paid_time) == (
        state,
        None,
        None,
        None,
    )


async def test_an_unknown_checkout_is_checkout_not_found_which_is_a_refusal() -> None:
    with pytest.raises(CheckoutNotFound) as not_found:
        await status_with(Recorder(404, error_body("checkout_not_found")))
    assert isinstance(not_found.value, PaymentServiceRefused)


@pytest.mark.parametrize(
    "content", [b"Not Found", json.dumps(error_body("no_route")).encode()], ids=["bare", "other"]
)
async def test_a_404_without_the_contract_code_is_refused_but_not_read_as_unknown(
    content: bytes,
) -> None:
    with pytest.raises(PaymentServiceRefused) as refused:
        await status_with(answering(404, content))
    assert not isinstance(refused.value, CheckoutNotFound)


@pytest.mark.parametrize("http_status", [500, 503, 429, 408, 425])
async def test_reading_through_an_outage_is_unreachable(http_status: int) -> None:
    with pytest.raises(PaymentServiceUnreachable, match=str(http_status)):
        await status_with(Recorder(http_status, error_body("busy")))


@pytest.mark.parametrize(("http_status"), [409, 400, 401])
async def test_reading_refused_by_another_4xx_is_definitive(http_status: int) -> None:
    with pytest.raises(PaymentServiceRefused, match=str(http_status)):
        await status_with(Recorder(http_status, error_body("no")))


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param({**PAID, "checkoutId": "chk_2"}, id="another-checkout"),
        pytest.param({**PAID, "status": "refunded"}, id="unknown-status"),
        pytest.param({k: v for k, v in PAID.items() if k != "paymentId"}, id="paid-without-id"),
        pytest.param({k: v for k, v in PAID.items() if k != "reservationId"}, id="no-reservation"),
        pytest.param({**PAID, "amount": 550.5}, id="float-amount"),
        pytest.param({**PAID, "amount": "55000"}, id="string-amount"),
        pytest.param({**PAID, "amount": -1}, id="negative-amount"),
        pytest.param({**PAID, "paidAt": "yesterday"}, id="unparsable-time"),
        pytest.param({**PAID, "paidAt": "2030-05-01T12:10:00"}, id="time-without-offset"),
        pytest.param({**PAID, "txId": 7}, id="numeric-tx"),
        pytest.param([PAID], id="json-array"),
        # values Postgres cannot keep, or the API would refuse: each once jammed reconciliation
        pytest.param({**PAID, "amount": 2**70}, id="amount-past-bigint"),
        pytest.param({**PAID, "amount": 2**53}, id="amount-past-the-largest"),
        pytest.param({**PAID, "currency": "krw!"}, id="currency-not-three-capitals"),
        pytest.param({**PAID, "paymentId": "pay\u0000"}, id="nul-in-payment-id"),
        pytest.param({**PAID, "paymentId": "p" * 129}, id="payment-id-too-long"),
    ],
)
async def test_a_malformed_checkout_status_is_refused(answer: object) -> None:
    with pytest.raises(PaymentServiceRefused, match="malformed"):
        await status_with(Recorder(200, answer))


async def test_a_lone_surrogate_in_a_checkout_status_is_refused() -> None:
    content = json.dumps({**PAID, "txId": "tx\ud800"}).encode()  # JSON can spell one
    with pytest.raises(PaymentServiceRefused, match="txId holds a character that is not printable"):
        await status_with(answering(200, content))


# --- bounds --------------------------------------------------------------------------------------


async def never(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(30)
    return httpx.Response(201, json=CREATED)


async def test_a_server_that_never_answers_cannot_outlast_the_timeout() -> None:
    async with client_with(never, timeout_seconds=0.1) as client:
        with pytest.raises(PaymentServiceUnreachable):
            await client.create_checkout(REQUEST)
        with pytest.raises(PaymentServiceUnreachable):
            await client.get_checkout("chk_1")


async def test_a_server_that_drips_its_body_cannot_outlast_the_timeout() -> None:
    async def drip() -> AsyncIterator[bytes]:
        yield b'{"checkoutId": '
        await asyncio.sleep(30)
        yield b'"chk_1"}'

    async def slow(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, content=drip())

    with pytest.raises(PaymentServiceUnreachable):
        await checkout_with(slow, timeout_seconds=0.1)


class Gate:
    """A handler that holds every request until opened, counting how many it holds at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.arrived = asyncio.Condition()
        self.open = asyncio.Event()

        self.checkouts_inside = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        opening = request.method == "POST"
        async with self.arrived:
            self.inside += 1
            self.checkouts_inside += opening
            self.most_inside = max(self.most_inside, self.inside)
            self.arrived.notify_all()
        await self.open.wait()
        self.inside -= 1
        return httpx.Response(201, json=CREATED) if opening else httpx.Response(200, json=PAID)

    async def wait_for(self, count: int, *, checkouts: int = 0) -> None:
        async with asyncio.timeout(5), self.arrived:
            await self.arrived.wait_for(
                lambda: self.inside >= count and self.checkouts_inside >= checkouts
            )


@pytest.mark.parametrize("cap", [2, 5])
async def test_no_more_calls_than_the_cap_are_ever_in_flight(cap: int) -> None:
    gate = Gate()
    async with client_with(gate, timeout_seconds=5, max_outstanding=cap) as client:
        calls = [asyncio.create_task(client.create_checkout(REQUEST)) for _ in range(5)]
        await gate.wait_for(cap)
        # Time for a call beyond the cap to get in, were the cap broken; with it, none can.
        await asyncio.sleep(0.05)
        inside_before_opening = gate.inside
        gate.open.set()
        answers = await asyncio.gather(*calls)
    # With a cap of 5 all five are in at once (the control); with 2 never more than two.
    assert inside_before_opening == gate.most_inside == cap
    assert len(answers) == 5


async def test_questions_in_flight_leave_half_the_slots_to_checkouts() -> None:
    # A slow status endpoint held every slot with reconciliation's questions: users' checkouts
    # waited for one until their timeout.
    gate = Gate()
    async with client_with(gate, timeout_seconds=5, max_outstanding=4) as client:
        questions = [asyncio.create_task(client.get_checkout("chk_1")) for _ in range(6)]
        await gate.wait_for(2)
        checkouts = [asyncio.create_task(client.create_checkout(REQUEST)) for _ in range(2)]
        await gate.wait_for(4, checkouts=2)
        gate.open.set()
        await asyncio.gather(*questions, *checkouts)
    assert gate.most_inside == 4  # never past the cap


async def test_questions_queued_behind_the_backgrounds_share_are_timed_only_once_sent() -> None:
    # Each of 3 questions takes 0.3 s, the bound is 0.5 s, and 1 is asked at a time: the third
    # waits 0.6 s for its turn. Timed from its start it timed out, never sent.
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)
        return httpx.Response(200, json=PAID)

    async with client_with(slow, timeout_seconds=0.5, max_outstanding=2) as client:
        answers = await asyncio.gather(*(client.get_checkout("chk_1") for _ in range(3)))

    assert [a.status for a in answers] == [CheckoutState.PAID] * 3


async def test_a_call_that_cannot_get_a_slot_in_time_is_unreachable_and_sends_nothing() -> None:
    arrived: list[httpx.Request] = []
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def stuck(request: httpx.Request) -> httpx.Response:
        # Ignores its own timeout, as a stuck call can: it keeps its slot until released.
        arrived.append(request)
        in_flight.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        return httpx.Response(200, json=PAID)

    async with client_with(stuck, timeout_seconds=0.2, max_outstanding=1) as client:
        first = asyncio.create_task(client.get_checkout("chk_1"))
        async with asyncio.timeout(5):
            await in_flight.wait()
        with pytest.raises(PaymentServiceUnreachable):
            await client.get_checkout("chk_1")
        release.set()
        await first
    assert len(arrived) == 1


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_outstanding"):
        HttpPaymentService(BASE_URL, TOKEN, 1.0, max_outstanding=0)


# --- hygiene -------------------------------------------------------------------------------------


async def test_failures_never_put_the_token_or_the_customer_in_messages_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    errors: list[Exception] = []
    handlers: list[Handler] = [
        raising(httpx.ConnectError),
        Recorder(503, {}),
        Recorder(400, {"code": "x"}),
    ]
    for handler in handlers:
        with pytest.raises((PaymentServiceUnreachable, PaymentServiceRefused)) as failure:
            await checkout_with(handler)
        errors.append(failure.value)
    text = caplog.text + " ".join(str(error) for error in errors)
    assert caplog.records  # the failures were logged, so the check below means something
    assert TOKEN not in text
    assert "kim@example.com" not in text


async def test_a_closed_client_sends_nothing_more() -> None:
    recorder = Recorder(201, CREATED)
    async with client_with(recorder) as client:
        pass
    with pytest.raises(RuntimeError):
        await client.create_checkout(REQUEST)
    assert recorder.sent == []
