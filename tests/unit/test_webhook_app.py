"""The webhook shim over HTTP: every answer in SPEC section 6, driven through a fake confirmer."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from starlette.applications import Starlette

from ticketing_service.entrypoints.webhook.app import MAX_BODY_BYTES, create_webhook_app
from ticketing_service.entrypoints.webhook.forwarding import (
    ConfirmRejected,
    ConfirmResult,
    PaidCallback,
    RefundCallback,
    RejectionKind,
)
from ticketing_service.entrypoints.webhook.signatures import (
    MoimHmacVerifier,
    StandardWebhookVerifier,
    WebhookVerifier,
    sign_moim_hmac,
)

HMAC_SECRET = "callback-secret-do-not-log"
WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-key-do-not-log").decode()
NOW = 1_700_000_000
URL = "/api/ticket-payment-callbacks"

PAID_EVENT: dict[str, object] = {
    "type": "ticket_payment.paid",
    "reservationId": "8a3c1a6e-0b5e-4c1c-9d1e-3f2b6a7c9d10",
    "checkoutId": "chk_123",
    "paymentId": "pay_456",
    "txId": "tx_789",
    "provider": "portone",
    "amount": 55000,
    "currency": "KRW",
    "paidAt": "2024-05-01T12:30:00+09:00",
}


class FakeConfirmer:
    """Records every payment it is asked to confirm and answers as told."""

    def __init__(self, outcome: str = "CONFIRMED", error: Exception | None = None) -> None:
        self.calls: list[PaidCallback] = []
        self.outcome = outcome
        self.error = error

    async def confirm(self, payment: PaidCallback) -> ConfirmResult:
        self.calls.append(payment)
        if self.error is not None:
            raise self.error
        return ConfirmResult(self.outcome, payment.reservation_id, "registration-1")


class FakeRefunds:
    """Records every refund it is asked to look up and answers as told."""

    def __init__(self, state: str = "SUCCEEDED", error: Exception | None = None) -> None:
        self.calls: list[RefundCallback] = []
        self.state = state
        self.error = error

    async def refresh_refund(self, refund: RefundCallback) -> str:
        self.calls.append(refund)
        if self.error is not None:
            raise self.error
        return self.state


def make_app(
    confirmer: FakeConfirmer, serving: bool | Exception = True, refunds: FakeRefunds | None = None
) -> Starlette:
    verifier = WebhookVerifier(
        moim_hmac=MoimHmacVerifier(["old-secret", HMAC_SECRET]),
        standard_webhooks=StandardWebhookVerifier([WHSEC], now=lambda: NOW),
    )

    async def health() -> bool:
        if isinstance(serving, Exception):
            raise serving
        return serving

    return create_webhook_app(verifier, confirmer, health, refunds or FakeRefunds())


def body_of(event: dict[str, object]) -> bytes:
    return json.dumps(event).encode()


def hmac_headers(body: bytes, secret: str = HMAC_SECRET) -> dict[str, str]:
    signature = sign_moim_hmac(secret, body)
    return {"X-Ticket-Payment-Signature": signature, "X-Ticket-Payment-Event-Id": "delivery-1"}


def standard_headers(body: bytes, msg_id: str = "msg_1", timestamp: int = NOW) -> dict[str, str]:
    signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": Webhook(WHSEC).sign(msg_id, signed_at, body.decode()),
    }


async def post(
    app: Starlette,
    body: bytes | AsyncIterator[bytes],
    headers: Mapping[str, str] | Mapping[bytes, bytes],
) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
        return await client.post(URL, content=body, headers=headers)


async def get(app: Starlette, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shim") as client:
        return await client.get(path)


# 200: confirmed, already confirmed, paid-unfulfilled


@pytest.mark.parametrize("outcome", ["CONFIRMED", "ALREADY_CONFIRMED", "PAID_UNFULFILLED"])
async def test_a_verified_paid_callback_answers_200_with_the_outcome(outcome: str) -> None:
    confirmer = FakeConfirmer(outcome)
    body = body_of(PAID_EVENT)
    response = await post(make_app(confirmer), body, hmac_headers(body))
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "outcome": outcome,
        "reservationId": PAID_EVENT["reservationId"],
        "registrationId": "registration-1",
    }


async def test_the_confirmer_receives_every_field_of_the_paid_callback() -> None:
    confirmer = FakeConfirmer()
    body = body_of(PAID_EVENT)
    await post(make_app(confirmer), body, hmac_headers(body))
    assert confirmer.calls == [
        PaidCallback(
            reservation_id="8a3c1a6e-0b5e-4c1c-9d1e-3f2b6a7c9d10",
            checkout_id="chk_123",
            payment_id="pay_456",
            tx_id="tx_789",
            provider="portone",
            amount=55000,
            currency_code="KRW",
            paid_time=datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=9))),
            delivery_id="delivery-1",
            delivery_scheme="moim_hmac",
            raw_event=body,
        )
    ]
    # The same instant, in UTC: bounds on the year are checked where the gRPC field keeps it.
    assert confirmer.calls[0].paid_time.utcoffset() == timedelta(0)


async def test_the_raw_body_and_standard_webhook_id_pass_through_exactly() -> None:
    confirmer = FakeConfirmer()
    body = ('{ "note": "환불 없음",\n' + json.dumps(PAID_EVENT)[1:] + "  ").encode()
    response = await post(make_app(confirmer), body, standard_headers(body, msg_id="msg_2Kx"))
    assert response.status_code == 200
    assert [(call.raw_event, call.delivery_id) for call in confirmer.calls] == [(body, "msg_2Kx")]


@pytest.mark.parametrize(
    "event",
    [dict(PAID_EVENT, txId=None), {k: v for k, v in PAID_EVENT.items() if k != "txId"}],
    ids=["null", "absent"],
)
async def test_a_missing_or_null_tx_id_is_forwarded_as_empty(event: dict[str, object]) -> None:
    confirmer = FakeConfirmer()
    body = body_of(event)
    response = await post(make_app(confirmer), body, hmac_headers(body))
    assert response.status_code == 200
    assert confirmer.calls[0].tx_id == ""


async def test_a_callback_without_an_event_id_header_forwards_an_empty_delivery_id() -> None:
    confirmer = FakeConfirmer()
    body = body_of(PAID_EVENT)
    headers = hmac_headers(body)
    del headers["X-Ticket-Payment-Event-Id"]
    assert (await post(make_app(confirmer), body, headers)).status_code == 200
    assert confirmer.calls[0].delivery_id == ""


# 200 ignored


@pytest.mark.parametrize("event_type", ["ticket_payment.cancelled", "", "Ticket_Payment.Paid"])
async def test_a_verified_event_of_another_type_is_ignored(event_type: str) -> None:
    confirmer = FakeConfirmer()
    body = body_of({"type": event_type})
    response = await post(make_app(confirmer), body, hmac_headers(body))
    assert (response.status_code, response.json()) == (200, {"ok": True, "ignored": True})
    assert confirmer.calls == []


# 401


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "missing_signature"),
        (hmac_headers(body_of(PAID_EVENT), "wrong-secret"), "bad_signature"),
        (hmac_headers(b"another body"), "bad_signature"),
        (standard_headers(body_of(PAID_EVENT), timestamp=NOW - 301), "stale_timestamp"),
        (standard_headers(body_of(PAID_EVENT)) | {"webhook-timestamp": "soon"}, "malformed_header"),
    ],
)
async def test_an_unverified_callback_answers_401_and_is_not_forwarded(
    headers: dict[str, str], error: str
) -> None:
    confirmer = FakeConfirmer()
    response = await post(make_app(confirmer), body_of(PAID_EVENT), headers)
    assert (response.status_code, response.json()) == (401, {"ok": False, "error": error})
    assert confirmer.calls == []


async def test_an_unsigned_event_of_another_type_is_rejected_not_ignored() -> None:
    response = await post(make_app(FakeConfirmer()), body_of({"type": "other"}), {})
    assert response.status_code == 401


# 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"", "body"),
        (b"\xff\xfe\x00", "body"),
        (b"[1, 2]", "body"),
        (b'"ticket_payment.paid"', "body"),
        (b"[" * 5000 + b"]" * 5000, "body"),
        (b'{"amount": ' + b"9" * 5000 + b"}", "body"),
        (body_of({}), "type"),
        (body_of({"type": 7}), "type"),
        (body_of(dict(PAID_EVENT, reservationId="")), "reservationId"),
        (body_of(dict(PAID_EVENT, checkoutId=None)), "checkoutId"),
        (body_of(dict(PAID_EVENT, paymentId=12)), "paymentId"),
        (body_of(dict(PAID_EVENT, provider="  ")), "provider"),
        (body_of(dict(PAID_EVENT, currency=["KRW"])), "currency"),
        (body_of(dict(PAID_EVENT, txId=5)), "txId"),
        (body_of(dict(PAID_EVENT, amount=True)), "amount"),
        (body_of(dict(PAID_EVENT, amount=-1)), "amount"),
        (body_of(dict(PAID_EVENT, amount=10.0)), "amount"),
        (body_of(dict(PAID_EVENT, amount="55000")), "amount"),
        (body_of(dict(PAID_EVENT, amount=2**63)), "amount"),
        (body_of({k: v for k, v in PAID_EVENT.items() if k != "amount"}), "amount"),
        (body_of(dict(PAID_EVENT, paidAt="2024-05-01T12:30:00")), "paidAt"),
        (body_of(dict(PAID_EVENT, paidAt="2024-05-01")), "paidAt"),
        (body_of(dict(PAID_EVENT, paidAt="20240501T123000Z")), "paidAt"),
        (body_of(dict(PAID_EVENT, paidAt="2024-02-30T12:30:00Z")), "paidAt"),
        (body_of(dict(PAID_EVENT, paidAt="yesterday")), "paidAt"),
        (body_of(dict(PAID_EVENT, paidAt=1714534200)), "paidAt"),
    ],
)
async def test_a_verified_but_malformed_payload_answers_400(body: bytes, field: str) -> None:
    confirmer = FakeConfirmer()
    response = await post(make_app(confirmer), body, hmac_headers(body))
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": "invalid_payload", "field": field}
    assert confirmer.calls == []


async def test_rfc3339_variants_with_lowercase_z_and_fractions_are_accepted() -> None:
    confirmer = FakeConfirmer()
    body = body_of(dict(PAID_EVENT, paidAt="2024-05-01t03:30:00.123456789z"))
    assert (await post(make_app(confirmer), body, hmac_headers(body))).status_code == 200
    assert confirmer.calls[0].paid_time == datetime(2024, 5, 1, 3, 30, 0, 123456, tzinfo=UTC)


# 413


async def test_a_body_over_64_kib_answers_413_and_is_not_forwarded() -> None:
    confirmer = FakeConfirmer()
    body = body_of(PAID_EVENT).ljust(MAX_BODY_BYTES + 1)
    response = await post(make_app(confirmer), body, hmac_headers(body))
    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")
    assert confirmer.calls == []


async def test_a_declared_content_length_over_64_kib_answers_413_before_reading() -> None:
    body = body_of(PAID_EVENT)
    headers = hmac_headers(body) | {"Content-Length": str(MAX_BODY_BYTES + 1)}
    assert (await post(make_app(FakeConfirmer()), body, headers)).status_code == 413


async def test_a_request_framed_both_ways_answers_400_closing_and_is_not_forwarded() -> None:
    confirmer = FakeConfirmer()
    body = body_of(PAID_EVENT)
    headers = hmac_headers(body) | {"Transfer-Encoding": "chunked"}
    response = await post(make_app(confirmer), body, headers)
    assert "content-length" in response.request.headers  # both went out
    assert (response.status_code, response.json()["error"]) == (400, "ambiguous_body_length")
    assert response.headers["connection"] == "close"
    assert confirmer.calls == []


async def test_a_streamed_body_without_length_is_cut_off_past_64_kib() -> None:
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(1000):
            chunks_sent += 1
            yield b" " * 1024

    response = await post(make_app(FakeConfirmer()), chunks(), {})
    assert response.status_code == 413
    assert chunks_sent < 100


async def test_a_body_of_exactly_64_kib_is_parsed_and_forwarded() -> None:
    confirmer = FakeConfirmer()
    body = body_of(PAID_EVENT).ljust(MAX_BODY_BYTES)
    assert len(body) == MAX_BODY_BYTES
    assert (await post(make_app(confirmer), body, hmac_headers(body))).status_code == 200
    assert [call.raw_event for call in confirmer.calls] == [body]


# 404, 409, 400, 503 from the confirmer


@pytest.mark.parametrize(
    ("kind", "reason", "status"),
    [
        ("not_found", "RESERVATION_NOT_FOUND", 404),
        ("failed_precondition", "PAYMENT_MISMATCH", 409),
        ("failed_precondition", "RESERVATION_EXPIRED", 409),
        ("invalid_argument", "INVALID_AMOUNT", 400),
    ],
)
async def test_a_refused_confirmation_maps_to_its_status(
    kind: RejectionKind, reason: str, status: int
) -> None:
    confirmer = FakeConfirmer(error=ConfirmRejected(kind, reason))
    body = body_of(PAID_EVENT)
    response = await post(make_app(confirmer), body, hmac_headers(body))
    assert (response.status_code, response.json()) == (status, {"ok": False, "error": reason})
    assert "retry-after" not in response.headers
    assert len(confirmer.calls) == 1


@pytest.mark.parametrize(
    ("field", "named"), [("payment_id", "paymentId"), ("delivery_id", "delivery id header")]
)
async def test_a_value_the_service_refused_answers_400_naming_it_as_the_callback_does(
    field: str, named: str
) -> None:
    refused = ConfirmRejected("invalid_argument", "INVALID_ARGUMENT", (field, "tx_id"))
    body = body_of(PAID_EVENT)
    response = await post(make_app(FakeConfirmer(error=refused)), body, hmac_headers(body))
    assert (response.status_code, response.json()) == (
        400,
        {"ok": False, "error": "invalid_payload", "field": named},
    )


@pytest.mark.parametrize(
    "error",
    [ConfirmRejected("unavailable", "UNAVAILABLE"), TimeoutError(), RuntimeError("boom")],
)
async def test_an_unavailable_or_failing_backend_answers_503_with_retry_after(
    error: Exception,
) -> None:
    body = body_of(PAID_EVENT)
    response = await post(make_app(FakeConfirmer(error=error)), body, hmac_headers(body))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["ok"] is False


async def test_logs_never_hold_the_secret_or_the_body(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = body_of(dict(PAID_EVENT, paymentId="pay_SENSITIVE_MARKER"))
    app = make_app(FakeConfirmer(error=RuntimeError("backend exploded")))
    await post(app, body, hmac_headers(body))
    await post(app, body, hmac_headers(body, "wrong-secret"))
    await post(app, body_of(dict(PAID_EVENT, amount="SENSITIVE_MARKER")), {})
    assert caplog.records  # the failures above were logged
    assert "SENSITIVE_MARKER" not in caplog.text
    assert HMAC_SECRET not in caplog.text


# /healthz


@pytest.mark.parametrize(
    ("serving", "status", "answer"),
    [
        (True, 200, "SERVING"),
        (False, 503, "NOT_SERVING"),
        (ConnectionError("grpc down"), 503, "NOT_SERVING"),
    ],
)
async def test_healthz_reports_whether_the_grpc_backend_is_serving(
    serving: bool | Exception, status: int, answer: str
) -> None:
    response = await get(make_app(FakeConfirmer(), serving), "/healthz")
    assert (response.status_code, response.json()) == (status, {"status": answer})


# Property: never 500, never forwarded unless verified

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
event_keys = st.sampled_from([*PAID_EVENT, "extra"])
json_bodies = st.builds(
    lambda base, extra: json.dumps(base | extra).encode(),
    st.sampled_from([PAID_EVENT, {"type": "ticket_payment.paid"}, {}]),
    st.dictionaries(event_keys | st.text(max_size=8), json_values, max_size=4),
)
header_names = st.sampled_from(
    [
        "x-ticket-payment-signature",
        "x-ticket-payment-event-id",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-length",
        "content-type",
    ]
)
header_values = st.binary(max_size=80).filter(lambda v: b"\r" not in v and b"\n" not in v)
Signer = Callable[[bytes], dict[str, str]]
SIGNERS: dict[str, Signer] = {
    "hmac": hmac_headers,
    "standard": standard_headers,
    "hmac_wrong_secret": lambda body: hmac_headers(body, "wrong-secret"),
    "standard_stale": lambda body: standard_headers(body, timestamp=NOW - 3600),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=512) | json_bodies,
    headers=st.dictionaries(header_names, header_values, max_size=5),
    signing=st.sampled_from(["none", *SIGNERS]),
)
async def test_no_request_gets_a_500_or_is_forwarded_unverified(
    body: bytes, headers: dict[str, bytes], signing: str
) -> None:
    confirmer = FakeConfirmer()
    raw_headers = {name.encode(): value for name, value in headers.items()}
    if signing != "none":
        try:
            signed = SIGNERS[signing](body)
        except UnicodeDecodeError:  # the Standard Webhooks library signs text only
            signed = {}
        raw_headers |= {name.lower().encode(): value.encode() for name, value in signed.items()}
    response = await post(make_app(confirmer), body, raw_headers)
    assert response.status_code in {200, 400, 401, 413}
    assert response.headers["content-type"] == "application/json"
    if confirmer.calls:
        assert signing in {"hmac", "standard"}
        assert [call.raw_event for call in confirmer.calls] == [body]


# refund callbacks: only the refund's id is read; the service looks the refund up

REFUND_ID = "6f1c8a52-4f7e-4a57-9d0f-4f1f9d3c2b11"
REFUNDED_EVENT = {
    "type": "ticket_payment.refunded",
    "refundId": REFUND_ID.upper(),
    "reservationId": "res-1",
    "checkoutId": "chk-1",
    "amount": 30000,
    "currency": "KRW",
    "refundedAt": "2024-05-02T12:30:00+09:00",
}


@pytest.mark.parametrize("event_type", ["ticket_payment.refunded", "ticket_payment.refund_failed"])
async def test_a_verified_refund_callback_has_the_refund_looked_up(event_type: str) -> None:
    refunds = FakeRefunds("SUCCEEDED")
    body = body_of(dict(REFUNDED_EVENT, type=event_type))

    response = await post(make_app(FakeConfirmer(), refunds=refunds), body, hmac_headers(body))

    assert (response.status_code, response.json()) == (
        200,
        {"ok": True, "refundId": REFUND_ID, "state": "SUCCEEDED"},
    )
    assert [(c.refund_id, c.delivery_id) for c in refunds.calls] == [(REFUND_ID, "delivery-1")]


@pytest.mark.parametrize("refund_id", [None, "", 42, "not-a-uuid"])
async def test_a_refund_callback_without_a_usable_refund_id_answers_400_naming_it(
    refund_id: object,
) -> None:
    refunds = FakeRefunds()
    body = body_of(dict(REFUNDED_EVENT, refundId=refund_id))

    response = await post(make_app(FakeConfirmer(), refunds=refunds), body, hmac_headers(body))

    assert (response.status_code, response.json()["field"]) == (400, "refundId")
    assert refunds.calls == []


async def test_a_refund_callback_for_a_refund_the_service_never_owed_is_ignored() -> None:
    refunds = FakeRefunds(error=ConfirmRejected("not_found", "REFUND_NOT_FOUND"))
    body = body_of(REFUNDED_EVENT)

    response = await post(make_app(FakeConfirmer(), refunds=refunds), body, hmac_headers(body))

    assert (response.status_code, response.json()) == (
        200,
        {"ok": True, "ignored": True, "reason": "REFUND_NOT_FOUND"},
    )


@pytest.mark.parametrize(
    "error",
    [ConfirmRejected("unavailable", "UNAVAILABLE"), TimeoutError(), RuntimeError("boom")],
)
async def test_a_refund_callback_the_service_cannot_take_now_answers_503(error: Exception) -> None:
    body = body_of(REFUNDED_EVENT)
    refunds = FakeRefunds(error=error)

    response = await post(make_app(FakeConfirmer(), refunds=refunds), body, hmac_headers(body))

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


async def test_a_refund_callback_the_service_calls_malformed_answers_400() -> None:
    body = body_of(REFUNDED_EVENT)
    refunds = FakeRefunds(error=ConfirmRejected("invalid_argument", "INVALID_ARGUMENT"))

    response = await post(make_app(FakeConfirmer(), refunds=refunds), body, hmac_headers(body))

    assert (response.status_code, response.json()) == (
        400,
        {"ok": False, "error": "INVALID_ARGUMENT"},
    )


async def test_an_unsigned_refund_callback_is_rejected_and_never_looked_up() -> None:
    refunds = FakeRefunds()
    body = body_of(REFUNDED_EVENT)

    response = await post(make_app(FakeConfirmer(), refunds=refunds), body, {})

    assert response.status_code == 401
    assert refunds.calls == []
