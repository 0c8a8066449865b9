"""Signature checks for payment callbacks: moim-payment HMAC and Standard Webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol, get_args

from standardwebhooks import Webhook

HMAC_SIGNATURE_HEADER = "x-ticket-payment-signature"
HMAC_EVENT_ID_HEADER = "x-ticket-payment-event-id"
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"

HMAC_SECRETS_SETTING = "TICKET_PAYMENT_CALLBACK_SECRET"
STANDARD_SECRETS_SETTING = "TICKETING_STANDARD_WEBHOOK_SECRETS"

_WHSEC_PREFIX = "whsec_"
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")
# Integer seconds only: float("1e9"), "nan" or non-ASCII digits are not timestamps a sender writes.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")

Scheme = Literal["moim_hmac", "standard_webhooks"]
# Why a signature was refused: the closed set of SignatureRejected's reasons (a metric's labels).
RejectionReason = Literal[
    "missing_signature",
    "missing_header",
    "malformed_header",
    "bad_signature",
    "stale_timestamp",
    "future_timestamp",
    "undecodable_body",
    "scheme_disabled",
]
REJECTION_REASONS: tuple[RejectionReason, ...] = get_args(RejectionReason)


class SignatureRejected(Exception):
    """A callback whose signature did not verify; `reason` is a short machine word for metrics."""

    def __init__(self, reason: RejectionReason) -> None:
        super().__init__(
            f"The callback signature was rejected ({reason}); check the signing secret."
        )
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verified:
    """A callback whose signature verified, with the sender's delivery id ("" when none)."""

    scheme: Scheme
    delivery_id: str


def sign_moim_hmac(secret: str, body: bytes) -> str:
    """moim-payment's signature of a callback: lowercase hex HMAC-SHA256 of the exact raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _require_secret_list(secrets: Sequence[str], setting: str) -> None:
    # A bare str is a Sequence[str] too: it would turn every character into a one-letter secret.
    if isinstance(secrets, str):
        raise TypeError(f"{setting} must be passed as a list of secrets, not a single string.")
    if not secrets or any(not secret for secret in secrets):
        raise ValueError(
            f"{setting} must hold at least one non-empty secret (comma-separated for rotation)."
        )


class MoimHmacVerifier:
    """Checks `X-Ticket-Payment-Signature`: lowercase hex HMAC-SHA256 of the exact raw body."""

    def __init__(self, secrets: Sequence[str]) -> None:
        _require_secret_list(secrets, HMAC_SECRETS_SETTING)
        self._secrets = tuple(secrets)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        """Return the delivery if any configured secret signed `body`; else SignatureRejected."""
        lowered = _lower_keys(headers)
        # Hex is case-insensitive by nature: accepting "ABC…" for "abc…" admits no extra forgery.
        given = lowered.get(HMAC_SIGNATURE_HEADER, "").strip().lower()
        if not given:
            raise SignatureRejected("missing_signature")
        if not _HEX_SHA256.fullmatch(given):
            raise SignatureRejected("malformed_header")
        matched = False
        for secret in self._secrets:  # no early exit: every secret costs the same, match or not
            matched |= hmac.compare_digest(sign_moim_hmac(secret, body), given)
        if not matched:
            raise SignatureRejected("bad_signature")
        return Verified("moim_hmac", lowered.get(HMAC_EVENT_ID_HEADER, "").strip())


def _decode_whsec(secret: str) -> bytes:
    """Decode one `whsec_<base64>` secret; errors name the setting, never the secret."""
    if not secret.startswith(_WHSEC_PREFIX):
        raise ValueError(
            f"{STANDARD_SECRETS_SETTING} holds a secret without the 'whsec_' prefix; "
            "copy the signing secret exactly as the provider shows it."
        )
    encoded = secret.removeprefix(_WHSEC_PREFIX)
    try:
        # Providers sometimes drop the padding; anything else must be strict base64.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        key = b""
    if not key:
        raise ValueError(
            f"{STANDARD_SECRETS_SETTING} holds a secret that is not 'whsec_' followed by "
            "base64; copy the signing secret exactly as the provider shows it."
        )
    return key


def _v1_signatures(header: str) -> list[bytes]:
    """Decode the `v1,<base64>` entries of `webhook-signature`, skipping anything else."""
    signatures = []
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma:
            continue  # other versions (e.g. asymmetric v1a) are not ours to check
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if signature:
            signatures.append(signature)
    return signatures


class StandardWebhookVerifier:
    """Checks Standard Webhooks headers (`webhook-id`, `-timestamp`, `-signature`): PortOne V2."""

    def __init__(
        self,
        secrets: Sequence[str],
        tolerance_seconds: int = 300,
        now: Callable[[], float] = time.time,
    ) -> None:
        _require_secret_list(secrets, STANDARD_SECRETS_SETTING)
        if isinstance(tolerance_seconds, bool) or tolerance_seconds <= 0:
            raise ValueError("The Standard Webhooks timestamp tolerance must be positive seconds.")
        self._webhooks = tuple(Webhook(_decode_whsec(secret)) for secret in secrets)
        self._tolerance = tolerance_seconds
        self._now = now

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        """Return the delivery if a `v1` entry matches a configured secret, else reject."""
        lowered = _lower_keys(headers)
        header = lowered.get(WEBHOOK_SIGNATURE_HEADER, "")
        if not header.strip():
            raise SignatureRejected("missing_signature")
        msg_id = lowered.get(WEBHOOK_ID_HEADER, "")
        raw_timestamp = lowered.get(WEBHOOK_TIMESTAMP_HEADER, "").strip()
        if not msg_id or not raw_timestamp:
            raise SignatureRejected("missing_header")
        timestamp = self._checked_timestamp(raw_timestamp)
        given = _v1_signatures(header)
        if not given:
            raise SignatureRejected("malformed_header")
        matched = False
        for expected in self._expected_signatures(msg_id, timestamp, body):
            for signature in given:
                matched |= hmac.compare_digest(expected, signature)
        if not matched:
            raise SignatureRejected("bad_signature")
        return Verified("standard_webhooks", msg_id)

    def _checked_timestamp(self, raw: str) -> int:
        # Checked here, not by the library: its tolerance is a fixed five minutes.
        if not _UNIX_SECONDS.fullmatch(raw):
            raise SignatureRejected("malformed_header")
        timestamp = int(raw)
        now = self._now()
        if timestamp < now - self._tolerance:
            raise SignatureRejected("stale_timestamp")
        if timestamp > now + self._tolerance:
            raise SignatureRejected("future_timestamp")
        return timestamp

    def _expected_signatures(self, msg_id: str, timestamp: int, body: bytes) -> list[bytes]:
        # The library signs text; UTF-8 round-trips exactly, so it signs the raw bytes we hold.
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureRejected("undecodable_body") from None
        when = datetime.fromtimestamp(timestamp, tz=UTC)
        try:
            signed = [webhook.sign(msg_id, when, text) for webhook in self._webhooks]
        except ValueError:  # e.g. an id that cannot be encoded
            raise SignatureRejected("malformed_header") from None
        return [base64.b64decode(entry.partition(",")[2]) for entry in signed]


class CallbackVerifier(Protocol):
    """What the webhook app needs of a verifier: WebhookVerifier, or a wrapper around one."""

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        """Return the verified delivery, or raise SignatureRejected with a reason."""
        ...


class WebhookVerifier:
    """Picks the scheme a callback is signed with; a scheme set to None is switched off."""

    def __init__(
        self,
        *,
        moim_hmac: MoimHmacVerifier | None,
        standard_webhooks: StandardWebhookVerifier | None,
    ) -> None:
        if moim_hmac is None and standard_webhooks is None:
            raise ValueError(
                f"No webhook signature scheme is enabled; set {HMAC_SECRETS_SETTING} "
                f"or {STANDARD_SECRETS_SETTING}."
            )
        self._moim_hmac = moim_hmac
        self._standard_webhooks = standard_webhooks

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Verified:
        """Verify with Standard Webhooks when its headers are present, else with the HMAC."""
        lowered = _lower_keys(headers)
        if WEBHOOK_SIGNATURE_HEADER in lowered:
            if self._standard_webhooks is None:
                raise SignatureRejected("scheme_disabled")
            return self._standard_webhooks.verify(body, lowered)
        if HMAC_SIGNATURE_HEADER in lowered:
            if self._moim_hmac is None:
                raise SignatureRejected("scheme_disabled")
            return self._moim_hmac.verify(body, lowered)
        raise SignatureRejected("missing_signature")
