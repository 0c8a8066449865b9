"""What the use cases tell the outside about their work (the metrics listen), and the one
wrapper that times every call to the payment service for it."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from ticketing_service.domain.reconciliation import CheckoutAnswer
from ticketing_service.domain.reservations import ConfirmOutcome
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutRequest,
    CheckoutStatus,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.payment_service import PaymentService
from ticketing_service.service_layer.ports import Committed
from ticketing_service.service_layer.refunds import RefundRequest, RefundStatus

T = TypeVar("T")


class Observer(Protocol):
    """Told what was committed, how calls to the payment service went, what reconciliation
    found."""

    def committed(self, committed: Committed) -> None:
        """A transaction committed: its feed events, and whether it settled a late payment."""
        ...

    def payment_service_call(self, call: str, result: str, seconds: float) -> None:
        """A call to the payment service ended: ok, unavailable, refused or error."""
        ...

    def reconciled(self, answer: CheckoutAnswer, outcome: ConfirmOutcome | None) -> None:
        """A checkout was asked about; `outcome` when the answer settled a payment."""
        ...

    def awaiting_follow_up(self, count: int) -> None:
        """How many reservations reconciliation will ask about again."""
        ...


class _NoObserver:
    def committed(self, committed: Committed) -> None:
        """Nothing listens."""

    def payment_service_call(self, call: str, result: str, seconds: float) -> None:
        """Nothing listens."""

    def reconciled(self, answer: CheckoutAnswer, outcome: ConfirmOutcome | None) -> None:
        """Nothing listens."""

    def awaiting_follow_up(self, count: int) -> None:
        """Nothing listens."""


NO_OBSERVER: Observer = _NoObserver()


class ObservedPaymentService:
    """A PaymentService whose every call is timed and told to the observer."""

    def __init__(self, inner: PaymentService, observer: Observer) -> None:
        self._inner = inner
        self._observer = observer

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Delegated and observed."""
        return await self._observed("create_checkout", self._inner.create_checkout(request))

    async def get_checkout(self, checkout_id: str) -> CheckoutStatus:
        """Delegated and observed."""
        return await self._observed("get_checkout", self._inner.get_checkout(checkout_id))

    async def create_refund(self, request: RefundRequest) -> RefundStatus:
        """Delegated and observed."""
        return await self._observed("create_refund", self._inner.create_refund(request))

    async def get_refund(self, refund_id: str) -> RefundStatus:
        """Delegated and observed."""
        return await self._observed("get_refund", self._inner.get_refund(refund_id))

    async def _observed(self, call: str, answer: Awaitable[T]) -> T:
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
            self._observer.payment_service_call(call, result, time.perf_counter() - began)
