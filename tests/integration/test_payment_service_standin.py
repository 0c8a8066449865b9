"""HttpPaymentService against the payment service stand-in over real HTTP on a real socket."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from starlette.applications import Starlette

from tests.payment_service_standin import (
    Fault,
    PaymentServiceState,
    create_payment_service_app,
    running_payment_service,
    state_of,
)
from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.service_layer.checkouts import (
    CheckoutRequest,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)

TOKEN = "standin-token"
CLIENT_TIMEOUT_SECONDS = 0.5
REQUEST = CheckoutRequest(
    reservation_id="res-42",
    event_id="evt-1",
    tier_id="tier-1",
    order_name="Jazz Night - VIP",
    amount=55000,
    currency_code="KRW",
    provider="portone",
    user_id="user-1",
    customer_name=None,
    customer_email="kim@example.com",
    success_url="https://moim.example/success",
    cancel_url="https://moim.example/cancel",
    callback_url="https://shim.example/callback",
    expire_time=datetime(2030, 1, 1, tzinfo=UTC),
)


@pytest.fixture
def app() -> Starlette:
    return create_payment_service_app(TOKEN, checkout_base_url="https://pay.example/checkout")


@pytest.fixture
def state(app: Starlette) -> PaymentServiceState:
    return state_of(app)


@pytest.fixture
async def base_url(app: Starlette) -> AsyncIterator[str]:
    async with running_payment_service(app) as url:
        yield url


def gateway_for(base_url: str, token: str = TOKEN) -> HttpPaymentService:
    return HttpPaymentService(base_url, token, CLIENT_TIMEOUT_SECONDS)


@pytest.fixture
async def gateway(base_url: str) -> AsyncIterator[HttpPaymentService]:
    gateway = gateway_for(base_url)
    yield gateway
    await gateway.aclose()


async def test_a_new_reservation_opens_a_checkout_awaiting_payment(
    gateway: HttpPaymentService, state: PaymentServiceState
) -> None:
    checkout = await gateway.create_checkout(REQUEST)
    assert checkout.status == "requires_payment"
    assert checkout.checkout_id.startswith("chk_")
    assert checkout.checkout_url == f"https://pay.example/checkout/{checkout.checkout_id}"
    assert state.created_per_key == {"reservation:res-42": 1}


async def test_the_stand_in_receives_the_body_the_spec_describes(
    gateway: HttpPaymentService, state: PaymentServiceState
) -> None:
    await gateway.create_checkout(REQUEST)
    [received] = state.requests
    assert received.headers["idempotency-key"] == "reservation:res-42"
    assert isinstance(received.body, dict)
    assert received.body["amount"] == 55000
    assert received.body["customer"] == {"moimUserId": "user-1", "email": "kim@example.com"}


async def test_a_replayed_reservation_returns_the_stored_checkout_and_creates_only_one(
    gateway: HttpPaymentService, state: PaymentServiceState
) -> None:
    first = await gateway.create_checkout(REQUEST)
    second = await gateway.create_checkout(REQUEST)
    assert second == first
    assert len(state.requests) == 2
    assert state.created_per_key == {"reservation:res-42": 1}


async def test_different_reservations_open_different_checkouts(
    gateway: HttpPaymentService, state: PaymentServiceState
) -> None:
    first = await gateway.create_checkout(REQUEST)
    other = await gateway.create_checkout(dataclasses.replace(REQUEST, reservation_id="res-43"))
    assert other.checkout_id != first.checkout_id
    assert sum(state.created_per_key.values()) == 2


async def test_a_wrong_token_is_refused_and_creates_nothing(
    base_url: str, state: PaymentServiceState
) -> None:
    gateway = gateway_for(base_url, token="not-the-token")
    try:
        with pytest.raises(PaymentServiceRefused, match="401"):
            await gateway.create_checkout(REQUEST)
    finally:
        await gateway.aclose()
    assert state.checkouts == {}


async def test_a_hung_payment_service_is_unavailable_within_the_client_timeout(
    gateway: HttpPaymentService, state: PaymentServiceState
) -> None:
    state.fault = "hang"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PaymentServiceUnreachable):
        await gateway.create_checkout(REQUEST)
    assert loop.time() - started < CLIENT_TIMEOUT_SECONDS + 0.5
    assert len(state.requests) == 1  # it reached the server and hung there; it was not refused


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("error_500", PaymentServiceUnreachable),
        ("error_400", PaymentServiceRefused),
        ("garbage", PaymentServiceRefused),
        ("missing_fields", PaymentServiceRefused),
    ],
)
async def test_each_fault_is_classified_as_the_spec_says(
    gateway: HttpPaymentService,
    state: PaymentServiceState,
    fault: Fault,
    error: type[Exception],
) -> None:
    state.fault = fault
    with pytest.raises(error):
        await gateway.create_checkout(REQUEST)
    assert len(state.requests) == 1


async def test_a_refusal_carries_the_code_the_payment_service_sent(
    gateway: HttpPaymentService, state: PaymentServiceState
) -> None:
    state.fault = "error_400"
    with pytest.raises(PaymentServiceRefused, match="INVALID_REQUEST"):
        await gateway.create_checkout(REQUEST)


async def test_the_stand_in_rejects_a_request_without_an_idempotency_key(
    base_url: str, state: PaymentServiceState
) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        response = await client.post(
            "/v1/ticket-checkouts",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"reservationId": "res-42"},
        )
    assert response.status_code == 400
    assert response.json()["code"] == "IDEMPOTENCY_KEY_REQUIRED"
    assert state.checkouts == {}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"reservationId": "res-42"}, id="missing-fields"),
        pytest.param("not an object", id="not-an-object"),
    ],
)
async def test_the_stand_in_rejects_an_incomplete_body(
    base_url: str, state: PaymentServiceState, body: object
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "reservation:res-42"}
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        response = await client.post("/v1/ticket-checkouts", headers=headers, json=body)
    assert response.status_code == 422
    assert response.json()["code"] == "INVALID_REQUEST"
    assert state.checkouts == {}


@pytest.mark.parametrize("amount", [550.5, "55000", True, None])
async def test_the_stand_in_rejects_an_amount_that_is_not_an_integer(
    gateway: HttpPaymentService, base_url: str, state: PaymentServiceState, amount: object
) -> None:
    await gateway.create_checkout(REQUEST)
    valid = state.requests[0].body
    assert isinstance(valid, dict)
    headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "reservation:res-99"}
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        response = await client.post(
            "/v1/ticket-checkouts", headers=headers, json={**valid, "amount": amount}
        )
    assert response.status_code == 422
    assert state.created_per_key == {"reservation:res-42": 1}
