"""What the use cases are given by the composition root."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ticketing_service.domain.reconciliation import ReconcilePolicy
from ticketing_service.domain.refunds import RefundRetryPolicy
from ticketing_service.service_layer.observer import NO_OBSERVER, Observer
from ticketing_service.service_layer.payment_service import PaymentService
from ticketing_service.service_layer.ports import EventSignal, UnitOfWorkFactory

# Pages of the feed one process reads from the database at once (ListRegistrationEvents, and
# watchers catching up): each may be megabytes. 99 watchers catching up at once held every
# connection of the pool; purchases then waited seconds, and some failed DATABASE_UNAVAILABLE.
FEED_READS_AT_ONCE = 2


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
    # A payment that got no seat (or did not match) is refunded without anyone asking.
    auto_refund: bool = True
    refund_retry: RefundRetryPolicy = field(default_factory=RefundRetryPolicy)
    # Told what the use cases do (the metrics); nothing by default.
    observer: Observer = NO_OBSERVER
    feed_reads: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(FEED_READS_AT_ONCE)
    )
