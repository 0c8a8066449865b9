"""Prometheus metrics of the server and the shim, and the HTTP endpoint that serves them.

Names are stable: dashboards, alerts and docs/operations.md refer to them. Every label takes
values from a closed set (method names the server registered, status codes, reasons and outcomes
written in this code), never from what a caller sends, so no request can add a series.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reconciliation import CheckoutAnswer
from ticketing_service.domain.reservations import ConfirmOutcome
from ticketing_service.entrypoints.observability.rpc_calls import Context, RpcOutcome
from ticketing_service.service_layer.ports import Committed
from ticketing_service.webhook_config import parse_host_port

METRICS_LISTEN_SETTING = "TICKETING_METRICS_LISTEN"

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

PoolUsage = Callable[[], tuple[int, int]]


class TicketingMetrics:
    """Every metric of one process, on its own registry (tests build as many as they like)."""

    def __init__(
        self, registry: CollectorRegistry | None = None, *, process_collectors: bool = True
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        if process_collectors:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            self.registry.register(GC_COLLECTOR)
        self._rpc_metrics()
        self._outcome_metrics()
        self._webhook_metrics()

    def _rpc_metrics(self) -> None:
        labels = ("service", "method", "code")
        self.rpc_handled = Counter(
            "ticketing_rpc_handled",
            "gRPC calls served, by method and status code.",
            labels,
            registry=self.registry,
        )
        self.rpc_duration = Histogram(
            "ticketing_rpc_duration_seconds",
            "Time to serve a gRPC call, by method and code.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rpc_errors = Counter(
            "ticketing_rpc_errors",
            "Failed gRPC calls by the ErrorInfo reason they carried.",
            ("service", "method", "reason"),
            registry=self.registry,
        )
        self.lock_timeouts = Counter(
            "ticketing_lock_timeouts",
            "Calls answered ABORTED/CONCURRENT_UPDATE: a lock or statement timeout, deadlock "
            "or serialization failure; the caller retries.",
            ("method",),
            registry=self.registry,
        )

    def _outcome_metrics(self) -> None:
        self.reservation_events = Counter(
            "ticketing_reservation_events",
            "Committed reservation changes, by the type of the event they wrote to the feed.",
            ("type",),
            registry=self.registry,
        )
        self.late_payments = Counter(
            "ticketing_late_payments",
            "Payments confirmed after their hold stopped counting, by whether a seat was free.",
            ("result",),
            registry=self.registry,
        )
        self.payment_service_duration = Histogram(
            "ticketing_payment_service_duration_seconds",
            "Time of each call to the payment service, by call and result.",
            ("call", "result"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.payment_service_failures = Counter(
            "ticketing_payment_service_failures",
            "Calls to the payment service that failed: unavailable (retried), refused (4xx), "
            "error (a bug).",
            ("call", "kind"),
            registry=self.registry,
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
        self._reconcile_metrics()

    def _reconcile_metrics(self) -> None:
        self.reconcile_checks = Counter(
            "ticketing_reconcile_checks",
            "Checkouts reconciliation asked the payment service about, by what it answered.",
            ("result",),
            registry=self.registry,
        )
        self.reconcile_confirmations = Counter(
            "ticketing_reconcile_confirmations",
            "Payments reconciliation found and settled (their callback never came), by outcome.",
            ("outcome",),
            registry=self.registry,
        )
        self.reconcile_awaiting = Gauge(
            "ticketing_reconcile_awaiting_follow_up",
            "Reservations reconciliation will ask the payment service about again.",
            registry=self.registry,
        )
        for result in RECONCILE_RESULTS.values():
            self.reconcile_checks.labels(result)
        for outcome in ConfirmOutcome:
            self.reconcile_confirmations.labels(outcome.value.lower())

    def reconciled(self, answer: CheckoutAnswer, outcome: ConfirmOutcome | None) -> None:
        """Count a check by its result, and a payment it settled (an Observer)."""
        self.reconcile_checks.labels(RECONCILE_RESULTS[answer]).inc()
        if outcome is not None:
            self.reconcile_confirmations.labels(outcome.value.lower()).inc()

    def awaiting_follow_up(self, count: int) -> None:
        """Reservations still to be asked about again (an Observer)."""
        self.reconcile_awaiting.set(count)

    def _webhook_metrics(self) -> None:
        self.webhook_verification_failures = Counter(
            "ticketing_webhook_verification_failures",
            "Payment callbacks refused with 401, by why their signature did not verify.",
            ("reason",),
            registry=self.registry,
        )
        self.webhook_responses = Counter(
            "ticketing_webhook_responses",
            "Webhook shim answers, by route and HTTP status.",
            ("route", "status"),
            registry=self.registry,
        )
        self.webhook_duration = Histogram(
            "ticketing_webhook_duration_seconds",
            "Time to answer a webhook shim request.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def count_committed(self, committed: Committed) -> None:
        """Count what a committed transaction did: its feed events, and a late payment."""
        for event_type, count in committed.events.items():
            self.reservation_events.labels(event_type.value.removeprefix("reservation_")).inc(count)
        if committed.late_payment:
            confirmed = RegistrationEventType.RESERVATION_CONFIRMED in committed.events
            self.late_payments.labels("seat_found" if confirmed else "paid_unfulfilled").inc()

    def started(self, method: str, request: object, context: Context) -> None:
        """Nothing to count until the call ends (TicketingMetrics is a CallObserver)."""

    def finished(self, state: None, outcome: RpcOutcome) -> None:
        """Count one served call and its latency; failures by reason, lock timeouts apart."""
        service, _, method = outcome.method.lstrip("/").rpartition("/")
        code = outcome.code.name
        self.rpc_handled.labels(service, method, code).inc()
        self.rpc_duration.labels(service, method, code).observe(outcome.duration_seconds)
        if outcome.code == grpc.StatusCode.OK:
            return
        self.rpc_errors.labels(service, method, outcome.reason or code).inc()
        if outcome.reason == CONCURRENT_UPDATE:
            self.lock_timeouts.labels(method).inc()

    def watch_pool(self, usage: PoolUsage) -> None:
        """Report the database pool's use at each scrape from `usage() -> (in use, size)`."""
        self.registry.register(_PoolCollector(usage))


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


@dataclass(slots=True)
class MetricsServer:
    """The metrics endpoint, served from a daemon thread; `close()` stops it."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def start_metrics_server(listen: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` at `http://<listen>/metrics` (port 0 picks a free port)."""
    host, port = parse_host_port(listen, METRICS_LISTEN_SETTING)
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(int(server.server_address[1]), server, thread)
