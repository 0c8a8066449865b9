"""HttpPaymentService's refunds against httpx.MockTransport: the wire and every failure class."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
import pytest

from tests.unit.payment_transport import (
    TOKEN,
    Handler,
    Recorder,
    answering,
    client_with,
    error_body,
    raising,
)
from ticketing_service.service_layer.checkouts import (
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.refunds import (
    REFUND_EXCEEDS_CANCELLABLE,
    RefundRefused,
    RefundRequest,
    RefundState,
    RefundStatus,
    UnknownRefund,
)

REQUEST = RefundRequest(
    refund_id="ref-1",
    checkout_id="chk_1",
    payment_id="pay_1",
    reservation_id="res-1",
    amount=38500,
    currency_code="KRW",
    reason="organizer",
)
SUCCEEDED = {"refundId": "ref-1", "status": "succeeded", "refundedAmount": 38500}


async def refund_with(handler: Handler) -> RefundStatus:
    """Run one create_refund through a client whose transport is `handler`."""
    async with client_with(handler) as client:
        return await client.create_refund(REQUEST)


async def follow_with(handler: Handler, refund_id: str = "ref-1") -> RefundStatus:
    """Run one get_refund through a client whose transport is `handler`."""
    async with client_with(handler) as client:
        return await client.get_refund(refund_id)


# --- what goes over the wire ---------------------------------------------------------------------


async def test_a_refund_is_posted_with_the_token_and_the_refund_idempotency_key() -> None:
    recorder = Recorder(201, SUCCEEDED)
    await refund_with(recorder)
    sent = recorder.only_request()
    assert (sent.method, str(sent.url)) == (
        "POST",
        "https://payments.example/api/v1/ticket-refunds",
    )
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["idempotency-key"] == "refund:ref-1"
    assert sent.headers["content-type"] == "application/json"


async def test_the_refund_body_carries_every_field_under_its_spec_name() -> None:
    recorder = Recorder(201, SUCCEEDED)
    await refund_with(recorder)
    assert recorder.only_body() == {
        "refundId": "ref-1",
        "checkoutId": "chk_1",
        "paymentId": "pay_1",
        "reservationId": "res-1",
        "amount": 38500,
        "currency": "KRW",
        "reason": "organizer",
    }


async def test_following_a_refund_gets_its_path_without_a_key() -> None:
    recorder = Recorder(200, SUCCEEDED)
    await follow_with(recorder)
    sent = recorder.only_request()
    assert (sent.method, str(sent.url)) == (
        "GET",
        "https://payments.example/api/v1/ticket-refunds/ref-1",
    )
    assert "idempotency-key" not in sent.headers


# --- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (SUCCEEDED, RefundStatus("ref-1", RefundState.SUCCEEDED, 38500, None)),
        (
            {"refundId": "ref-1", "status": "pending", "refundedAmount": 0},
            RefundStatus("ref-1", RefundState.PENDING, 0, None),
        ),
        (
            {
                "refundId": "ref-1",
                "status": "failed",
                "refundedAmount": 0,
                "failureCode": "card_closed",
            },
            RefundStatus("ref-1", RefundState.FAILED, 0, "card_closed"),
        ),
    ],
    ids=["succeeded", "pending", "failed"],
)
@pytest.mark.parametrize("call", ["create", "get"])
async def test_every_refund_status_reads_as_the_spec_says(
    answer: dict[str, object], expected: RefundStatus, call: str
) -> None:
    recorder = Recorder(200, answer)
    status = await (refund_with(recorder) if call == "create" else follow_with(recorder))
    assert status == expected


@pytest.mark.parametrize(
    ("http_status", "code"),
    [
        (409, REFUND_EXCEEDS_CANCELLABLE),
        (409, "checkout_not_paid"),
        (422, "invalid_request"),
        (404, "refund_not_found"),
    ],
)
@pytest.mark.parametrize("call", ["create", "get"])
async def test_a_refusal_with_a_code_is_refund_refused_carrying_it(
    http_status: int, code: str, call: str
) -> None:
    recorder = Recorder(http_status, error_body(code))
    with pytest.raises(RefundRefused) as refused:
        await (refund_with(recorder) if call == "create" else follow_with(recorder))
    assert refused.value.code == code
    assert isinstance(refused.value, PaymentServiceRefused)
    assert str(http_status) in str(refused.value)


# Tokens may hold any visible ASCII; JSON escapes a `"` and a backslash in an echo of one.
@pytest.mark.parametrize("token", ["pay!Tok:en#SECRETPAY123", 'pay"Tok\\en#SECRETPAY123'])
async def test_the_token_a_refusal_echoes_is_masked_in_everything_taken_from_it(
    token: str,
) -> None:
    refusal = {"code": f"bad_token:{token}", "message": f"rejected Bearer {token} ; key {token}"}
    async with client_with(Recorder(400, refusal), token=token) as client:
        with pytest.raises(RefundRefused) as refused:
            await client.create_refund(REQUEST)

    assert refused.value.code == "bad_token:[REDACTED]"
    assert "rejected Bearer [REDACTED] ; key [REDACTED]" in str(refused.value)


# Encoders escape more than `"` and a backslash: PHP writes a `/` as `\/`, Go a `<` or `>` as
# `\u003c` or `\u003e`, and any character may be a `\u00XX` escape, its hex in either case.
ESCAPING_TOKEN = 'pay/Tok<en>&"\\SECRETPAY123'
ESCAPINGS = {
    "solidus": lambda text: text.replace("/", "\\/"),
    "html-safe": lambda text: text.replace("<", "\\u003c").replace(">", "\\u003E"),
    "every-character": lambda text: text.replace(
        json.dumps(ESCAPING_TOKEN)[1:-1], "".join(f"\\u{ord(c):04X}" for c in ESCAPING_TOKEN)
    ),
}


@pytest.mark.parametrize("escaping", ESCAPINGS)
async def test_the_token_a_refusal_echoes_is_masked_however_its_json_escapes_it(
    escaping: str,
) -> None:
    token = ESCAPING_TOKEN
    refusal = {"code": f"bad_token:{token}", "message": f"rejected Bearer {token} ; key {token}"}
    content = ESCAPINGS[escaping](json.dumps(refusal)).encode()
    assert json.loads(content) == refusal
    async with client_with(answering(400, content), token=token) as client:
        with pytest.raises(RefundRefused) as refused:
            await client.create_refund(REQUEST)

    assert refused.value.code == "bad_token:[REDACTED]"
    assert "rejected Bearer [REDACTED] ; key [REDACTED]" in str(refused.value)


async def test_the_token_a_refusal_echoes_url_encoded_is_masked() -> None:
    # A payment service quoting the form or query string it was sent.
    token = ESCAPING_TOKEN
    refusal = {"code": f"bad_token:{quote(token, safe='')}", "message": "rejected"}
    async with client_with(answering(400, json.dumps(refusal).encode()), token=token) as client:
        with pytest.raises(RefundRefused) as refused:
            await client.create_refund(REQUEST)

    assert refused.value.code == "bad_token:[REDACTED]"


@pytest.mark.parametrize(
    ("code", "kept"),
    [("bad\ncode\x1b[2K\u0000", "badcode[2K"), ("x" * 300, "x" * 128)],
    ids=["control-characters", "long"],
)
async def test_a_refusals_code_is_kept_as_an_operator_can_read_it(code: str, kept: str) -> None:
    # Stored as the refund's failure code and returned to gRPC callers, as a failed answer's is.
    with pytest.raises(RefundRefused) as refused:
        await refund_with(Recorder(409, error_body(code)))
    assert refused.value.code == kept
    assert f"({kept}: " in str(refused.value)


async def test_only_a_read_answered_404_refund_not_found_says_the_refund_was_never_taken() -> None:
    with pytest.raises(UnknownRefund) as unknown:
        await follow_with(Recorder(404, error_body("refund_not_found")))

    assert unknown.value.code == "refund_not_found"


@pytest.mark.parametrize(("http_status", "content"), [(400, b"bad"), (401, b""), (404, b"")])
async def test_a_refusal_without_a_code_is_refused_but_not_a_refund_refusal(
    http_status: int, content: bytes
) -> None:
    with pytest.raises(PaymentServiceRefused) as refused:
        await refund_with(answering(http_status, content))
    assert not isinstance(refused.value, RefundRefused)


@pytest.mark.parametrize("http_status", [500, 502, 503, 429, 408, 425])
@pytest.mark.parametrize("call", ["create", "get"])
async def test_an_outage_or_a_not_now_is_unreachable(http_status: int, call: str) -> None:
    # Even with a code: "rate_limited" is no verdict on the refund.
    recorder = Recorder(http_status, error_body("rate_limited"))
    with pytest.raises(PaymentServiceUnreachable, match=str(http_status)):
        await (refund_with(recorder) if call == "create" else follow_with(recorder))


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout])
async def test_a_transport_failure_is_unreachable(error: type[httpx.TransportError]) -> None:
    with pytest.raises(PaymentServiceUnreachable):
        await refund_with(raising(error))


async def test_a_refund_that_never_answers_cannot_outlast_the_timeout() -> None:
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(201, json=SUCCEEDED)

    async with client_with(never, timeout_seconds=0.1) as client:
        with pytest.raises(PaymentServiceUnreachable):
            await client.create_refund(REQUEST)
        with pytest.raises(PaymentServiceUnreachable):
            await client.get_refund("ref-1")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"<html>", id="not-json"),
        pytest.param(json.dumps({**SUCCEEDED, "refundId": "ref-2"}).encode(), id="another-refund"),
        pytest.param(json.dumps({**SUCCEEDED, "status": "done"}).encode(), id="unknown-status"),
        pytest.param(json.dumps({**SUCCEEDED, "refundedAmount": 1.5}).encode(), id="float"),
        pytest.param(json.dumps({**SUCCEEDED, "refundedAmount": True}).encode(), id="bool"),
        pytest.param(json.dumps({"refundId": "ref-1", "status": "pending"}).encode(), id="no-sum"),
    ],
)
async def test_a_malformed_refund_answer_is_refused(content: bytes) -> None:
    with pytest.raises(PaymentServiceRefused, match="malformed") as refused:
        await refund_with(answering(201, content))
    assert not isinstance(refused.value, RefundRefused)


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("x" * 129, "x" * 128),
        ("card\nclosed\u0000", "cardclosed"),
        (3, None),
        ("\n", None),
    ],
    ids=["long", "control-characters", "numeric", "nothing-printable"],
)
async def test_a_failed_refund_stays_failed_whatever_its_failure_code(
    code: object, kept: str | None
) -> None:
    # A code of 129 characters made the answer malformed: the refund, failed at the payment
    # service, stayed pending here for ever with nobody told.
    failed = {"refundId": "ref-1", "status": "failed", "refundedAmount": 0, "failureCode": code}
    answer = await refund_with(answering(201, json.dumps(failed).encode()))
    assert (answer.status, answer.failure_code) == (RefundState.FAILED, kept)
