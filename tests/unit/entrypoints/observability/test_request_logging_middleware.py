"""The shim's request middleware: a request id per delivery, one line each, counted answers."""

from __future__ import annotations

import io
import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp

from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.observability.request_context import (
    current_request,
    note_reservation,
)
from ticketing_service.entrypoints.observability.request_logging import (
    RequestContextMiddleware,
)
from ticketing_service.entrypoints.observability.sampling import CALLER_NOISE_FLAG
from ticketing_service.entrypoints.webhook.app import create_webhook_app
from ticketing_service.entrypoints.webhook.forwarding import (
    ConfirmResult,
    PaidCallback,
    RefundCallback,
)
from ticketing_service.entrypoints.webhook.signatures import (
    MoimHmacVerifier,
    WebhookVerifier,
    sign_moim_hmac,
)

SECRET = "shim-secret-never-logged"
URL = "/api/ticket-payment-callbacks"
RESERVATION = "8a3c1a6e-0b5e-4c1c-9d1e-3f2b6a7c9d10"
BODY = json.dumps(
    {
        "type": "ticket_payment.paid",
        "reservationId": RESERVATION,
        "checkoutId": "chk_1",
        "paymentId": "pay_1",
        "provider": "portone",
        "amount": 55000,
        "currency": "KRW",
        "paidAt": "2024-05-01T12:30:00+09:00",
        "cardNumber": "4111111111111111",
    }
).encode()


class ContextRecordingConfirmer:
    """Confirms everything and remembers the request id it was called under."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []

    async def confirm(self, payment: PaidCallback) -> ConfirmResult:
        self.request_ids.append(current_request().request_id)
        note_reservation(payment.reservation_id)
        logging.getLogger("ticketing_service.test_confirmer").info("confirming")
        return ConfirmResult("CONFIRMED", payment.reservation_id, "registration-1")


class NoRefunds:
    """These tests send no refund callbacks."""

    async def refresh_refund(self, refund: RefundCallback) -> str:
        raise AssertionError("no refund callback is sent here")


async def serving() -> bool:
    return True


def lines(stream: io.StringIO, logger: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [entry for entry in entries if entry["logger"] == logger]


def shim(confirmer: ContextRecordingConfirmer, metrics: TicketingMetrics | None = None) -> ASGIApp:
    verifier = WebhookVerifier(moim_hmac=MoimHmacVerifier([SECRET]), standard_webhooks=None)
    return RequestContextMiddleware(
        create_webhook_app(verifier, confirmer, serving, NoRefunds()), metrics
    )


def signed(body: bytes, delivery_id: str = "delivery-7") -> dict[str, str]:
    signature = sign_moim_hmac(SECRET, body)
    return {"X-Ticket-Payment-Signature": signature, "X-Ticket-Payment-Event-Id": delivery_id}


async def request(app: ASGIApp, method: str, path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
        return await client.request(method, path, **kwargs)


async def test_a_delivery_is_served_under_its_delivery_id_and_logged_once(
    captured_logs: io.StringIO,
) -> None:
    confirmer = ContextRecordingConfirmer()
    response = await request(shim(confirmer), "POST", URL, content=BODY, headers=signed(BODY))
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "delivery-7"
    assert confirmer.request_ids == ["delivery-7"]
    [line] = lines(captured_logs, "ticketing_service.webhook")
    assert line["message"].startswith(f"POST {URL} 200 in ")
    assert (line["request_id"], line["route"], line["http_status"]) == ("delivery-7", URL, 200)
    assert line["reservation_id"] == RESERVATION


async def test_records_logged_while_serving_carry_the_delivery_id(
    captured_logs: io.StringIO,
) -> None:
    await request(
        shim(ContextRecordingConfirmer()), "POST", URL, content=BODY, headers=signed(BODY)
    )
    [inside] = lines(captured_logs, "ticketing_service.test_confirmer")
    assert (inside["request_id"], inside["route"]) == ("delivery-7", URL)


async def test_neither_the_body_nor_the_signature_nor_the_secret_is_logged(
    captured_logs: io.StringIO,
) -> None:
    headers = signed(BODY)
    await request(shim(ContextRecordingConfirmer()), "POST", URL, content=BODY, headers=headers)
    bad = {**headers, "X-Ticket-Payment-Signature": "0" * 64}
    await request(shim(ContextRecordingConfirmer()), "POST", URL, content=BODY, headers=bad)
    output = captured_logs.getvalue()
    assert output
    for leaked in (SECRET, headers["X-Ticket-Payment-Signature"], "4111111111111111", "pay_1"):
        assert leaked not in output


async def test_a_request_without_a_delivery_id_gets_a_fresh_uuid(
    captured_logs: io.StringIO,
) -> None:
    response = await request(shim(ContextRecordingConfirmer()), "POST", URL, content=b"{}")
    assert response.status_code == 401
    assert uuid.UUID(response.headers["x-request-id"]).version == 4


async def test_health_probes_are_logged_at_debug_only(captured_logs: io.StringIO) -> None:
    response = await request(shim(ContextRecordingConfirmer()), "GET", "/healthz")
    assert response.status_code == 200
    assert lines(captured_logs, "ticketing_service.webhook") == []


async def test_answers_are_counted_by_route_and_status_and_strangers_as_other() -> None:
    metrics = TicketingMetrics(process_collectors=False)
    app = shim(ContextRecordingConfirmer(), metrics)
    await request(app, "POST", URL, content=BODY, headers=signed(BODY))
    await request(app, "POST", URL, content=BODY)
    await request(app, "GET", "/wp-admin/setup.php")
    value = metrics.registry.get_sample_value
    assert value("ticketing_webhook_responses_total", {"route": URL, "status": "200"}) == 1
    assert value("ticketing_webhook_responses_total", {"route": URL, "status": "401"}) == 1
    assert value("ticketing_webhook_responses_total", {"route": "other", "status": "404"}) == 1
    assert value("ticketing_webhook_duration_seconds_count", {"route": URL}) == 2


async def test_only_answers_any_caller_can_provoke_are_marked_as_noise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = shim(ContextRecordingConfirmer())
    caplog.set_level(logging.INFO)
    answers = [
        (await request(app, "POST", URL, content=BODY, headers=signed(BODY))).status_code,
        (await request(app, "POST", URL, content=b"{}", headers=signed(b"{}"))).status_code,
        (await request(app, "GET", URL)).status_code,
        (await request(app, "POST", URL, content=BODY)).status_code,
        (await request(app, "GET", "/wp-admin/setup.php")).status_code,
    ]
    assert answers == [200, 400, 405, 401, 404]
    # The access line by its status, the app's warnings by their template.
    marked = {
        vars(record).get("http_status") or record.msg: vars(record).get(CALLER_NOISE_FLAG, False)
        for record in caplog.records
        if record.name.startswith("ticketing_service.") and "test" not in record.name
    }
    assert marked == {
        200: False,
        "Payment callback %r: %s": False,
        400: False,  # a signed callback's: never sampled
        "Malformed payment callback %r: field %s": False,
        405: False,
        401: True,
        "Rejected a payment callback signature: %s": True,
        404: True,
    }
