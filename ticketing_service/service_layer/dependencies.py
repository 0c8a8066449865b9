"""What the use cases are given by the composition root."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ticketing_service.domain.reconciliation import ReconcilePolicy
from ticketing_service.service_layer.checkouts import CheckoutGateway, CheckoutReader
from ticketing_service.service_layer.observer import NO_OBSERVER, Observer
from ticketing_service.service_layer.ports import EventSignal, UnitOfWorkFactory
from ticketing_service.service_layer.refunds import RefundGateway


class PaymentService(CheckoutGateway, CheckoutReader, RefundGateway, Protocol):
    """Every call the service makes to the payment service (SPEC §5)."""


@dataclass(frozen=True, slots=True)
class Dependencies:
    """The adapters and settings every handler may use."""

    uow: UnitOfWorkFactory
    payment_service: PaymentService
    default_provider_account_id: str | None = None
    hold_seconds: float = 600
    callback_url: str = "http://127.0.0.1:8080/api/ticket-payment-callbacks"
    public_base_url: str = "http://localhost:3000"
    # Wakes event watchers across replicas; None makes watchers re-check on a timer instead.
    event_signal: EventSignal | None = None
    reconcile_policy: ReconcilePolicy = field(default_factory=ReconcilePolicy)
    # Told what background work found (the metrics); nothing by default.
    observer: Observer = NO_OBSERVER
