"""One log line per gRPC call and per webhook delivery, each under its own request id.

The id comes from the caller when it sent one (`x-request-id` metadata; the delivery id of a
payment callback, so the shim's line and the sender's retries share it) and is a fresh uuid4
otherwise. Every record logged while serving carries it.
"""

from __future__ import annotations

import logging
import time
from contextvars import Token
from typing import Any

import grpc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticketing_service.entrypoints.observability.logging import log_composed
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.observability.request_context import (
    RequestContext,
    begin_request,
    end_request,
    new_request_id,
    note_reservation,
)
from ticketing_service.entrypoints.observability.rpc_calls import (
    Context,
    RpcOutcome,
    short_method,
)

REQUEST_ID_KEY = "x-request-id"
# Payment callbacks name their delivery in one of these (SPEC section 6); the first one wins.
DELIVERY_ID_HEADERS = ("webhook-id", "x-ticket-payment-event-id", REQUEST_ID_KEY)
# Probes call these every few seconds on every replica: logged at DEBUG, not INFO.
QUIET_RPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
QUIET_ROUTES = ("/healthz",)
# Routes counted by name; any other path counts as "other", so a scanner adds no series.
METRIC_ROUTES = ("/api/ticket-payment-callbacks", "/healthz")
# Server-side faults are warnings; a refused request is the caller's business.
_WARNING_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

rpc_log = logging.getLogger("ticketing_service.rpc")
webhook_log = logging.getLogger("ticketing_service.webhook")


def _metadata_value(metadata: Any, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def _reservation_of(message: object) -> str:
    """The reservation a request or response names (`reservation_id`, `reservation`), or ""."""
    value = getattr(message, "reservation_id", None)
    if isinstance(value, str) and value:
        return value
    reservation = getattr(message, "reservation", None)
    value = getattr(reservation, "reservation_id", None)
    return value if isinstance(value, str) else ""


class RequestContextObserver:
    """Gives each call a request id and logs one line when it ends: method, code, duration.

    A CallObserver: put it first in `ObservingInterceptor(...)`, so that every other observer
    runs inside the call's request context.
    """

    def started(self, method: str, request: Any, context: Context) -> Token[RequestContext]:
        """Enter the call's request context (id from `x-request-id` metadata or a uuid4)."""
        given = _metadata_value(context.invocation_metadata(), REQUEST_ID_KEY)
        return begin_request(
            new_request_id(given),
            rpc=short_method(method),
            reservation_id=_reservation_of(request),
        )

    def finished(self, state: Token[RequestContext], outcome: RpcOutcome) -> None:
        """Log the call's line, naming the reservation of the response if it has one."""
        try:
            note_reservation(_reservation_of(outcome.response))
            level = logging.WARNING if outcome.code in _WARNING_CODES else logging.INFO
            if outcome.method.startswith(QUIET_RPC_PREFIXES) and level == logging.INFO:
                level = logging.DEBUG
            duration_ms = round(outcome.duration_seconds * 1000, 1)
            fields = {
                "grpc_code": outcome.code.name,
                "reason": outcome.reason,
                "duration_ms": duration_ms,
            }
            message = f"{short_method(outcome.method)} {outcome.code.name} in {duration_ms:.1f} ms"
            # Only registered methods are observed: the path, a code, a reason from our
            # vocabulary and a number are nothing a caller wrote, so redaction can skip them.
            log_composed(rpc_log, level, message, fields)
        finally:
            end_request(state)


class RequestContextMiddleware:
    """ASGI middleware of the shim: a request id per delivery and one line per request.

    With `metrics`, also counts answers by route and status and times them.
    """

    def __init__(self, app: ASGIApp, metrics: TicketingMetrics | None = None) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request under its request context; other scopes pass through."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        given = next((headers[h] for h in DELIVERY_ID_HEADERS if headers.get(h)), None)
        request_id = new_request_id(given)
        route = str(scope.get("path", ""))
        status = 500  # what the server answers if the app fails before it starts a response

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                echoed = (REQUEST_ID_KEY.encode(), request_id.encode())
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        token = begin_request(request_id, route=route)
        began = time.perf_counter()
        try:
            await self._app(scope, receive, send_with_id)
        finally:
            self._finish(str(scope.get("method", "")), route, status, began)
            end_request(token)

    def _finish(self, method: str, route: str, status: int, began: float) -> None:
        elapsed = time.perf_counter() - began
        duration_ms = round(elapsed * 1000, 1)
        level = logging.DEBUG if route in QUIET_ROUTES else logging.INFO
        if status >= 500:
            level = logging.WARNING
        webhook_log.log(
            level,
            "%s %s %d in %.1f ms",
            method,
            route,
            status,
            duration_ms,
            extra={"http_status": status, "duration_ms": duration_ms},
        )
        if self._metrics is not None:
            known = route if route in METRIC_ROUTES else "other"
            self._metrics.webhook_responses.labels(known, str(status)).inc()
            self._metrics.webhook_duration.labels(known).observe(elapsed)
