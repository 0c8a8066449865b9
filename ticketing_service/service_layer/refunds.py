"""The port to the payment service's refunds (SPEC §5, §10).

Calls fail as every call to the payment service does (`checkouts.PaymentServiceUnreachable`
or `PaymentServiceRefused`); a refusal of the refund itself is a `RefundRefused` with its code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ticketing_service.service_layer.checkouts import PaymentServiceRefused

# The payment service's code when a checkout's refunds (not failed) would exceed what was paid.
REFUND_EXCEEDS_CANCELLABLE = "refund_exceeds_cancellable"


class RefundRefused(PaymentServiceRefused):
    """The payment service said no to this refund (a 4xx with a code): do not resend it."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


# The payment service's code (with 404) for a refund id it has never taken.
REFUND_NOT_FOUND = "refund_not_found"


class UnknownRefund(RefundRefused):
    """The payment service has no refund of this id (404 `refund_not_found`): it never took it."""


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Money to give back for a paid checkout; the amount is in minor units."""

    refund_id: str
    checkout_id: str
    payment_id: str
    reservation_id: str
    amount: int
    currency_code: str
    reason: str


class RefundState(StrEnum):
    """Where a refund stands at the payment service; the values are the wire's."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RefundStatus:
    """A refund as the payment service reports it; `failure_code` is set only when failed."""

    refund_id: str
    status: RefundState
    refunded_amount: int
    failure_code: str | None


class RefundGateway(Protocol):
    """Sends refunds to the payment service, idempotent per refund id, and follows them."""

    async def create_refund(self, request: RefundRequest) -> RefundStatus:
        """Send (or replay) a refund; raise RefundRefused, PaymentServiceUnreachable/Refused."""
        ...

    async def get_refund(self, refund_id: str) -> RefundStatus:
        """A refund's status now, to follow a pending one; raise as create_refund does."""
        ...
