"""The payment service adapter: opens checkouts over HTTP exactly as SPEC §5 describes."""

from __future__ import annotations

import asyncio
import logging

import httpx

from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutRefused,
    CheckoutRequest,
    CheckoutUnavailable,
)

logger = logging.getLogger(__name__)

_PATH = "/v1/ticket-checkouts"
_PAYMENT_METHOD_FAMILY = "easy_pay"
_ACCEPTED_STATUSES = frozenset({"requires_payment", "payment_pending", "paid"})
# Answers that say "not now" rather than "no": a request timeout (408), the same idempotency key
# still in flight (409), too early (425), rate limited (429). Retrying with the same key is
# safe, so the hold stays; only other 4xx refuse the checkout for good.
_TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
# One pool for the whole process; the bound keeps a slow payment service from exhausting sockets.
_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)


class HttpCheckoutGateway:
    """Opens checkouts at the payment service over one shared, bounded connection pool."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._token = token
        self._timeout_seconds = timeout_seconds
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
        """Open (or replay) the checkout for a reservation; raise CheckoutUnavailable/Refused."""
        response = await self._post(request)
        _raise_for_status(response)
        return _checkout_from(response)

    async def _post(self, request: CheckoutRequest) -> httpx.Response:
        # httpx's timeout bounds each read, not the whole exchange; asyncio.timeout bounds the
        # total so a server that drips one byte at a time still cannot hang the caller.
        try:
            async with asyncio.timeout(self._timeout_seconds):
                return await self._client.post(
                    _PATH, headers=self._headers(request), json=_body(request)
                )
        except (TimeoutError, httpx.TransportError) as error:
            logger.warning(
                "Payment service unreachable for reservation %s: %s",
                request.reservation_id,
                type(error).__name__,
            )
            raise CheckoutUnavailable(
                "The payment service could not be reached in time; keep the hold and retry later."
            ) from error

    def _headers(self, request: CheckoutRequest) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token}",
            "Idempotency-Key": f"reservation:{request.reservation_id}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }


def _body(request: CheckoutRequest) -> dict[str, object]:
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
    }


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status in _TRANSIENT_STATUSES or status >= 500:
        logger.warning("Payment service answered HTTP %d to a checkout.", status)
        raise CheckoutUnavailable(
            f"The payment service answered HTTP {status}; keep the hold and retry later."
        )
    if not 200 <= status < 300:
        raise CheckoutRefused(
            f"The payment service refused the checkout with HTTP {status}"
            f"{_describe_error(response)}; fix the request before trying again."
        )


def _describe_error(response: httpx.Response) -> str:
    data = _json_or_none(response)
    if not isinstance(data, dict):
        return ""
    code, message = data.get("code"), data.get("message")
    if isinstance(code, str) and isinstance(message, str):
        return f" ({code}: {message[:200]})"
    return f" ({code})" if isinstance(code, str) else ""


def _checkout_from(response: httpx.Response) -> Checkout:
    data = _json_or_none(response)
    if not isinstance(data, dict):
        raise _malformed("its body is not a JSON object")
    checkout_id, url, status = data.get("checkoutId"), data.get("checkoutUrl"), data.get("status")
    if not (isinstance(checkout_id, str) and checkout_id):
        raise _malformed("checkoutId is missing or empty")
    if not (isinstance(url, str) and url):
        raise _malformed("checkoutUrl is missing or empty")
    if not (isinstance(status, str) and status in _ACCEPTED_STATUSES):
        raise _malformed("status is not one of requires_payment, payment_pending or paid")
    return Checkout(checkout_id=checkout_id, checkout_url=url, status=status)


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:  # not JSON, or not valid text at all
        return None


def _malformed(reason: str) -> CheckoutRefused:
    return CheckoutRefused(
        f"The payment service sent a malformed answer ({reason}); "
        "do not retry, report it to the payment team."
    )
