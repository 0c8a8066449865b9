"""A local stand-in of the payment service: enforces SPEC §5, acts out faults on demand."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

Fault = Literal[
    "hang",
    "held",
    "error_500",
    "error_400",
    "error_408",
    "error_409",
    "error_425",
    "garbage",
    "missing_fields",
]
# The faults that answer an error status: (status, code).
_ERRORS: dict[str, tuple[int, str]] = {
    "error_500": (500, "INTERNAL"),
    "error_400": (400, "INVALID_REQUEST"),
    "error_408": (408, "REQUEST_TIMEOUT"),
    "error_409": (409, "IDEMPOTENT_REQUEST_IN_FLIGHT"),
    "error_425": (425, "TOO_EARLY"),
}

_REQUIRED_STRINGS = (
    "provider",
    "paymentMethodFamily",
    "reservationId",
    "eventId",
    "tierId",
    "orderName",
    "currency",
    "successUrl",
    "cancelUrl",
    "callbackUrl",
)
# Far longer than any client timeout in the tests; the release event normally ends it first.
_HANG_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the stand-in saw it: lower-cased headers and the parsed body (or None)."""

    headers: Mapping[str, str]
    body: object


@dataclass(slots=True)
class PaymentServiceState:
    """What the stand-in received and created, and the fault it is told to act out."""

    token: str
    checkout_base_url: str
    fault: Fault | None = None
    requests: list[ReceivedRequest] = field(default_factory=list)
    checkouts: dict[str, dict[str, str]] = field(default_factory=dict)
    bodies: dict[str, object] = field(default_factory=dict)
    created_per_key: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when a request arrives: a test can act while the service waits for the answer.
    received: asyncio.Event = field(default_factory=asyncio.Event)


def create_payment_service_app(
    token: str, checkout_base_url: str = "http://127.0.0.1/checkout"
) -> Starlette:
    """Build the stand-in app; reach its state with `state_of(app)`."""
    state = PaymentServiceState(token=token, checkout_base_url=checkout_base_url.rstrip("/"))

    async def create_checkout(request: Request) -> Response:
        return await _handle(state, request)

    app = Starlette(routes=[Route("/v1/ticket-checkouts", create_checkout, methods=["POST"])])
    app.state.payment_service = state
    return app


def state_of(app: Starlette) -> PaymentServiceState:
    """The state of an app built by `create_payment_service_app`."""
    state = app.state.payment_service
    assert isinstance(state, PaymentServiceState)
    return state


async def _handle(state: PaymentServiceState, request: Request) -> Response:
    body = _parse(await request.body())
    state.requests.append(ReceivedRequest(headers=dict(request.headers), body=body))
    state.received.set()
    if state.fault == "held":
        # Answer normally, but only once the test releases it.
        async with asyncio.timeout(_HANG_SECONDS):
            await state.release.wait()
    elif state.fault is not None:
        return await _act_out(state, state.fault)
    if request.headers.get("authorization") != f"Bearer {state.token}":
        return _error(401, "UNAUTHENTICATED", "The bearer token is missing or wrong.")
    key = request.headers.get("idempotency-key")
    if not key:
        return _error(400, "IDEMPOTENCY_KEY_REQUIRED", "Send an Idempotency-Key header.")
    problem = _validate(body)
    if problem is not None:
        return _error(422, "INVALID_REQUEST", problem)
    return _create_or_replay(state, key, body)


def _create_or_replay(state: PaymentServiceState, key: str, body: object) -> Response:
    if key in state.checkouts:
        if state.bodies[key] != body:
            return _error(409, "IDEMPOTENCY_KEY_REUSED", "This key was used for another body.")
        return JSONResponse(state.checkouts[key], status_code=200)
    checkout_id = f"chk_{uuid.uuid4().hex}"
    checkout = {
        "checkoutId": checkout_id,
        "checkoutUrl": f"{state.checkout_base_url}/{checkout_id}",
        "status": "requires_payment",
    }
    state.checkouts[key], state.bodies[key] = checkout, body
    state.created_per_key[key] += 1
    return JSONResponse(checkout, status_code=201)


async def _act_out(state: PaymentServiceState, fault: Fault) -> Response:
    if fault == "hang":
        try:
            async with asyncio.timeout(_HANG_SECONDS):
                await state.release.wait()
        except TimeoutError:
            pass
        return _error(503, "UNAVAILABLE", "The stand-in was told to hang.")
    if fault in _ERRORS:
        status, code = _ERRORS[fault]
        return _error(status, code, f"The stand-in was told to answer {status}.")
    if fault == "garbage":
        return PlainTextResponse("<html>upstream exploded", status_code=200)
    return JSONResponse({"checkoutId": "chk_missing_url", "status": "requires_payment"})


def _validate(body: object) -> str | None:
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    missing = [name for name in _REQUIRED_STRINGS if not isinstance(body.get(name), str)]
    if missing:
        return f"These fields must be strings: {', '.join(missing)}."
    amount = body.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool):
        return "amount must be an integer in minor units."
    customer = body.get("customer")
    if not isinstance(customer, dict) or not isinstance(customer.get("moimUserId"), str):
        return "customer.moimUserId must be a string."
    if any(k in customer and not isinstance(customer[k], str) for k in ("name", "email")):
        return "customer.name and customer.email must be strings when present."
    return None


def _parse(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


class ReadyServer(uvicorn.Server):
    """A uvicorn server that says when it is listening, so nobody has to sleep and hope."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@asynccontextmanager
async def running_payment_service(app: Starlette) -> AsyncIterator[str]:
    """Serve `app` on a real socket on 127.0.0.1 port 0; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = ReadyServer(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await _wait_until_ready(server, serving)
        yield f"http://127.0.0.1:{port}"
    finally:
        # Release hung handlers first: uvicorn waits for in-flight requests before it exits.
        state_of(app).release.set()
        server.should_exit = True
        await serving
        sock.close()


async def _wait_until_ready(server: ReadyServer, serving: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(server.ready.wait())
    done, _ = await asyncio.wait({ready, serving}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if ready not in done:
        raise RuntimeError("The payment service stand-in did not start within 10 seconds.")
