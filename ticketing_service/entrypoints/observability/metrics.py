"""Prometheus metrics of the server and the shim (entrypoints/metrics_endpoint.py serves them).

Names are stable: dashboards, alerts and docs/operations.md refer to them. Every label takes
values from a closed set (method names the server registered, status codes, reasons and outcomes
written in this code), never from what a caller sends, so no request can add a series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import grpc
from moim.ticketing.v1 import ticketing_service_pb2
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reconciliation import CheckoutAnswer
from ticketing_service.domain.reservations import ConfirmOutcome
from ticketing_service.entrypoints.webhook.signatures import (
    REJECTION_REASONS,
    CallbackVerifier,
    SignatureRejected,
    Verified,
)
from ticketing_service.service_layer.ports import Committed

# Seconds: from a cached read (~1 ms) to the payment service's 10 s timeout and beyond.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The feed's event types, without their `reservation_` prefix.
RESERVATION_EVENT_TYPES = tuple(t.value.removeprefix("reservation_") for t in RegistrationEventType)
LATE_PAYMENT_RESULTS = ("seat_found", "paid_unfulfilled")
PAYMENT_SERVICE_RESULTS = ("ok", "unavailable", "refused", "error")
PAYMENT_SERVICE_CALLS = ("create_checkout", "get_checkout", "create_refund", "get_refund")
# What reconciliation heard: paid, a payment under way, not paid (in any way), or no answer.
RECONCILE_RESULTS = {
    CheckoutAnswer.PAID: "paid",
    CheckoutAnswer.PAYMENT_PENDING: "pending",
    CheckoutAnswer.REQUIRES_PAYMENT: "unpaid",
    CheckoutAnswer.CANCELLED: "unpaid",
    CheckoutAnswer.EXPIRED: "unpaid",
    CheckoutAnswer.NOT_FOUND: "unpaid",
    CheckoutAnswer.UNREACHABLE: "unreachable",
}
CONCURRENT_UPDATE = "CONCURRENT_UPDATE"
# The methods the server registers (all of TicketingService's), as `rpc_served` names them.
TICKETING_METHODS = tuple(
    method.name
    for method in ticketing_service_pb2.DESCRIPTOR.services_by_name["TicketingService"].methods
)

PoolUsage = Callable[[], tuple[int, int]]


class TicketingMetrics:
    """Every metric of one process, on its own registry (tests build as many as they like).

    Outcome counters are exported at zero before anything happens, so that a rate or an alert
    over them works from a replica's start.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, process_collectors: bool = True
    ) -> None:
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        if process_collectors:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            registry.register(GC_COLLECTOR)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def histogram(name: str, doc: str, labels: tuple[str, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=LATENCY_BUCKETS, registry=registry)

        rpc = ("service", "method", "code")
        self.rpc_handled = counter(
            "ticketing_rpc_handled", "gRPC calls served, by method and status code.", rpc
        )
        self.rpc_duration = histogram(
            "ticketing_rpc_duration_seconds", "Time to serve a gRPC call, by method and code.", rpc
        )
        self.rpc_errors = counter(
            "ticketing_rpc_errors",
            "Failed gRPC calls by the ErrorInfo reason they carried.",
            ("service", "method", "reason"),
        )
        self.lock_timeouts = counter(
            "ticketing_lock_timeouts",
            "Calls answered ABORTED/CONCURRENT_UPDATE: a lock or statement timeout, deadlock "
            "or serialization failure; the caller retries.",
            ("method",),
        )
        self.reservation_events = counter(
            "ticketing_reservation_events",
            "Committed reservation changes, by the type of the event they wrote to the feed.",
            ("type",),
        )
        self.late_payments = counter(
            "ticketing_late_payments",
            "Payments confirmed after their hold stopped counting, by whether a seat was free.",
            ("result",),
        )
        self.payment_service_duration = histogram(
            "ticketing_payment_service_duration_seconds",
            "Time of each call to the payment service, by call and result.",
            ("call", "result"),
        )
        self.payment_service_failures = counter(
            "ticketing_payment_service_failures",
            "Calls to the payment service that failed: unavailable (retried), refused (4xx), "
            "error (a bug).",
            ("call", "kind"),
        )
        self.reconcile_checks = counter(
            "ticketing_reconcile_checks",
            "Checkouts reconciliation asked the payment service about, by what it answered.",
            ("result",),
        )
        self.reconcile_confirmations = counter(
            "ticketing_reconcile_confirmations",
            "Payments reconciliation found and settled (their callback never came), by outcome.",
            ("outcome",),
        )
        self.reconcile_awaiting = Gauge(
            "ticketing_reconcile_awaiting_follow_up",
            "Reservations reconciliation will ask the payment service about again.",
            registry=registry,
        )
        self.webhook_verification_failures = counter(
            "ticketing_webhook_verification_failures",
            "Payment callbacks refused with 401, by why their signature did not verify.",
            ("reason",),
        )
        self.webhook_responses = counter(
            "ticketing_webhook_responses",
            "Webhook shim answers, by route and HTTP status.",
            ("route", "status"),
        )
        self.webhook_duration = histogram(
            "ticketing_webhook_duration_seconds",
            "Time to answer a webhook shim request.",
            ("route",),
        )
        for event_type in RESERVATION_EVENT_TYPES:
            self.reservation_events.labels(event_type)
        for result in LATE_PAYMENT_RESULTS:
            self.late_payments.labels(result)
        for call in PAYMENT_SERVICE_CALLS:
            for result in PAYMENT_SERVICE_RESULTS:
                self.payment_service_duration.labels(call, result)
                if result != "ok":
                    self.payment_service_failures.labels(call, result)
        for result in RECONCILE_RESULTS.values():
            self.reconcile_checks.labels(result)
        for outcome in ConfirmOutcome:
            self.reconcile_confirmations.labels(outcome.value.lower())
        for method in TICKETING_METHODS:
            self.lock_timeouts.labels(method)
        for reason in REJECTION_REASONS:
            self.webhook_verification_failures.labels(reason)

    def rpc_served(self, method: str, code: grpc.StatusCode, reason: str, seconds: float) -> None:
        """Count one served call and its latency; failures by reason, lock timeouts apart."""
        service, _, name = method.lstrip("/").rpartition("/")
        self.rpc_handled.labels(service, name, code.name).inc()
        self.rpc_duration.labels(service, name, code.name).observe(seconds)
        if code == grpc.StatusCode.OK:
            return
        self.rpc_errors.labels(service, name, reason or code.name).inc()
        if reason == CONCURRENT_UPDATE:
            self.lock_timeouts.labels(name).inc()

    def committed(self, committed: Committed) -> None:
        """Count what a committed transaction did: its feed events, and a late payment."""
        for event_type, count in committed.events.items():
            self.reservation_events.labels(event_type.value.removeprefix("reservation_")).inc(count)
        if committed.late_payment:
            confirmed = RegistrationEventType.RESERVATION_CONFIRMED in committed.events
            self.late_payments.labels("seat_found" if confirmed else "paid_unfulfilled").inc()

    def payment_service_call(self, call: str, result: str, seconds: float) -> None:
        """Time a call to the payment service; count it if it failed (an Observer)."""
        self.payment_service_duration.labels(call, result).observe(seconds)
        if result != "ok":
            self.payment_service_failures.labels(call, result).inc()

    def reconciled(self, answer: CheckoutAnswer, outcome: ConfirmOutcome | None) -> None:
        """Count a check by its result, and a payment it settled (an Observer)."""
        self.reconcile_checks.labels(RECONCILE_RESULTS[answer]).inc()
        if outcome is not None:
            self.reconcile_confirmations.labels(outcome.value.lower()).inc()

    def awaiting_follow_up(self, count: int) -> None:
        """Reservations still to be asked about again (an Observer)."""
        self.reconcile_awaiting.set(count)

    def watch_pool(self, usage: PoolUsage) -> None:
        """Report the database pool's use at each scrape from `usage() -> (in use, size)`."""
        self.registry.register(_PoolCollector(usage))


class MeteredVerifier:
    """The shim's CallbackVerifier, counting each refused signature by its reason."""

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


class _PoolCollector(Collector):
    def __init__(self, usage: PoolUsage) -> None:
        self._usage = usage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            in_use, size = self._usage()
        except Exception:  # a scrape must never fail because the pool could not be read
            return
        yield GaugeMetricFamily(
            "ticketing_db_pool_connections_in_use",
            "Database connections checked out of this process's pool right now.",
            value=in_use,
        )
        yield GaugeMetricFamily(
            "ticketing_db_pool_size", "Connections this process's pool keeps open.", value=size
        )
