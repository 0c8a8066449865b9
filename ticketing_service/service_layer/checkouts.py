"""The port to the payment service: opening a checkout for a reservation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


@dataclass(frozen=True, slots=True)
class Checkout:
    """A checkout the payment service opened (or replayed for the same idempotency key)."""

    checkout_id: str
    checkout_url: str
    status: str


class CheckoutUnavailable(Exception):
    """The payment service could not be asked (timeout, connection, 5xx): the hold stays, retry."""


class CheckoutRefused(Exception):
    """The payment service refused the checkout (4xx) or answered nonsense: do not retry."""


class CheckoutGateway(Protocol):
    """Opens checkouts at the payment service, idempotent per reservation."""

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        """Open (or replay) the checkout for a reservation; raise CheckoutUnavailable/Refused."""
        ...
