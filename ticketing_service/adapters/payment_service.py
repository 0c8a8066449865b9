"""The payment service adapter: checkouts and refunds over HTTP exactly as SPEC §5 describes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC
from urllib.parse import quote

import httpx

from ticketing_service.adapters.payment_answers import (
    checkout_from,
    checkout_status_from,
    describe_error,
    error_code,
    readable_code,
    refund_status_from,
)
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutNotFound,
    CheckoutRequest,
    CheckoutStatus,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.refunds import (
    REFUND_NOT_FOUND,
    RefundRefused,
    RefundRequest,
    RefundStatus,
    UnknownRefund,
)

logger = logging.getLogger(__name__)

_CHECKOUTS_PATH = "/v1/ticket-checkouts"
_REFUNDS_PATH = "/v1/ticket-refunds"
_PAYMENT_METHOD_FAMILY = "easy_pay"
# Answers that say "not now" rather than "no": a request timeout (408), too early (425), rate
# limited (429). Repeating the call with the same key is safe; other 4xx are a definitive no.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Opening a checkout may also answer 409 while the same idempotency key is still in flight; a
# refund's 409 is a refusal (`refund_exceeds_cancellable`), so this is for checkouts only.
_TRANSIENT_FOR_CHECKOUTS = _TRANSIENT_STATUSES | {409}
_CHECKOUT_NOT_FOUND = "checkout_not_found"
# One pool for the whole process; the bound keeps a slow payment service from exhausting sockets.
_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)
# Calls in flight per process, across every use: reconciliation and refund passes can never
# flood the payment service, and a slow one makes callers wait here (bounded by the timeout).
DEFAULT_MAX_OUTSTANDING = 16
# A background call (a question or a refund, or the RPC an operator asks one with) waits its
# turn among the background's own calls for at most this many of its timeouts: a
# reconciliation batch (50 questions, 8 at a time) asks its last within it.
BACKGROUND_QUEUE_TIMEOUTS = 7
# The contract's answers are a few hundred bytes. A body is read this far and no further, so a
# wrong URL or a proxy that answers with a file costs a call at most this much memory (a
# 300 MB answer read whole cost 610 MB). A body cut here is not JSON: a 2xx reads as malformed,
# and any other answer still counts by its status.
MAX_ANSWER_BYTES = 1024 * 1024
# What an echo of the token becomes, as the logs write a masked secret.
_TOKEN_MASK = b"[REDACTED]"


class HttpPaymentService:
    """The payment service's client: one shared connection pool, a cap on calls in flight."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
        max_outstanding: int = DEFAULT_MAX_OUTSTANDING,
    ) -> None:
        if max_outstanding < 1:
            raise ValueError("max_outstanding must allow at least one call to the payment service.")
        self._token = token
        # The token as an answer could echo it (see _echo_of). Empty, it is not set and
        # nothing is masked.
        self._token_echo = _echo_of(token) if token else None
        self._timeout_seconds = timeout_seconds
        self._slots = asyncio.Semaphore(max_outstanding)
        # The background's calls take at most half of the slots: a slow status endpoint once
        # held every one with a batch of reconciliation questions, and users' checkouts timed
        # out waiting for one.
        self._background_slots = asyncio.Semaphore(max(1, max_outstanding // 2))
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds),
            limits=_LIMITS,
            transport=transport,
        )

    async def aclose(self) -> None:
        """Close the connection pool; call once when the service shuts down."""
        await self._client.aclose()

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Open (or replay) a reservation's checkout; raise PaymentServiceUnreachable/Refused."""
        key = f"reservation:{request.reservation_id}"
        body = _checkout_body(request)
        response = await self._send("POST", _CHECKOUTS_PATH, key, body, background=False)
        _raise_for_status(response, "the checkout", _TRANSIENT_FOR_CHECKOUTS)
        return checkout_from(response)

    async def get_checkout(self, checkout_id: str) -> CheckoutStatus:
        """A checkout's status now; CheckoutNotFound when the payment service never opened it."""
        response = await self._send("GET", f"{_CHECKOUTS_PATH}/{_segment(checkout_id)}")
        # Only the contract's code means "unknown checkout": a bare 404 (a wrong base URL, a
        # proxy) must not read as "never paid", or a paid seat would be given away.
        if response.status_code == 404 and error_code(response) == _CHECKOUT_NOT_FOUND:
            raise CheckoutNotFound(f"The payment service does not know checkout {checkout_id}.")
        _raise_for_status(response, "reading the checkout", _TRANSIENT_STATUSES)
        return checkout_status_from(response, checkout_id)

    async def create_refund(self, request: RefundRequest) -> RefundStatus:
        """Send (or replay) a refund; raise RefundRefused, PaymentServiceUnreachable/Refused."""
        key = f"refund:{request.refund_id}"
        response = await self._send("POST", _REFUNDS_PATH, key, _refund_body(request))
        _raise_for_refund_status(response)
        return refund_status_from(response, request.refund_id)

    async def get_refund(self, refund_id: str) -> RefundStatus:
        """A refund's status now; UnknownRefund when the payment service never took it, else
        raise as create_refund does."""
        response = await self._send("GET", f"{_REFUNDS_PATH}/{_segment(refund_id)}")
        # Only the contract's code means "never taken": a bare 404 (a wrong base URL, a proxy)
        # must not, or a refund the payment service made would be made again.
        if response.status_code == 404 and error_code(response) == REFUND_NOT_FOUND:
            raise UnknownRefund(
                f"The payment service answered HTTP 404 ({REFUND_NOT_FOUND}): it never took"
                f" refund {refund_id}.",
                REFUND_NOT_FOUND,
            )
        _raise_for_refund_status(response)
        return refund_status_from(response, refund_id)

    async def _send(
        self,
        method: str,
        path: str,
        idempotency_key: str | None = None,
        body: dict[str, object] | None = None,
        *,
        background: bool = True,
    ) -> httpx.Response:
        # httpx's timeout bounds each read, not the whole exchange; asyncio.timeout bounds the
        # total (the wait for a shared slot included; a background call's turn comes before,
        # bounded apart: `_turn`) so a server that drips one byte at a time, or a queue of slow
        # calls, still cannot hang the caller.
        try:
            async with self._turn(background), asyncio.timeout(self._timeout_seconds), self._slots:
                request = self._client.build_request(
                    method, path, headers=self._headers(idempotency_key), json=body
                )
                streamed = await self._client.send(request, stream=True)
                try:
                    content = await _read_at_most(streamed, MAX_ANSWER_BYTES)
                finally:
                    await streamed.aclose()
        # OSError: a TimeoutError is one, and so is a process out of files (EMFILE), which
        # httpx raises as it is, not as one of its own errors.
        except (OSError, httpx.TransportError) as error:
            logger.warning(
                "Payment service unreachable for %s %s: %s", method, path, type(error).__name__
            )
            raise PaymentServiceUnreachable(
                "The payment service could not be reached in time; retry later."
            ) from error
        # The status and the body are all an answer of the contract carries. A refusal that
        # echoes our token (quoting the header it refused) has it masked here, before any of
        # its text can reach a log line, an exception or a stored failure code. An answer that
        # took the call is read as sent: a short token could match a piece of its fields.
        if not streamed.is_success and self._token_echo:
            content = self._token_echo.sub(_TOKEN_MASK, content)
        return httpx.Response(streamed.status_code, content=content, request=request)

    @contextlib.asynccontextmanager
    async def _turn(self, background: bool) -> AsyncIterator[None]:
        """A background call's turn among the background's own calls, waited for at most
        BACKGROUND_QUEUE_TIMEOUTS of its timeouts (TimeoutError past that); a checkout needs
        none. Timed as part of the call, a batch of questions to a service answering in 2 s
        timed out in this queue, and paying users' holds at their end were expired as if the
        service were down."""
        if not background:
            yield
            return
        async with asyncio.timeout(self._timeout_seconds * BACKGROUND_QUEUE_TIMEOUTS):
            await self._background_slots.acquire()
        try:
            yield
        finally:
            self._background_slots.release()

    def _headers(self, idempotency_key: str | None) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            # Answers as they are: see _read_at_most.
            "Accept-Encoding": "identity",
        }
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return headers


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    # A body in a content coding, which was not asked for, is left unread: an empty body, so a
    # 2xx reads as malformed. Decoded, one read of 64 KiB could become 64 MiB before the limit
    # was looked at.
    if response.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        return b""
    content = bytearray()
    async for chunk in response.aiter_bytes():
        content += chunk
        if len(content) > limit:
            break
    return bytes(content[:limit])


def _echo_of(token: str) -> re.Pattern[bytes]:
    r"""The token as sent, or inside a JSON string written any way JSON allows: each of its
    characters as itself, as `\u00XX` (Go writes a `<` as `\u003c`), or a `"`, `\` or `/`
    after a backslash (the first two must be; PHP writes a `/` as `\/`); or URL-encoded
    (`%2F`), as a query string or form echoes it."""
    forms = (
        (
            re.escape(c),
            rf"\\u00(?i:{ord(c):02x})",
            rf"%(?i:{ord(c):02x})",
            *([re.escape("\\" + c)] if c in '"\\/' else ()),
        )
        for c in token
    )
    return re.compile("".join(f"(?:{'|'.join(each)})" for each in forms).encode())


def _segment(identifier: str) -> str:
    # Ids come from the other side; quoting keeps one from reaching another path ("../").
    return quote(identifier, safe="")


def _checkout_body(request: CheckoutRequest) -> dict[str, object]:
    customer: dict[str, str] = {"moimUserId": request.user_id}
    if request.customer_name is not None:
        customer["name"] = request.customer_name
    if request.customer_email is not None:
        customer["email"] = request.customer_email
    return {
        "provider": request.provider,
        "paymentMethodFamily": _PAYMENT_METHOD_FAMILY,
        "reservationId": request.reservation_id,
        "eventId": request.event_id,
        "tierId": request.tier_id,
        "orderName": request.order_name,
        "amount": int(request.amount),
        "currency": request.currency_code,
        "customer": customer,
        "successUrl": request.success_url,
        "cancelUrl": request.cancel_url,
        "callbackUrl": request.callback_url,
        "expiresAt": request.expire_time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def _refund_body(request: RefundRequest) -> dict[str, object]:
    return {
        "refundId": request.refund_id,
        "checkoutId": request.checkout_id,
        "paymentId": request.payment_id,
        "reservationId": request.reservation_id,
        "amount": int(request.amount),
        "currency": request.currency_code,
        "reason": request.reason,
    }


def _raise_for_status(response: httpx.Response, what: str, transient: frozenset[int]) -> None:
    status = response.status_code
    if status in transient or status >= 500:
        logger.warning("Payment service answered HTTP %d to %s.", status, what)
        raise PaymentServiceUnreachable(
            f"The payment service answered HTTP {status} to {what}; retry later."
        )
    if not 200 <= status < 300:
        raise PaymentServiceRefused(
            f"The payment service refused {what} with HTTP {status}"
            f"{describe_error(response)}; fix the request before trying again."
        )


def _raise_for_refund_status(response: httpx.Response) -> None:
    # The code is stored as the refund's failure code and returned to gRPC callers.
    status, code = response.status_code, readable_code(error_code(response))
    if 400 <= status < 500 and status not in _TRANSIENT_STATUSES and code:
        raise RefundRefused(
            f"The payment service refused the refund with HTTP {status}"
            f"{describe_error(response)}; do not resend it, an operator must look at it.",
            code,
        )
    _raise_for_status(response, "the refund", _TRANSIENT_STATUSES)
