"""A fake of Moim's payment service (SPEC §5) for `ticketing-service dev`, the tests and the
benchmark; never for production.

It speaks the contract exactly (bearer token, idempotency keys, checkouts, their status,
refunds), serves the pages a payer would see (`checkout_pages.py`), and acts out the faults a
test asks for. Its state (`state_of(app)`) lives in memory and is the tests' handle on it.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from ticketing_service.entrypoints.dev import checkout_pages, payment_requests
from ticketing_service.entrypoints.dev.payment_state import (
    Endpoint,
    FakeCheckout,
    FakeRefund,
    Fault,
    PaymentServiceState,
    ReceivedRequest,
    Refusal,
    utc_now,
)

# The secret callbacks are signed with unless one is given (the dev stack makes a fresh one).
DEFAULT_CALLBACK_SECRET = "payment-service-fake-secret"  # noqa: S105 - a fake's, nothing real
# Far longer than any client timeout in the tests; the release event normally ends it first.
_HANG_SECONDS = 60.0
_ERROR_FAULTS: dict[str, tuple[int, str]] = {
    "error_400": (400, "invalid_request"),
    "error_408": (408, "request_timeout"),
    "error_409": (409, "idempotent_request_in_flight"),
    "error_425": (425, "too_early"),
    "error_429": (429, "rate_limited"),
    "error_500": (500, "internal"),
    "error_503": (503, "unavailable"),
}
# Faults acted out around the normal answer rather than instead of it.
_ANSWERING_FAULTS = frozenset({"held", "late", "short_refund"})
# What "huge" streams: far more than any answer of the contract, 1 MiB at a time.
_HUGE_ANSWER_BYTES = 256 * 1024 * 1024
_HUGE_CHUNK = b"x" * (1024 * 1024)
# A gzip member's header: deflate, no flags, no time, no extra flags, unknown OS.
_GZIP_HEADER = bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF])
# What "missing_fields" answers: JSON without the fields the contract promises.
_INCOMPLETE: dict[Endpoint, dict[str, str]] = {
    "create_checkout": {"checkoutId": "chk_missing_url", "status": "requires_payment"},
    "get_checkout": {"checkoutId": "chk_missing_status"},
    "create_refund": {"refundId": "ref_missing_status"},
    "get_refund": {"refundId": "ref_missing_status"},
}
Handler = Callable[[PaymentServiceState, Request, object], Response]


def create_payment_service_app(
    token: str,
    *,
    public_url: str | None = None,
    callback_secret: str = DEFAULT_CALLBACK_SECRET,
    refund_callbacks: bool = False,
    now: Callable[[], datetime] = utc_now,
) -> Starlette:
    """Build the fake; `public_url` is where a browser reaches its pages (by default, where
    `running_payment_service` serves it)."""
    state = PaymentServiceState(
        token,
        callback_secret,
        public_url.rstrip("/") if public_url else None,
        refund_callbacks=refund_callbacks,
        now=now,
    )
    checkouts, refunds = "/v1/ticket-checkouts", "/v1/ticket-refunds"
    api = [
        Route(checkouts, _api(state, "create_checkout", _create_checkout), methods=["POST"]),
        Route(checkouts + "/{id}", _api(state, "get_checkout", _get_checkout), methods=["GET"]),
        Route(refunds, _api(state, "create_refund", _create_refund), methods=["POST"]),
        Route(refunds + "/{id}", _api(state, "get_refund", _get_refund), methods=["GET"]),
    ]
    app = Starlette(routes=api + checkout_pages.routes(state))
    app.state.payment_service = state
    return app


def state_of(app: Starlette) -> PaymentServiceState:
    """The state of an app built by `create_payment_service_app`."""
    state = app.state.payment_service
    assert isinstance(state, PaymentServiceState)
    return state


def _api(
    state: PaymentServiceState, endpoint: Endpoint, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that records the request, acts out its fault, checks the token, answers."""

    async def serve(request: Request) -> Response:
        body = _parse(await request.body())
        state.requests.append(ReceivedRequest(endpoint, dict(request.headers), body))
        state.received.set()
        fault = state.faults.get(endpoint)
        if fault == "held":
            await _released(state)
        elif fault is not None and fault not in _ANSWERING_FAULTS:
            return await _act_out(state, endpoint, fault)
        try:
            _authorize(state, request)
            answer = handler(state, request, body)
        except Refusal as refusal:
            return _error(refusal.status, refusal.code, refusal.message)
        if fault == "late":
            await _released(state)
        return answer

    return serve


async def _released(state: PaymentServiceState) -> None:
    async with asyncio.timeout(_HANG_SECONDS):
        await state.release.wait()


def _authorize(state: PaymentServiceState, request: Request) -> None:
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, f"Bearer {state.token}".encode()):
        raise Refusal(401, "unauthenticated", "The bearer token is missing or wrong.")


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key", "")
    if not key:
        raise Refusal(400, "idempotency_key_required", "Send an Idempotency-Key header.")
    return key


def _create_checkout(state: PaymentServiceState, request: Request, body: object) -> Response:
    key = _idempotency_key(request)
    data, expires_at = payment_requests.checkout_body(body)
    checkout, created = state.open_checkout(key, data, expires_at)
    answer = {
        "checkoutId": checkout.checkout_id,
        "checkoutUrl": checkout_pages.checkout_url(state, checkout),
        "status": checkout.status,
    }
    return JSONResponse(answer, status_code=201 if created else 200)


def _get_checkout(state: PaymentServiceState, request: Request, body: object) -> Response:
    return JSONResponse(checkout_json(state.read_checkout(request.path_params["id"])))


def _create_refund(state: PaymentServiceState, request: Request, body: object) -> Response:
    key = _idempotency_key(request)
    refund, created = state.open_refund(key, payment_requests.refund_body(key, body))
    answer = _refund_answer(state, "create_refund", refund)
    return JSONResponse(answer, status_code=201 if created else 200)


def _get_refund(state: PaymentServiceState, request: Request, body: object) -> Response:
    refund = state.read_refund(request.path_params["id"])
    return JSONResponse(_refund_answer(state, "get_refund", refund))


def _refund_answer(
    state: PaymentServiceState, endpoint: Endpoint, refund: FakeRefund
) -> dict[str, object]:
    answer = refund_json(refund)
    if state.faults.get(endpoint) == "short_refund" and refund.status == "succeeded":
        answer["refundedAmount"] = 1
    return answer


def checkout_json(checkout: FakeCheckout) -> dict[str, object]:
    """GET /v1/ticket-checkouts/{id}'s answer; the payment fields only once paid."""
    answer: dict[str, object] = {
        "checkoutId": checkout.checkout_id,
        "reservationId": checkout.text("reservationId"),
        "status": checkout.status,
        "amount": checkout.amount,
        "currency": checkout.text("currency"),
    }
    if checkout.payment_id is not None:
        answer["paymentId"] = checkout.payment_id
    if checkout.tx_id is not None:
        answer["txId"] = checkout.tx_id
    if checkout.paid_at is not None:
        answer["paidAt"] = checkout.paid_at.isoformat()
    return answer


def refund_json(refund: FakeRefund) -> dict[str, object]:
    """A refund as the refund endpoints answer it."""
    refunded = refund.amount if refund.status == "succeeded" else 0
    answer: dict[str, object] = {
        "refundId": refund.refund_id,
        "status": refund.status,
        "refundedAmount": refunded,
    }
    if refund.failure_code is not None:
        answer["failureCode"] = refund.failure_code
    return answer


async def _act_out(state: PaymentServiceState, endpoint: Endpoint, fault: Fault) -> Response:
    if fault == "hang":
        try:
            async with asyncio.timeout(_HANG_SECONDS):
                await state.release.wait()
        except TimeoutError:
            pass
        return _error(503, "unavailable", "The fake was told to hang.")
    if fault in _ERROR_FAULTS:
        status, code = _ERROR_FAULTS[fault]
        return _error(status, code, f"The fake was told to answer {status}.")
    if fault == "garbage":
        return PlainTextResponse("<html>upstream exploded", status_code=200)
    if fault == "huge":
        return StreamingResponse(_huge_answer(state), media_type="application/json")
    if fault == "nested":
        return Response(b"[" * 100_000 + b"]" * 100_000, media_type="application/json")
    if fault == "compressed":
        headers = {"Content-Encoding": "gzip"}
        return Response(_compressed_answer(), headers=headers, media_type="application/json")
    return JSONResponse(_INCOMPLETE[endpoint])


async def _huge_answer(state: PaymentServiceState) -> AsyncIterator[bytes]:
    yield b'{"padding": "'
    for _ in range(_HUGE_ANSWER_BYTES // len(_HUGE_CHUNK)):
        yield _HUGE_CHUNK  # waits while the caller does not read
        state.huge_bytes_sent += len(_HUGE_CHUNK)
    yield b'"}'


@functools.cache
def _compressed_answer() -> bytes:
    """32 MiB of one JSON string as one gzip stream of 33 KB, made in milliseconds.

    Compressing the 32 MiB took 0.3 s, inside the 0.5 s a client under test waits. After a
    full flush deflate starts afresh, so each 1 MiB chunk compresses to the same bytes: they
    are made once and repeated, between a gzip header and trailer (RFC 1952) of our own.
    """
    head, tail = b'{"padding": "', b'"}'
    deflate = zlib.compressobj(wbits=-15)  # raw deflate, without zlib's or gzip's framing
    parts = [deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)]
    parts += [deflate.compress(_HUGE_CHUNK) + deflate.flush(zlib.Z_FULL_FLUSH)] * 32
    parts += [deflate.compress(tail) + deflate.flush()]
    crc = zlib.crc32(head)
    for _ in range(32):
        crc = zlib.crc32(_HUGE_CHUNK, crc)
    size = len(head) + 32 * len(_HUGE_CHUNK) + len(tail)
    trailer = struct.pack("<II", zlib.crc32(tail, crc), size)
    return _GZIP_HEADER + b"".join(parts) + trailer


def _parse(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
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
        """Start as uvicorn does, then say so."""
        await super().startup(sockets)
        self.ready.set()


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free port on 127.0.0.1."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections accepted from a socket
    # made with it; without it every answer waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def running_payment_service(app: Starlette) -> AsyncIterator[str]:
    """Serve the fake on 127.0.0.1 on a free port until the block ends; yield its base URL."""
    state = state_of(app)
    # Release hung handlers before stopping: uvicorn waits for in-flight requests to end.
    async with serving(app, before_stop=state.release.set) as url:
        state.public_url = state.public_url or url
        yield url
    await state.drain_callbacks()


@asynccontextmanager
async def serving(
    app: ASGIApp, before_stop: Callable[[], None] = lambda: None
) -> AsyncIterator[str]:
    """Serve any ASGI app on 127.0.0.1 on a free port, ready when yielded; stop it after."""
    sock = loopback_socket()
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = ReadyServer(config)
    running = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await _wait_until_ready(server, running)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        before_stop()
        server.should_exit = True
        await running
        sock.close()


async def _wait_until_ready(server: ReadyServer, serving: asyncio.Task[None]) -> None:
    ready = asyncio.create_task(server.ready.wait())
    done, _ = await asyncio.wait({ready, serving}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if ready not in done:
        raise RuntimeError("The server did not start within 10 seconds.")
