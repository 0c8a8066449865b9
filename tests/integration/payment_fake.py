"""The payment service fake on a real port, the real client pointed at it, and raw HTTP to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ticketing_service.adapters.payment_service import HttpPaymentService
from ticketing_service.entrypoints.dev.payment_service import (
    create_payment_service_app,
    running_payment_service,
    serving,
    state_of,
)
from ticketing_service.entrypoints.dev.payment_state import PaymentServiceState
from ticketing_service.entrypoints.webhook.signatures import MoimHmacVerifier, SignatureRejected
from ticketing_service.service_layer.checkouts import CheckoutRequest

TOKEN = "fake-token"
SECRET = "fake-callback-secret"
# Short, so a hung call fails soon; as long as the other integration tests' payment timeout, so
# that a busy machine's slow answer (two cores running the whole suite) is not taken for a hang.
CLIENT_TIMEOUT_SECONDS = 3.0
# The test's own clock: a checkout's expiry is tried by moving it, never by waiting.
START = datetime(2030, 5, 1, 3, 0, tzinfo=UTC)
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
    callback_url="http://127.0.0.1:9/callbacks",
    expire_time=START + timedelta(minutes=10),
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Fake:
    """A running fake: its URL, its state, the test's clock, the real client and raw HTTP."""

    url: str
    state: PaymentServiceState
    clock: Clock
    client: HttpPaymentService
    http: httpx.AsyncClient

    def headers(self, key: str | None = None, token: str = TOKEN) -> dict[str, str]:
        """Headers for a raw request: the bearer token, and an idempotency key if given."""
        headers = {"Authorization": f"Bearer {token}"}
        return headers | ({"Idempotency-Key": key} if key else {})


@asynccontextmanager
async def running_fake(refund_callbacks: bool = False) -> AsyncIterator[Fake]:
    """The fake on a free port with a hand-moved clock; closed afterwards."""
    clock = Clock()
    app = create_payment_service_app(
        TOKEN, callback_secret=SECRET, refund_callbacks=refund_callbacks, now=clock
    )
    async with running_payment_service(app) as url:
        client = HttpPaymentService(url, TOKEN, CLIENT_TIMEOUT_SECONDS)
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            yield Fake(url, state_of(app), clock, client, http)
        await client.aclose()


@dataclass
class Receiver:
    """A callback endpoint: its URL and the bodies it accepted (signature verified)."""

    url: str
    accepted: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def callback_receiver() -> AsyncIterator[Receiver]:
    """An endpoint that verifies the moim-HMAC signature with SECRET and keeps what it accepts."""
    verifier, accepted = MoimHmacVerifier([SECRET]), list[dict[str, Any]]()

    async def receive(request: Request) -> Response:
        body = await request.body()
        try:
            verifier.verify(body, request.headers)
        except SignatureRejected:
            return JSONResponse({"ok": False}, status_code=401)
        accepted.append(json.loads(body))
        return JSONResponse({"ok": True})

    async with serving(Starlette(routes=[Route("/cb", receive, methods=["POST"])])) as url:
        yield Receiver(f"{url}/cb", accepted)
