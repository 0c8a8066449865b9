"""The metrics endpoint over real HTTP, parsed as Prometheus parses it, and the meters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import get_args

import httpx
import pytest
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes import FakeCheckouts
from ticketing_service.entrypoints.metrics_endpoint import start_metrics_server
from ticketing_service.entrypoints.observability.metrics import (
    LATE_PAYMENT_RESULTS,
    RESERVATION_EVENT_TYPES,
    MeteredVerifier,
    TicketingMetrics,
)
from ticketing_service.entrypoints.webhook.signatures import (
    MoimHmacVerifier,
    RejectionReason,
    SignatureRejected,
    WebhookVerifier,
    sign_moim_hmac,
)
from ticketing_service.service_layer.checkouts import (
    Checkout,
    CheckoutRequest,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.observer import ObservedPaymentService

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(metrics: TicketingMetrics) -> Samples:
    """Serve the registry on a free port, GET /metrics once, and parse every sample."""
    endpoint = start_metrics_server("127.0.0.1:0", metrics.registry)
    try:
        response = httpx.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=5)
    finally:
        endpoint.close()
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
def metrics() -> TicketingMetrics:
    return TicketingMetrics(process_collectors=False)


def test_every_outcome_counter_is_exported_at_zero_before_anything_happens(
    metrics: TicketingMetrics,
) -> None:
    samples = scrape(metrics)
    for event_type in RESERVATION_EVENT_TYPES:
        assert samples[key("ticketing_reservation_events_total", type=event_type)] == 0
    for result in LATE_PAYMENT_RESULTS:
        assert samples[key("ticketing_late_payments_total", result=result)] == 0
    for kind in ("unavailable", "refused", "error"):
        for call in ("create_checkout", "get_checkout", "create_refund", "get_refund"):
            labels = {"call": call, "kind": kind}
            assert samples[key("ticketing_payment_service_failures_total", **labels)] == 0


def test_lock_timeouts_and_refused_signatures_are_exported_at_zero_from_the_start(
    metrics: TicketingMetrics,
) -> None:
    # Without a series before the first event, increase() and rate() missed that event.
    samples = scrape(metrics)
    methods = pb.DESCRIPTOR.services_by_name["TicketingService"].methods
    for method in methods:
        assert samples[key("ticketing_lock_timeouts_total", method=method.name)] == 0
    for reason in get_args(RejectionReason):
        assert samples[key("ticketing_webhook_verification_failures_total", reason=reason)] == 0


def test_the_pool_gauges_read_the_pool_at_each_scrape(metrics: TicketingMetrics) -> None:
    usage = iter([(3, 10), (7, 10)])
    metrics.watch_pool(lambda: next(usage))
    first, second = scrape(metrics), scrape(metrics)
    assert first[key("ticketing_db_pool_connections_in_use")] == 3
    assert second[key("ticketing_db_pool_connections_in_use")] == 7
    assert second[key("ticketing_db_pool_size")] == 10


def test_a_pool_that_cannot_be_read_leaves_the_rest_of_the_scrape_intact(
    metrics: TicketingMetrics,
) -> None:
    def broken() -> tuple[int, int]:
        raise RuntimeError("the engine is disposed")

    metrics.watch_pool(broken)
    samples = scrape(metrics)
    assert key("ticketing_db_pool_size") not in samples
    assert samples[key("ticketing_reservation_events_total", type="created")] == 0


def test_process_metrics_are_exported_by_default() -> None:
    samples = scrape(TicketingMetrics())
    assert key("process_cpu_seconds_total") in samples
    assert any(name == "python_info" for name, _ in samples)


REQUEST = CheckoutRequest(
    reservation_id="r-1",
    event_id="e-1",
    tier_id="vip",
    order_name="Launch - VIP",
    amount=30000,
    currency_code="KRW",
    provider="portone",
    user_id="u-1",
    customer_name=None,
    customer_email=None,
    success_url="https://moim.example/ok",
    cancel_url="https://moim.example/cancel",
    callback_url="https://shim.example/cb",
    expire_time=datetime(2030, 1, 1, tzinfo=UTC),
)


class ScriptedGateway(FakeCheckouts):
    """Answers each checkout with the next scripted checkout or exception."""

    def __init__(self, *answers: Checkout | Exception) -> None:
        super().__init__()
        self._answers: Iterator[Checkout | Exception] = iter(answers)

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        answer = next(self._answers)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_payment_service_calls_are_timed_by_result_and_failures_counted_by_kind(
    metrics: TicketingMetrics,
) -> None:
    checkout = Checkout("chk-1", "https://pay.example/chk-1", "requires_payment")
    gateway = ObservedPaymentService(
        ScriptedGateway(
            checkout,
            PaymentServiceUnreachable("timeout"),
            PaymentServiceRefused("400"),
            KeyError("bug"),
        ),
        metrics,
    )
    assert await gateway.create_checkout(REQUEST) == checkout
    for expected in (PaymentServiceUnreachable, PaymentServiceRefused, KeyError):
        with pytest.raises(expected):
            await gateway.create_checkout(REQUEST)
    value = metrics.registry.get_sample_value
    call = {"call": "create_checkout"}
    for result in ("ok", "unavailable", "refused", "error"):
        labels = call | {"result": result}
        assert value("ticketing_payment_service_duration_seconds_count", labels) == 1
    for kind in ("unavailable", "refused", "error"):
        assert value("ticketing_payment_service_failures_total", call | {"kind": kind}) == 1


def test_refused_webhook_signatures_are_counted_by_reason(metrics: TicketingMetrics) -> None:
    verifier = MeteredVerifier(
        WebhookVerifier(moim_hmac=MoimHmacVerifier(["secret"]), standard_webhooks=None), metrics
    )
    body = b'{"type":"ticket_payment.paid"}'
    good = sign_moim_hmac("secret", body)
    attempts = [
        {"X-Ticket-Payment-Signature": good},
        {"X-Ticket-Payment-Signature": "0" * 64},
        {"X-Ticket-Payment-Signature": "0" * 64},
        {"X-Ticket-Payment-Signature": "nope"},
        {},
        {"webhook-signature": "v1,AAAA"},
    ]
    for headers in attempts[1:]:
        with pytest.raises(SignatureRejected):
            verifier.verify(body, headers)
    assert verifier.verify(body, attempts[0]).scheme == "moim_hmac"
    value = metrics.registry.get_sample_value
    expected = {
        "bad_signature": 2,
        "malformed_header": 1,
        "missing_signature": 1,
        "scheme_disabled": 1,
    }
    for reason, count in expected.items():
        assert value("ticketing_webhook_verification_failures_total", {"reason": reason}) == count
