"""HttpCheckoutGateway against httpx.MockTransport: the wire format and every failure class."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable, Coroutine

import httpx
import pytest

from ticketing_service.adapters.payment_service import HttpCheckoutGateway
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutRefused,
    CheckoutRequest,
    CheckoutUnavailable,
)

TOKEN = "secret-token-123"
BASE_URL = "https://payments.example/api"
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
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
)
CREATED = {
    "checkoutId": "chk_1",
    "checkoutUrl": "https://pay.example/checkout/chk_1",
    "status": "requires_payment",
}


async def checkout_with(
    handler: Handler,
    request: CheckoutRequest = REQUEST,
    timeout_seconds: float = 1.0,
    base_url: str = BASE_URL,
) -> Checkout:
    """Run one create_checkout through a gateway whose transport is `handler`."""
    transport = httpx.MockTransport(handler)
    gateway = HttpCheckoutGateway(base_url, TOKEN, timeout_seconds, transport=transport)
    try:
        return await gateway.create_checkout(request)
    finally:
        await gateway.aclose()


class Recorder:
    """A handler that keeps every request and answers with a fixed response."""

    def __init__(self, status: int = 201, body: object = CREATED) -> None:
        self.status, self.body = status, body
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(self.status, json=self.body)

    def only_body(self) -> object:
        assert len(self.sent) == 1
        return json.loads(self.sent[0].content)


def raising(error: type[httpx.TransportError]) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return handle


def answering(status: int, content: bytes) -> Handler:
    return lambda request: httpx.Response(status, content=content)


# --- what goes over the wire -------------------------------------------------------------------


async def test_it_posts_to_the_ticket_checkouts_path_under_the_base_url() -> None:
    recorder = Recorder()
    await checkout_with(recorder)
    assert [(r.method, str(r.url)) for r in recorder.sent] == [
        ("POST", "https://payments.example/api/v1/ticket-checkouts")
    ]


async def test_a_trailing_slash_on_the_base_url_does_not_double_the_slash() -> None:
    recorder = Recorder()
    await checkout_with(recorder, base_url=BASE_URL + "/")
    assert str(recorder.sent[0].url) == "https://payments.example/api/v1/ticket-checkouts"


async def test_it_sends_the_bearer_token_the_reservation_idempotency_key_and_json_headers() -> None:
    recorder = Recorder()
    await checkout_with(recorder)
    headers = recorder.sent[0].headers
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["idempotency-key"] == "reservation:res-1"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"


async def test_the_body_carries_every_field_under_its_spec_name() -> None:
    recorder = Recorder()
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
    }


async def test_the_amount_is_sent_as_a_json_integer_never_a_float_or_string() -> None:
    recorder = Recorder()
    await checkout_with(recorder)
    assert b'"amount":55000' in recorder.sent[0].content.replace(b" ", b"")


async def test_an_absent_customer_name_and_email_are_omitted_rather_than_sent_as_null() -> None:
    recorder = Recorder()
    anonymous = dataclasses.replace(REQUEST, customer_name=None, customer_email=None)
    await checkout_with(recorder, request=anonymous)
    body = recorder.only_body()
    assert isinstance(body, dict)
    assert body["customer"] == {"moimUserId": "user-1"}


# --- answers that are accepted -----------------------------------------------------------------


@pytest.mark.parametrize("status", ["requires_payment", "payment_pending", "paid"])
@pytest.mark.parametrize("http_status", [200, 201])
async def test_every_status_the_spec_allows_returns_the_checkout(
    status: str, http_status: int
) -> None:
    checkout = await checkout_with(Recorder(http_status, {**CREATED, "status": status}))
    assert checkout == Checkout("chk_1", "https://pay.example/checkout/chk_1", status)


# --- failures the caller may retry -------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.ConnectError, httpx.RemoteProtocolError],
)
async def test_a_transport_failure_is_unavailable(error: type[httpx.TransportError]) -> None:
    with pytest.raises(CheckoutUnavailable, match="retry"):
        await checkout_with(raising(error))


@pytest.mark.parametrize("http_status", [500, 502, 503, 429, 408, 409, 425])
async def test_a_server_error_a_rate_limit_or_a_not_now_is_unavailable(http_status: int) -> None:
    with pytest.raises(CheckoutUnavailable, match=str(http_status)):
        await checkout_with(Recorder(http_status, {"code": "BUSY", "message": "Try later."}))


async def test_a_server_that_never_answers_cannot_outlast_the_timeout() -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(201, json=CREATED)

    started = asyncio.get_running_loop().time()
    with pytest.raises(CheckoutUnavailable):
        await checkout_with(never, timeout_seconds=0.1)
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_a_server_that_drips_its_body_cannot_outlast_the_timeout() -> None:
    async def drip() -> AsyncIterator[bytes]:
        yield b'{"checkoutId": '
        await asyncio.sleep(30)
        yield b'"chk_1"}'

    async def slow(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, content=drip())

    started = asyncio.get_running_loop().time()
    with pytest.raises(CheckoutUnavailable):
        await checkout_with(slow, timeout_seconds=0.1)
    assert asyncio.get_running_loop().time() - started < 1.0


# --- failures the caller must not retry --------------------------------------------------------


async def test_a_400_is_refused_with_the_code_and_message_from_the_error_body() -> None:
    error = {"code": "INVALID_REQUEST", "message": "amount must be positive"}
    with pytest.raises(CheckoutRefused) as refused:
        await checkout_with(Recorder(400, error))
    assert "400" in str(refused.value)
    assert "INVALID_REQUEST: amount must be positive" in str(refused.value)


@pytest.mark.parametrize(("http_status", "content"), [(404, b"not found"), (302, b""), (401, b"")])
async def test_any_other_non_2xx_answer_is_refused(http_status: int, content: bytes) -> None:
    with pytest.raises(CheckoutRefused, match=str(http_status)):
        await checkout_with(answering(http_status, content))


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
        pytest.param(json.dumps({**CREATED, "status": None}).encode(), id="null-status"),
    ],
)
async def test_a_2xx_with_a_malformed_body_is_refused(content: bytes) -> None:
    with pytest.raises(CheckoutRefused, match="malformed"):
        await checkout_with(answering(201, content))


# --- hygiene -----------------------------------------------------------------------------------


async def test_failures_never_put_the_token_or_the_customer_in_messages_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    errors: list[Exception] = []
    for handler in (raising(httpx.ConnectError), Recorder(503), Recorder(400, {"code": "X"})):
        with pytest.raises((CheckoutUnavailable, CheckoutRefused)) as failure:
            await checkout_with(handler)
        errors.append(failure.value)
    text = caplog.text + " ".join(str(error) for error in errors)
    assert caplog.records  # the failures were logged, so the check below means something
    assert TOKEN not in text
    assert "kim@example.com" not in text


async def test_a_closed_gateway_sends_nothing_more() -> None:
    recorder = Recorder()
    gateway = HttpCheckoutGateway(BASE_URL, TOKEN, 1.0, transport=httpx.MockTransport(recorder))
    await gateway.aclose()
    with pytest.raises(RuntimeError):
        await gateway.create_checkout(REQUEST)
    assert recorder.sent == []
