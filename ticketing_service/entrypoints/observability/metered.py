"""Metering wrappers at the service's two outward seams: the payment service and the shim's
verifier. Each times or counts what crosses it and changes nothing; outcomes of the service's
own work are counted from what was committed (`TicketingMetrics.count_committed`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Mapping
from typing import TypeVar

from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.webhook.signatures import (
    CallbackVerifier,
    SignatureRejected,
    Verified,
)
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutRequest,
    CheckoutStatus,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.dependencies import Dependencies, PaymentService
from ticketing_service.service_layer.refunds import RefundRequest, RefundStatus

T = TypeVar("T")


class MeteredPaymentService:
    """The PaymentService, timing each call by its kind and counting failures."""

    def __init__(self, inner: PaymentService, metrics: TicketingMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Delegated and timed."""
        return await self._timed("create_checkout", self._inner.create_checkout(request))

    async def get_checkout(self, checkout_id: str) -> CheckoutStatus:
        """Delegated and timed."""
        return await self._timed("get_checkout", self._inner.get_checkout(checkout_id))

    async def create_refund(self, request: RefundRequest) -> RefundStatus:
        """Delegated and timed."""
        return await self._timed("create_refund", self._inner.create_refund(request))

    async def get_refund(self, refund_id: str) -> RefundStatus:
        """Delegated and timed."""
        return await self._timed("get_refund", self._inner.get_refund(refund_id))

    async def _timed(self, call: str, answer: Awaitable[T]) -> T:
        """Observe one call as ok, unavailable, refused or error."""
        began = time.perf_counter()
        result = "error"
        try:
            value = await answer
            result = "ok"
            return value
        except PaymentServiceUnreachable:
            result = "unavailable"
            raise
        except PaymentServiceRefused:
            result = "refused"
            raise
        finally:
            elapsed = time.perf_counter() - began
            self._metrics.payment_service_duration.labels(call, result).observe(elapsed)
            if result != "ok":
                self._metrics.payment_service_failures.labels(call, result).inc()


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
    """`deps` with its payment-service client timed and background work observed."""
    return dataclasses.replace(
        deps,
        payment_service=MeteredPaymentService(deps.payment_service, metrics),
        observer=metrics,
    )
