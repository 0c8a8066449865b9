"""The webhook shim: verifies payment callbacks over HTTP and forwards them to the confirmer."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ticketing_service.domain.money import MAX_AMOUNT
from ticketing_service.domain.times import parse_rfc3339
from ticketing_service.entrypoints.observability.request_context import note_reservation
from ticketing_service.entrypoints.observability.sampling import CALLER_NOISE
from ticketing_service.entrypoints.webhook.forwarding import (
    ConfirmRejected,
    PaidCallback,
    PaymentConfirmer,
    RefundCallback,
    RefundRefresher,
)
from ticketing_service.entrypoints.webhook.signatures import (
    CallbackVerifier,
    SignatureRejected,
    Verified,
)

CALLBACK_PATH = "/api/ticket-payment-callbacks"
HEALTH_PATH = "/healthz"
MAX_BODY_BYTES = 64 * 1024
PAID_EVENT_TYPE = "ticket_payment.paid"
REFUND_EVENT_TYPES = ("ticket_payment.refunded", "ticket_payment.refund_failed")
RETRY_AFTER_SECONDS = 5
HEALTH_TIMEOUT_SECONDS = 5.0

# ConfirmPayment's fields as a callback spells them, so that a 400 for a value the service
# refused (an id over its length) names it as the shim's own payload errors do.
_CALLBACK_FIELDS = {
    "reservation_id": "reservationId",
    "checkout_id": "checkoutId",
    "payment_id": "paymentId",
    "tx_id": "txId",
    "provider": "provider",
    "amount": "amount",
    "currency_code": "currency",
    "paid_time": "paidAt",
    "delivery_id": "delivery id header",
}

_STATUS_BY_KIND = {
    "not_found": 404,
    "failed_precondition": 409,
    "invalid_argument": 400,
    "unavailable": 503,
}

logger = logging.getLogger(__name__)


class _BodyTooLarge(Exception):
    """The request body is over MAX_BODY_BYTES."""


class _BadPayload(Exception):
    """The verified body is not a payload we accept; `field` names the first problem."""

    def __init__(self, field: str) -> None:
        super().__init__(f"The callback payload field {field!r} is missing or malformed.")
        self.field = field


def _error(status: int, error: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"ok": False, "error": error}, status_code=status, headers=headers)


def _retry_later(error: str) -> Response:
    return _error(503, error, {"Retry-After": str(RETRY_AFTER_SECONDS)})


def _declared_too_large(content_length: str | None) -> bool:
    value = (content_length or "").strip()
    if not (value.isascii() and value.isdigit()):
        return False  # absent or unparsable: the streamed count below still holds the line
    return len(value) > 12 or int(value) > MAX_BODY_BYTES


async def _read_capped_body(request: Request) -> bytes:
    """Read the body, giving up as soon as it is known to exceed MAX_BODY_BYTES."""
    if _declared_too_large(request.headers.get("content-length")):
        raise _BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _BodyTooLarge
    return bytes(body)


def _load_object(body: bytes) -> dict[str, object]:
    try:
        parsed: object = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON or UTF-8, huge ints, absurd nesting
        raise _BadPayload("body") from None
    if not isinstance(parsed, dict):
        raise _BadPayload("body")
    return parsed


def _required_str(event: Mapping[str, object], key: str) -> str:
    value = _optional_str(event, key)
    if not value.strip():
        raise _BadPayload(key)
    return value


def _optional_str(event: Mapping[str, object], key: str) -> str:
    value = event.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or not _is_utf8(value):
        raise _BadPayload(key)
    return value


def _is_utf8(value: str) -> bool:
    """False for a lone surrogate (JSON's `"\\ud800"`), which no request can carry: forwarded,
    it failed as a fault every time, and the sender was told to retry for ever."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _amount(event: Mapping[str, object]) -> int:
    value = event.get("amount")
    # bool is an int subclass: `true` must not pay for a ticket.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_AMOUNT:
        raise _BadPayload("amount")
    return value


def _paid_time(event: Mapping[str, object]) -> datetime:
    """The RFC 3339 `paidAt` (with its offset), in UTC. A signed but impossible one (year 1,
    or 9999 with an offset that leaves it once in UTC) is a 400 naming it: the backend could not
    take it, and a 503 would make the sender retry it forever."""
    paid = parse_rfc3339(_required_str(event, "paidAt"))
    if paid is None:
        raise _BadPayload("paidAt")
    return paid


def _paid_callback(event: Mapping[str, object], verified: Verified, body: bytes) -> PaidCallback:
    return PaidCallback(
        reservation_id=_required_str(event, "reservationId"),
        checkout_id=_required_str(event, "checkoutId"),
        payment_id=_required_str(event, "paymentId"),
        tx_id=_optional_str(event, "txId"),
        provider=_required_str(event, "provider"),
        amount=_amount(event),
        currency_code=_required_str(event, "currency"),
        paid_time=_paid_time(event),
        delivery_id=verified.delivery_id,
        delivery_scheme=verified.scheme,
        raw_event=body,
    )


def _refund_callback(event: Mapping[str, object], verified: Verified) -> RefundCallback:
    """Only the refund's id is read: the service asks the payment service for the rest."""
    refund_id = _required_str(event, "refundId")
    try:
        canonical = str(uuid.UUID(refund_id))
    except ValueError:
        raise _BadPayload("refundId") from None
    return RefundCallback(refund_id=canonical, delivery_id=verified.delivery_id)


def _parse_callback(body: bytes, verified: Verified) -> PaidCallback | RefundCallback | None:
    """Return the paid or refund callback `body` holds, or None for a type the shim ignores."""
    event = _load_object(body)
    event_type = event.get("type")
    if not isinstance(event_type, str):
        raise _BadPayload("type")
    if event_type == PAID_EVENT_TYPE:
        return _paid_callback(event, verified, body)
    if event_type in REFUND_EVENT_TYPES:
        return _refund_callback(event, verified)
    return None


class _CallbackEndpoint:
    """POST /api/ticket-payment-callbacks: size cap, signature, payload, then confirm (or, for
    a refund's callback, have the service look the refund up)."""

    def __init__(
        self, verifier: CallbackVerifier, confirmer: PaymentConfirmer, refunds: RefundRefresher
    ) -> None:
        self._verifier = verifier
        self._confirmer = confirmer
        self._refunds = refunds

    async def handle(self, request: Request) -> Response:
        """Answer one callback; never 500, and nothing is forwarded unless it verified."""
        try:
            body = await _read_capped_body(request)
        except _BodyTooLarge:
            return _error(413, "body_too_large")
        except ClientDisconnect:
            return _error(400, "client_disconnected")
        try:
            verified = self._verifier.verify(body, request.headers)
        except SignatureRejected as exc:
            # Anyone can send these, as many as they like: sampled (the 401 is counted).
            logger.warning(
                "Rejected a payment callback signature: %s", exc.reason, extra=CALLER_NOISE
            )
            return _error(401, exc.reason)
        try:
            payment = _parse_callback(body, verified)
        except _BadPayload as exc:
            logger.warning(
                "Malformed payment callback %r: field %s", verified.delivery_id, exc.field
            )
            return JSONResponse({"ok": False, "error": "invalid_payload", "field": exc.field}, 400)
        if payment is None:
            return JSONResponse({"ok": True, "ignored": True})
        if isinstance(payment, RefundCallback):
            return await self._refresh(payment)
        return await self._forward(payment)

    async def _refresh(self, refund: RefundCallback) -> Response:
        """Have the service look the refund up. Its id unknown: 200, logged (the sender retrying
        would not help: the refund was never owed here); the service away: 503, retried."""
        try:
            state = await self._refunds.refresh_refund(refund)
        except ConfirmRejected as exc:
            logger.warning("Refund callback %r refused: %s", refund.delivery_id, exc.reason)
            if exc.kind == "not_found":
                return JSONResponse({"ok": True, "ignored": True, "reason": exc.reason[:64]})
            if exc.kind == "invalid_argument":
                return _error(400, exc.reason[:64])
            return _retry_later(exc.reason[:64])
        except Exception:
            logger.exception("Forwarding refund callback %r failed", refund.delivery_id)
            return _retry_later("unavailable")
        logger.info(
            "Refund callback %r: refund %s is %s", refund.delivery_id, refund.refund_id, state
        )
        return JSONResponse({"ok": True, "refundId": refund.refund_id, "state": state})

    async def _forward(self, payment: PaidCallback) -> Response:
        note_reservation(payment.reservation_id)  # names this delivery's log lines
        try:
            result = await self._confirmer.confirm(payment)
        except ConfirmRejected as exc:
            field = _CALLBACK_FIELDS.get(exc.fields[0], exc.fields[0]) if exc.fields else ""
            named = f" (field {field})" if field else ""
            logger.warning(
                "Payment callback %r refused: %s%s", payment.delivery_id, exc.reason, named
            )
            reason = exc.reason[:64]  # a machine word by contract; bounded all the same
            if exc.kind == "unavailable":
                return _retry_later(reason)
            if exc.kind == "invalid_argument" and field:
                return JSONResponse({"ok": False, "error": "invalid_payload", "field": field}, 400)
            return _error(_STATUS_BY_KIND[exc.kind], reason)
        except Exception:
            # The sender retries on 503; a 500 would tell it nothing. Never log the body.
            logger.exception("Forwarding payment callback %r failed", payment.delivery_id)
            return _retry_later("unavailable")
        logger.info("Payment callback %r: %s", payment.delivery_id, result.outcome)
        return JSONResponse(
            {
                "ok": True,
                "outcome": result.outcome,
                "reservationId": result.reservation_id,
                "registrationId": result.registration_id,
            }
        )


class _RefuseAmbiguousLength:
    """Answer 400 and close the connection for a request with both Transfer-Encoding and
    Content-Length (RFC 9112 §6.3). A proxy in front that framed it by the other header would
    read the rest of the connection differently: a request smuggled after it must not be read."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name for name, _ in scope["headers"]}  # lower case, as uvicorn gives them
            if {b"transfer-encoding", b"content-length"} <= names:
                logger.warning(
                    "Refused a request with both Transfer-Encoding and Content-Length",
                    extra=CALLER_NOISE,
                )
                refusal = _error(400, "ambiguous_body_length", {"Connection": "close"})
                await refusal(scope, receive, send)
                return
        await self._app(scope, receive, send)


def _health_endpoint(
    health: Callable[[], Awaitable[bool]],
) -> Callable[[Request], Awaitable[Response]]:
    async def healthz(request: Request) -> Response:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                serving = await health()
        except Exception:
            logger.warning("The gRPC backend health check failed", exc_info=True)
            serving = False
        if serving is True:
            return JSONResponse({"status": "SERVING"})
        return JSONResponse({"status": "NOT_SERVING"}, status_code=503)

    return healthz


def create_webhook_app(
    verifier: CallbackVerifier,
    confirmer: PaymentConfirmer,
    health: Callable[[], Awaitable[bool]],
    refunds: RefundRefresher,
) -> Starlette:
    """Build the shim's ASGI app: the callback route and a health route for the gRPC backend."""
    callbacks = _CallbackEndpoint(verifier, confirmer, refunds)
    return Starlette(
        routes=[
            Route(CALLBACK_PATH, callbacks.handle, methods=["POST"]),
            Route(HEALTH_PATH, _health_endpoint(health), methods=["GET"]),
        ],
        middleware=[Middleware(_RefuseAmbiguousLength)],
    )
