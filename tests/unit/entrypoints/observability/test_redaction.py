"""No log record can carry a secret, a token, card data or a body, whatever the caller passed."""

from __future__ import annotations

import logging

import pytest

from ticketing_service.entrypoints.observability.redaction import (
    REDACTED,
    RedactionFilter,
    is_sensitive_key,
    redact_text,
)

SECRET = "s3cr3t-value-never-logged"


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("test", logging.INFO, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def filtered(made: logging.LogRecord) -> logging.LogRecord:
    assert RedactionFilter().filter(made) is True
    return made


@pytest.mark.parametrize(
    "text",
    [
        f"authorization: Bearer {SECRET}",
        f"sent BEARER {SECRET} upstream",
        f"TICKETING_STANDARD_WEBHOOK_SECRETS=whsec_{SECRET}",
        f"callback_secret={SECRET}&x=1",
        f"{{'x-ticket-payment-signature': '{SECRET}'}}",
        f'{{"token": "{SECRET}", "ok": true}}',
        f"rejected Bearer pay!Tok:en#{SECRET}",
    ],
)
def test_a_token_or_secret_written_into_text_is_masked(text: str) -> None:
    assert SECRET not in redact_text(text)
    assert REDACTED in redact_text(text)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"Token: {SECRET}", f"Token: {REDACTED}"),
        (f"token : {SECRET} sent", f"token : {REDACTED} sent"),
        (f"Authorization: Basic {SECRET}", f"Authorization: Basic {REDACTED}"),
        (f"X-Api-Key: {SECRET}", f"X-Api-Key: {REDACTED}"),
        (f"api-key: {SECRET}", f"api-key: {REDACTED}"),
        (f"Cookie: session={SECRET}; theme={SECRET}", f"Cookie: {REDACTED}"),
        (f"password = {SECRET} then", f"password = {REDACTED} then"),
        (f"X-Auth-Token: {SECRET}", f"X-Auth-Token: {REDACTED}"),
        (f"access_token: {SECRET}", f"access_token: {REDACTED}"),
        (f"Authorization: Negotiate {SECRET}", f"Authorization: Negotiate {REDACTED}"),
        (f"Proxy-Authorization: NTLM {SECRET}", f"Proxy-Authorization: NTLM {REDACTED}"),
    ],
)
def test_a_header_or_a_setting_written_with_spaces_is_masked(text: str, masked: str) -> None:
    assert redact_text(text) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"postgresql://user:{SECRET}@db:5432/app", f"postgresql://user:{REDACTED}@db:5432/app"),
        (
            f"https://user:{SECRET}@pay.example.com/v1",
            f"https://user:{REDACTED}@pay.example.com/v1",
        ),
        # Written unescaped, an `@` in the password: all of it up to the host goes.
        (f"postgres://user:p@{SECRET}@db/app", f"postgres://user:{REDACTED}@db/app"),
    ],
)
def test_the_password_in_a_url_is_masked_and_the_rest_of_it_kept(url: str, masked: str) -> None:
    assert (
        redact_text(f"cannot connect to {url}: refused") == f"cannot connect to {masked}: refused"
    )


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4242  4242 4242 4242",
    ],
)
def test_a_card_number_is_masked(number: str) -> None:
    assert redact_text(f"card {number} declined") == f"card {REDACTED} declined"


def test_a_card_number_after_a_dash_is_masked() -> None:
    assert redact_text("evt-4242-4242-4242-4242") == f"evt-{REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        # Luhn-valid digits inside a word or grouped by dots: an id, a timestamp, addresses.
        "5c427929-2402-4922-ae5d-4242424242424242x",
        "pay_4242424242424242",
        "at 1730813645.758914",
        "241.89.99.0 129.189.135.144",
        # A name and a colon with no space after it (a path), a reason word after `signature`,
        # a name that only starts like a header's.
        "GET https://pay.example.com/v1/token:refresh",
        "signature:bad_signature",
        "signature: bad_signature",
        "token_type: bearer",
        # A URL with a user and no password, a port, an `@` after its host.
        "postgresql://ticketing@db:5432/app http://[::1]:8080/x@y",
        # A URL with a port in JSON, an `@` further on; the payment service's reason for a
        # refusal (`code: message`).
        '{"docs":"https://pay.example:443","contact":"support@pay.example"}',
        "refused (invalid_token: expired); do not resend",
    ],
)
def test_ids_timestamps_addresses_and_names_stay_readable(text: str) -> None:
    assert redact_text(text) == text


def test_a_luhn_valid_run_inside_a_longer_run_of_digits_stays() -> None:
    # 4242424242424242 is Luhn-valid, but here it is part of a 20-digit number.
    assert redact_text("id 42424242424242420000") == "id 42424242424242420000"


def test_long_numbers_that_are_not_card_numbers_stay_readable() -> None:
    text = "sequence 1732624986123 at 1700000000000 on 2026-12-06 07:00:00.123"
    assert redact_text(text) == text


def test_a_signature_rejection_reason_stays_readable() -> None:
    # The webhook app logs this line; the reason word is what an operator needs.
    made = filtered(record("Rejected a payment callback signature: %s", "bad_signature"))
    assert made.getMessage() == "Rejected a payment callback signature: bad_signature"


@pytest.mark.parametrize(
    "key",
    [
        "authorization",
        "token",
        "grpc_token",
        "callback_secret",
        "X-Ticket-Payment-Signature",
        "raw_event",
        "body",
        "card_number",
        "password",
        "cookie",
    ],
)
def test_a_sensitive_extra_field_is_masked_by_its_name(key: str) -> None:
    assert is_sensitive_key(key)
    made = filtered(record("callback", **{key: SECRET}))
    assert getattr(made, key) == REDACTED


def test_harmless_extra_fields_are_kept() -> None:
    made = filtered(record("done", reservation_id="r-1", duration_ms=3.5, grpc_code="OK"))
    kept = (vars(made)["reservation_id"], vars(made)["duration_ms"], vars(made)["grpc_code"])
    assert kept == ("r-1", 3.5, "OK")


def test_bytes_are_logged_as_their_length_only() -> None:
    made = filtered(record("got %s and %r", b'{"secret":"x"}', bytearray(b"abc")))
    assert made.getMessage() == "got <14 bytes> and '<3 bytes>'"


def test_a_mapping_argument_has_its_sensitive_keys_masked() -> None:
    headers = {"authorization": f"Bearer {SECRET}", "content-type": "application/json"}
    made = filtered(record("headers %s", headers))
    assert SECRET not in made.getMessage()
    assert "application/json" in made.getMessage()


def test_nested_extra_values_are_masked_too() -> None:
    made = filtered(record("call", request={"headers": {"Authorization": SECRET}, "id": "d-1"}))
    assert vars(made)["request"] == {"headers": {"Authorization": REDACTED}, "id": "d-1"}


def test_a_malformed_logging_call_keeps_the_template_and_drops_the_arguments() -> None:
    made = filtered(record("two %s %s", SECRET))
    assert made.getMessage() == "two %s %s"


def test_filtering_twice_changes_nothing_more() -> None:
    made = filtered(filtered(record("token=%s done", SECRET)))
    assert made.getMessage() == f"token={REDACTED} done"


def test_a_record_the_service_composed_itself_skips_the_scan_and_others_do_not() -> None:
    from ticketing_service.entrypoints.observability.redaction import (
        SAFE_RECORD_FLAG,
        RedactionFilter,
    )

    def record(flag: bool) -> logging.LogRecord:
        made = logging.LogRecord("t", logging.INFO, __file__, 1, "token=%s", ("hunter2",), None)
        made.__dict__[SAFE_RECORD_FLAG] = flag
        return made

    scanned, trusted = record(False), record(True)
    RedactionFilter().filter(scanned)
    RedactionFilter().filter(trusted)
    assert "hunter2" not in scanned.getMessage()
    assert trusted.getMessage() == "token=hunter2"
