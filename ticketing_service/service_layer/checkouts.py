"""The port to the payment service's checkouts (SPEC §5), and the two ways any call to it fails.

Every call to the payment service (checkouts and refunds alike) raises one of two exceptions
when it does not succeed: `PaymentServiceUnreachable` (no definitive answer now: the same call
may be repeated later with the same idempotency key) or `PaymentServiceRefused` (a definitive
"no" or an answer that makes no sense: repeating it changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class PaymentServiceUnreachable(Exception):
    """No definitive answer now (timeout, connection, 5xx, 408, 425, 429): retry later."""


class PaymentServiceRefused(Exception):
    """A definitive refusal (another 4xx) or a malformed answer: do not retry the same call."""


class CheckoutNotFound(PaymentServiceRefused):
    """The payment service does not know the checkout (404 `checkout_not_found`): never paid."""


@dataclass(frozen=True, slots=True)
class CheckoutRequest:
    """What the service asks the payment service for; money is an integer in minor units."""

    reservation_id: str
    event_id: str
    tier_id: str
    order_name: str
    amount: int
    currency_code: str
    provider: str
    user_id: str
    customer_name: str | None
    customer_email: str | None
    success_url: str
    cancel_url: str
    callback_url: str
    # The hold's end: the payment service may refuse to start a payment it no longer covers.
    expire_time: datetime


@dataclass(frozen=True, slots=True)
class Checkout:
    """A checkout the payment service opened (or replayed for the same idempotency key)."""

    checkout_id: str
    checkout_url: str
    status: str


class CheckoutState(StrEnum):
    """Where a checkout stands at the payment service; the values are the wire's."""

    REQUIRES_PAYMENT = "requires_payment"
    PAYMENT_PENDING = "payment_pending"
    PAID = "paid"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class CheckoutStatus:
    """A checkout as the payment service reports it; the payment fields are set once paid."""

    checkout_id: str
    reservation_id: str
    status: CheckoutState
    amount: int
    currency_code: str
    payment_id: str | None
    tx_id: str | None
    paid_time: datetime | None


class CheckoutGateway(Protocol):
    """Opens checkouts at the payment service, idempotent per reservation."""

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Open (or replay) a reservation's checkout; raise PaymentServiceUnreachable/Refused."""
        ...


class CheckoutReader(Protocol):
    """Asks the payment service where a checkout stands (what reconciliation needs)."""

    async def get_checkout(self, checkout_id: str) -> CheckoutStatus:
        """A checkout's status now; CheckoutNotFound when the payment service never opened it."""
        ...
