"""httpx.MockTransport handlers for the payment service client's unit tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager

import httpx

from ticketing_service.adapters.payment_service import HttpPaymentService

TOKEN = "secret-token-123"
BASE_URL = "https://payments.example/api"
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


@asynccontextmanager
async def client_with(
    handler: Handler,
    timeout_seconds: float = 1.0,
    base_url: str = BASE_URL,
    max_outstanding: int = 16,
    token: str = TOKEN,
) -> AsyncIterator[HttpPaymentService]:
    """A client whose every request is answered by `handler`; closed afterwards."""
    client = HttpPaymentService(
        base_url,
        token,
        timeout_seconds,
        transport=httpx.MockTransport(handler),
        max_outstanding=max_outstanding,
    )
    try:
        yield client
    finally:
        await client.aclose()


class Recorder:
    """A handler that keeps every request and answers with a fixed response."""

    def __init__(self, status: int, body: object) -> None:
        self.status, self.body = status, body
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(self.status, json=self.body)

    def only_request(self) -> httpx.Request:
        assert len(self.sent) == 1
        return self.sent[0]

    def only_body(self) -> object:
        return json.loads(self.only_request().content)


def raising(error: type[httpx.TransportError]) -> Handler:
    """A handler that fails at the transport, as a dropped connection would."""

    def handle(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)

    return handle


def answering(status: int, content: bytes) -> Handler:
    """A handler that answers raw bytes."""
    return lambda request: httpx.Response(status, content=content)


def error_body(code: str) -> dict[str, str]:
    """An error answer as the contract shapes it."""
    return {"code": code, "message": f"The payment service says {code}."}
