"""The payment service as the use cases see it: every call they make to it (SPEC §5)."""

from __future__ import annotations

from typing import Protocol

from ticketing_service.service_layer.checkouts import CheckoutGateway, CheckoutReader
from ticketing_service.service_layer.refunds import RefundGateway


class PaymentService(CheckoutGateway, CheckoutReader, RefundGateway, Protocol):
    """Checkouts opened and read, refunds sent and followed."""
