"""Metering wrappers at the service's two outward seams: the payment service and the shim's
verifier. Each times or counts what crosses it and changes nothing; outcomes of the service's
own work are counted from what was committed (`TicketingMetrics.count_committed`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.webhook.signatures import (
    CallbackVerifier,
    SignatureRejected,
    Verified,
)
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutGateway,
    CheckoutRequest,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.dependencies import Dependencies


class MeteredCheckoutGateway:
    """The CheckoutGateway, timing each call to the payment service and counting failures."""

    def __init__(self, inner: CheckoutGateway, metrics: TicketingMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Delegated; observed as ok, unavailable, refused or error."""
        began = time.perf_counter()
        result = "error"
        try:
            checkout = await self._inner.create_checkout(request)
            result = "ok"
            return checkout
        except PaymentServiceUnreachable:
            result = "unavailable"
            raise
        except PaymentServiceRefused:
            result = "refused"
            raise
        finally:
            elapsed = time.perf_counter() - began
            self._metrics.payment_service_duration.labels(result).observe(elapsed)
            if result != "ok":
                self._metrics.payment_service_failures.labels(result).inc()


class MeteredVerifier:
    """A CallbackVerifier that counts each refused signature by its reason."""

    def __init__(self, inner: CallbackVerifier, metrics: TicketingMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        """Delegated; a SignatureRejected is counted, then raised on."""
        try:
            return self._inner.verify(body, headers)
        except SignatureRejected as rejected:
            self._metrics.webhook_verification_failures.labels(rejected.reason).inc()
            raise


def metered_dependencies(deps: Dependencies, metrics: TicketingMetrics) -> Dependencies:
    """`deps` with its payment-service client timed."""
    return dataclasses.replace(deps, checkouts=MeteredCheckoutGateway(deps.checkouts, metrics))
