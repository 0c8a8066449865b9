"""The shim's ASGI middleware: a request id per delivery, one log line and metrics per request.

The id is the delivery id of a payment callback when it has one, so the shim's line and the
sender's retries share it, else a fresh uuid4. Every record logged while serving carries it.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ticketing_service.entrypoints.observability.interceptor import REQUEST_ID_KEY
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.observability.request_context import (
    begin_request,
    end_request,
    new_request_id,
)
from ticketing_service.entrypoints.observability.sampling import CALLER_NOISE

# Payment callbacks name their delivery in one of these (SPEC section 6); the first one wins.
DELIVERY_ID_HEADERS = ("webhook-id", "x-ticket-payment-event-id", REQUEST_ID_KEY)
QUIET_ROUTES = ("/healthz",)  # probed every few seconds: logged at DEBUG, not INFO
# Routes counted by name; any other path counts as "other", so a scanner adds no series.
CALLBACK_ROUTE = "/api/ticket-payment-callbacks"
METRIC_ROUTES = (CALLBACK_ROUTE, "/healthz")

webhook_log = logging.getLogger("ticketing_service.webhook")


def _caller_noise(route: str, status: int) -> bool:
    """Whether an answer's line is one any caller can provoke at will, and so is sampled: a
    401 (a bad signature), or a 4xx off the callback route (a scanner). A 2xx, a 5xx and the
    callback route's other answers are always logged."""
    return status == 401 or (400 <= status < 500 and route != CALLBACK_ROUTE)


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
        # The path as it came, still percent-encoded: decoded, it may hold spaces, brackets and
        # `=` that pass for other fields of a console line (`/x]%20request_id=…`).
        raw_path = scope.get("raw_path")
        route = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else str(scope["path"])
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
        extra: dict[str, object] = {"http_status": status, "duration_ms": duration_ms}
        if _caller_noise(route, status):
            extra |= CALLER_NOISE
        webhook_log.log(
            level, "%s %s %d in %.1f ms", method, route, status, duration_ms, extra=extra
        )
        if self._metrics is not None:
            known = route if route in METRIC_ROUTES else "other"
            self._metrics.webhook_responses.labels(known, str(status)).inc()
            self._metrics.webhook_duration.labels(known).observe(elapsed)
