"""Signature checks for payment callbacks: the moim-payment HMAC and Standard Webhooks."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Protocol

import pytest
from standardwebhooks import Webhook

from ticketing_service.entrypoints.webhook.signatures import (
    MoimHmacVerifier,
    SignatureRejected,
    StandardWebhookVerifier,
    Verified,
    WebhookVerifier,
    sign_moim_hmac,
)

SPEC_BODY = b'{"type":"ticket_payment.paid","reservationId":"reservation-1"}'
HMAC_SECRET = "secret"
SPEC_SIGNATURE = "cefa120975b3de92e7de589cd6a62f86bbb2b0d13b625ac1f235e4e95c3cdea8"

WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-0001").decode()
OTHER_WHSEC = "whsec_" + base64.b64encode(b"standard-webhooks-test-key-0002").decode()
NOW = 1_700_000_000
MSG_ID = "msg_2Kx"


def hmac_headers(body: bytes, secret: str = HMAC_SECRET, event_id: str = "evt-1") -> dict[str, str]:
    signature = sign_moim_hmac(secret, body)
    return {"X-Ticket-Payment-Signature": signature, "X-Ticket-Payment-Event-Id": event_id}


def standard_headers(
    body: bytes, secret: str = WHSEC, timestamp: int = NOW, msg_id: str = MSG_ID
) -> dict[str, str]:
    signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": Webhook(secret).sign(msg_id, signed_at, body.decode()),
    }


def standard(secrets: list[str] | None = None, tolerance: int = 300) -> StandardWebhookVerifier:
    return StandardWebhookVerifier(secrets or [WHSEC], tolerance_seconds=tolerance, now=lambda: NOW)


class Verifies(Protocol):
    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified: ...


def rejection(verifier: Verifies, body: bytes, headers: dict[str, str]) -> str:
    with pytest.raises(SignatureRejected) as raised:
        verifier.verify(body, headers)
    return raised.value.reason


# moim-payment HMAC


def test_the_signer_produces_the_spec_vector() -> None:
    assert sign_moim_hmac("secret", SPEC_BODY) == SPEC_SIGNATURE


def test_hmac_accepts_the_spec_vector() -> None:
    headers = {"X-Ticket-Payment-Signature": SPEC_SIGNATURE, "X-Ticket-Payment-Event-Id": "e-1"}
    assert MoimHmacVerifier(["secret"]).verify(SPEC_BODY, headers) == Verified("moim_hmac", "e-1")


def test_hmac_delivery_id_is_empty_when_the_event_id_header_is_absent() -> None:
    headers = {"X-Ticket-Payment-Signature": SPEC_SIGNATURE}
    assert MoimHmacVerifier(["secret"]).verify(SPEC_BODY, headers).delivery_id == ""


def test_hmac_accepts_a_body_signed_with_the_second_rotated_secret() -> None:
    verifier = MoimHmacVerifier(["new-secret", "secret"])
    assert verifier.verify(SPEC_BODY, hmac_headers(SPEC_BODY, "secret")).scheme == "moim_hmac"


def test_hmac_rejects_a_body_signed_with_another_secret() -> None:
    verifier = MoimHmacVerifier(["secret"])
    assert rejection(verifier, SPEC_BODY, hmac_headers(SPEC_BODY, "guess")) == "bad_signature"


def test_hmac_rejects_a_tampered_body() -> None:
    tampered = SPEC_BODY.replace(b"reservation-1", b"reservation-2")
    headers = hmac_headers(SPEC_BODY)
    assert rejection(MoimHmacVerifier(["secret"]), tampered, headers) == "bad_signature"


def test_hmac_reads_header_names_case_insensitively() -> None:
    headers = {"x-ticket-payment-signature": SPEC_SIGNATURE, "X-TICKET-PAYMENT-EVENT-ID": "e-9"}
    assert MoimHmacVerifier(["secret"]).verify(SPEC_BODY, headers).delivery_id == "e-9"


def test_hmac_accepts_uppercase_hex_and_surrounding_whitespace() -> None:
    headers = {"X-Ticket-Payment-Signature": f"  {SPEC_SIGNATURE.upper()}\t"}
    assert MoimHmacVerifier(["secret"]).verify(SPEC_BODY, headers).scheme == "moim_hmac"


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (SPEC_SIGNATURE[:-1], "malformed_header"),
        (SPEC_SIGNATURE[:32], "malformed_header"),
        (SPEC_SIGNATURE + "0", "malformed_header"),
        ("z" * 64, "malformed_header"),
        ("sha256=" + SPEC_SIGNATURE, "malformed_header"),
        ("", "missing_signature"),
        ("   ", "missing_signature"),
    ],
)
def test_hmac_rejects_a_malformed_signature(signature: str, reason: str) -> None:
    headers = {"X-Ticket-Payment-Signature": signature}
    assert rejection(MoimHmacVerifier(["secret"]), SPEC_BODY, headers) == reason


def test_hmac_rejects_a_request_without_the_signature_header() -> None:
    assert rejection(MoimHmacVerifier(["secret"]), SPEC_BODY, {}) == "missing_signature"


@pytest.mark.parametrize("secrets", [[], [""], ["secret", ""]])
def test_hmac_refuses_to_start_without_usable_secrets(secrets: list[str]) -> None:
    with pytest.raises(ValueError, match="TICKET_PAYMENT_CALLBACK_SECRET"):
        MoimHmacVerifier(secrets)


def test_hmac_refuses_a_bare_string_that_would_become_one_letter_secrets() -> None:
    with pytest.raises(TypeError, match="TICKET_PAYMENT_CALLBACK_SECRET"):
        MoimHmacVerifier("secret")


def test_the_rejection_message_never_contains_the_secret() -> None:
    with pytest.raises(SignatureRejected) as raised:
        MoimHmacVerifier(["hunter2-secret"]).verify(SPEC_BODY, hmac_headers(SPEC_BODY, "x"))
    assert "hunter2" not in str(raised.value)


# Standard Webhooks


def test_standard_accepts_a_body_signed_by_the_official_library() -> None:
    body = b'{"type":"ticket_payment.paid","amount":1000}'
    verified = standard().verify(body, standard_headers(body))
    assert verified == Verified("standard_webhooks", MSG_ID)


def test_standard_accepts_a_body_signed_with_the_second_rotated_secret() -> None:
    body = b"{}"
    verified = standard([OTHER_WHSEC, WHSEC]).verify(body, standard_headers(body, WHSEC))
    assert verified.scheme == "standard_webhooks"


def test_standard_accepts_when_one_of_several_entries_matches() -> None:
    body = b"{}"
    headers = standard_headers(body)
    wrong = standard_headers(body, OTHER_WHSEC)["webhook-signature"]
    headers["webhook-signature"] = f"v1 v1, v2,abc {wrong} v1,%%% {headers['webhook-signature']}"
    assert standard().verify(body, headers).delivery_id == MSG_ID


def test_standard_rejects_a_body_signed_with_another_secret() -> None:
    body = b"{}"
    assert rejection(standard(), body, standard_headers(body, OTHER_WHSEC)) == "bad_signature"


def test_standard_rejects_a_tampered_body() -> None:
    headers = standard_headers(b'{"amount":1000}')
    assert rejection(standard(), b'{"amount":1}', headers) == "bad_signature"


def test_standard_rejects_a_signature_replayed_under_another_id() -> None:
    headers = standard_headers(b"{}")
    headers["webhook-id"] = "msg_other"
    assert rejection(standard(), b"{}", headers) == "bad_signature"


def test_standard_accepts_timestamps_exactly_at_the_tolerance() -> None:
    for timestamp in (NOW - 300, NOW + 300):
        headers = standard_headers(b"{}", timestamp=timestamp)
        assert standard().verify(b"{}", headers).scheme == "standard_webhooks"


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [(NOW - 301, "stale_timestamp"), (NOW + 301, "future_timestamp"), (0, "stale_timestamp")],
)
def test_standard_rejects_timestamps_outside_the_tolerance(timestamp: int, reason: str) -> None:
    assert rejection(standard(), b"{}", standard_headers(b"{}", timestamp=timestamp)) == reason


def test_standard_tolerance_is_configurable_beyond_the_library_default() -> None:
    headers = standard_headers(b"{}", timestamp=NOW - 500)
    assert standard(tolerance=600).verify(b"{}", headers).scheme == "standard_webhooks"
    assert rejection(
        standard(tolerance=60), b"{}", standard_headers(b"{}", timestamp=NOW - 61)
    ) == ("stale_timestamp")


@pytest.mark.parametrize(
    "timestamp",
    ["abc", "1.7e9", f"{NOW}.0", "-1", "nan", "\u0661\u0667\u0660\u0660", "9" * 40, f"{NOW}x"],
)
def test_standard_rejects_a_timestamp_that_is_not_integer_seconds(timestamp: str) -> None:
    headers = standard_headers(b"{}") | {"webhook-timestamp": timestamp}
    assert rejection(standard(), b"{}", headers) == "malformed_header"


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("webhook-id", "missing_header"),
        ("webhook-timestamp", "missing_header"),
        ("webhook-signature", "missing_signature"),
    ],
)
def test_standard_rejects_a_request_missing_a_header(missing: str, reason: str) -> None:
    headers = standard_headers(b"{}")
    del headers[missing]
    assert rejection(standard(), b"{}", headers) == reason


@pytest.mark.parametrize(
    "signature",
    ["v1", "v1,", "v2,abc", "v1,%%%", ",", "v1,abc", "v1,YWJj", "v1;abc", "v1,é", "v1,,,", "\t"],
)
def test_standard_rejects_garbage_signature_entries(signature: str) -> None:
    headers = standard_headers(b"{}") | {"webhook-signature": signature}
    with pytest.raises(SignatureRejected) as raised:
        standard().verify(b"{}", headers)
    assert raised.value.reason in {"malformed_header", "bad_signature", "missing_signature"}


def test_standard_rejects_a_body_that_is_not_utf8() -> None:
    headers = standard_headers(b"{}")
    assert rejection(standard(), b"\xff\xfe{}", headers) == "undecodable_body"


@pytest.mark.parametrize(
    "secret", ["not-a-whsec-leak", "whsec_%%%leak", "whsec_bGVhaw=x", "whsec_Qleak", "whsec_é"]
)
def test_standard_refuses_a_malformed_secret_without_echoing_it(secret: str) -> None:
    with pytest.raises(ValueError, match="TICKETING_STANDARD_WEBHOOK_SECRETS") as raised:
        StandardWebhookVerifier([WHSEC, secret])
    assert secret.removeprefix("whsec_") not in str(raised.value)


@pytest.mark.parametrize("secrets", [[], ["whsec_"], ["whsec_===="]])
def test_standard_refuses_to_start_without_a_usable_secret(secrets: list[str]) -> None:
    with pytest.raises(ValueError, match="TICKETING_STANDARD_WEBHOOK_SECRETS"):
        StandardWebhookVerifier(secrets)


def test_standard_accepts_a_secret_whose_base64_padding_was_dropped() -> None:
    unpadded = "whsec_" + base64.b64encode(b"key-of-odd-length").decode().rstrip("=")
    verifier = StandardWebhookVerifier([unpadded], now=lambda: NOW)
    assert verifier.verify(b"{}", standard_headers(b"{}", unpadded)).scheme == "standard_webhooks"


@pytest.mark.parametrize("tolerance", [0, -5])
def test_standard_refuses_a_tolerance_that_is_not_positive(tolerance: int) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        StandardWebhookVerifier([WHSEC], tolerance_seconds=tolerance)


# Both schemes together


def both() -> WebhookVerifier:
    return WebhookVerifier(moim_hmac=MoimHmacVerifier(["secret"]), standard_webhooks=standard())


def test_combined_verifier_uses_standard_webhooks_when_its_signature_header_is_present() -> None:
    headers = standard_headers(SPEC_BODY) | {"X-Ticket-Payment-Signature": "0" * 64}
    assert both().verify(SPEC_BODY, headers).scheme == "standard_webhooks"


def test_combined_verifier_uses_the_hmac_when_only_its_header_is_present() -> None:
    assert both().verify(SPEC_BODY, hmac_headers(SPEC_BODY)) == Verified("moim_hmac", "evt-1")


def test_combined_verifier_rejects_a_request_with_no_signature_at_all() -> None:
    assert rejection(both(), SPEC_BODY, {"webhook-id": "m", "content-type": "x"}) == (
        "missing_signature"
    )


def test_a_switched_off_standard_scheme_rejects_even_a_valid_signature() -> None:
    verifier = WebhookVerifier(moim_hmac=MoimHmacVerifier(["secret"]), standard_webhooks=None)
    headers = standard_headers(SPEC_BODY) | hmac_headers(SPEC_BODY)
    assert rejection(verifier, SPEC_BODY, headers) == "scheme_disabled"


def test_a_switched_off_hmac_scheme_rejects_even_a_valid_signature() -> None:
    verifier = WebhookVerifier(moim_hmac=None, standard_webhooks=standard())
    assert rejection(verifier, SPEC_BODY, hmac_headers(SPEC_BODY)) == "scheme_disabled"


def test_combined_verifier_refuses_to_start_with_both_schemes_off() -> None:
    with pytest.raises(ValueError, match="TICKET_PAYMENT_CALLBACK_SECRET"):
        WebhookVerifier(moim_hmac=None, standard_webhooks=None)
