"""Keeps secrets, tokens, card data and request bodies out of every log record.

Two nets, because neither alone is enough: fields are masked by *name* (an `extra=` key or a
mapping argument called `authorization`, `raw_event`, ...), and the rendered message is masked by
*shape* (`Bearer …`, `whsec_…`, `Token: …`, a URL's password, a 13-19 digit card number), which
catches a secret interpolated into text by a caller who never meant to log it. Bytes are never
logged, only their length.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

# Any key containing one of these (case-insensitive, `-` read as `_`) is masked.
SENSITIVE_KEY_PARTS = (
    "authorization",
    "token",
    "secret",
    "password",
    "signature",
    "cookie",
    "api_key",
    "apikey",
    "card",
    "cvc",
    "cvv",
    "raw_event",
    "body",
    "payload",
)

_NAME_WORDS = ("secret", "token", "password", "signature", "authorization", "api_key", "apikey")
_NAMES = "|".join(_NAME_WORDS)
# Names that end a header's: those, and a cookie's, but not `signature`, whose `signature:
# bad_signature` is the reason word the webhook app logs (a signature is one message's, not a key).
_HEADER_WORDS = (*(w for w in _NAME_WORDS if w != "signature"), "api-key", "cookie")
_HEADERS = "|".join(_HEADER_WORDS)
# The schemes of IANA's HTTP Authentication Scheme Registry, and `Token`.
_AUTH_SCHEMES = (
    "(?:basic|bearer|digest|negotiate|ntlm|hoba|mutual|vapid|privatetoken|token"
    "|scram-sha-1|scram-sha-256|aws4-hmac-sha256|concealed|dpop|gnap)"
)

# Each pattern follows the words (in lower case) it cannot match without, and runs only on text
# that holds one: looking for a few words costs a UUID or a plain line far less than the
# case-insensitive alternations would, tried at each of its characters.
_PATTERNS = (
    # `Bearer <token>` in any case, as in an echoed `authorization` header. A token may hold
    # any visible ASCII (config's header_safe): everything up to a space or a quote goes.
    (("bearer",), re.compile(r"(?i)\b(bearer)\s+[^\s\"']+"), r"\1 " + REDACTED),
    # Standard Webhooks secrets and signatures.
    (("whsec_",), re.compile(r"whsec_[A-Za-z0-9+/=]+"), "whsec_" + REDACTED),
    (("v1,",), re.compile(r"\bv1,[A-Za-z0-9+/=]{16,}"), "v1," + REDACTED),
    # `secret=…` or `password = …` in text, and `"token": "…"` in an echoed mapping or JSON.
    # (Matching the name's start too cost 45 us on a UUID, for nothing.) The rest of a name is
    # bounded: unbounded, 16 KB of `tokentoken…` (a request path the shim logs) took 0.9 s.
    (
        _NAME_WORDS,
        re.compile(rf"(?i)((?:{_NAMES})[\w-]{{0,64}}[ \t]*=[ \t]*)[^\s\"',;&}}]+"),
        r"\1" + REDACTED,
    ),
    (
        _NAME_WORDS,
        re.compile(
            rf"(?i)([\"'][\w-]{{0,64}}(?:{_NAMES})[\w-]{{0,64}}[\"']\s*:\s*[\"']?)[^\"',}}]+"
        ),
        r"\1" + REDACTED,
    ),
    # A header as written on a line (`X-Api-Key: …`, `Authorization: Basic …`, `Cookie: a=1;
    # b=2`): the name ends right before the colon, and a space follows it, so a `token:refresh`
    # path or `token_type: bearer` stays. It starts a word, or follows a credential's usual
    # prefixes (`X-Auth-Token`, `access_token`): the payment service's `invalid_token: expired`
    # is a reason, not a secret. A scheme HTTP registers is kept, the credential after it goes.
    (
        _HEADER_WORDS,
        re.compile(
            r"(?i)((?<![\w-])(?:(?:x|proxy|access|refresh|auth|client|id|api|session)[_-])*"
            rf"(?:{_HEADERS})[ \t]*:[ \t]+(?:{_AUTH_SCHEMES}[ \t]+)?)"
            r"[^\s\"',;&}]+(?:;[ \t]*[^\s\"',;&}=]+=[^\s\"',;&}]*)*"
        ),
        r"\1" + REDACTED,
    ),
    # The password in a URL (`postgresql://user:…@db/app`, as a DATABASE_URL in an error): up
    # to the last `@` before the host, since a password written unescaped may hold one too; not
    # past a quote, so a URL with a port in a JSON text is not joined to a later `@`.
    (("://",), re.compile(r"(://[^\s:/?#@\"'<>]*:)[^\s/?#\"'<>]+(?=@)"), r"\1" + REDACTED),
)
# Card numbers: 13 to 19 digits, grouped by up to two spaces or dashes, a word of their own;
# masked when Luhn-valid, so that most long ids and millisecond timestamps stay readable. Digits
# inside a word (a uuid, `pay_…`) or grouped by dots (a timestamp, IP addresses) are not taken:
# about 10 % of those are Luhn-valid, and masking them cost ids and readable lines.
_CARD_NUMBER = re.compile(r"\b\d(?:[ -]{0,2}\d){12,18}\b")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
STANDARD_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def is_sensitive_key(key: object) -> bool:
    """Whether a field named `key` must never be logged."""
    name = str(key).lower().replace("-", "_")
    return any(part in name for part in SENSITIVE_KEY_PARTS)


def redact_text(text: str) -> str:
    """Mask what looks like a token, a signing secret or a card number inside free text."""
    lowered = text.lower()
    for words, pattern, replacement in _PATTERNS:
        if any(word in lowered for word in words):
            text = pattern.sub(replacement, text)
    return _CARD_NUMBER.sub(_mask_card_number, text)


def _mask_card_number(match: re.Match[str]) -> str:
    digits = [int(c) for c in match.group() if c.isdigit()]
    # Luhn: double every second digit from the right; a card number's sum is a multiple of 10.
    total = sum(
        d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(reversed(digits))
    )
    return REDACTED if total % 10 == 0 else match.group()


def redact_value(value: object, depth: int = 0) -> object:
    """A loggable copy of `value`: sensitive keys masked, bytes reduced to their length."""
    if depth > 4:
        return "[…]"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if is_sensitive_key(k) else redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item, depth + 1) for item in value]
    return value


# `extra={SAFE_RECORD_FLAG: True}` marks a record whose every part the service produced itself.
# Private (a leading underscore), so the formatters leave it out of the line.
SAFE_RECORD_FLAG = "_composed_by_service"


class RedactionFilter(logging.Filter):
    """Rewrites each record in place so that no handler after it can see a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask `extra=` fields by name, then the rendered message by shape; never drops."""
        if vars(record).get(SAFE_RECORD_FLAG) is True:
            # Built only from values the service made itself (see request_logging): scanning
            # the per-call line cost about 7 % of the server's CPU under load.
            return True
        for key in list(vars(record)):
            if key in STANDARD_RECORD_ATTRIBUTES:
                continue
            value = getattr(record, key)
            setattr(record, key, REDACTED if is_sensitive_key(key) else redact_value(value))
        record.msg = redact_text(_rendered(record))
        record.args = None
        return True


def _rendered(record: logging.LogRecord) -> str:
    """The message with its arguments, bytes and sensitive mapping keys masked first."""
    args: Any = record.args
    if isinstance(args, Mapping):
        args = redact_value(args)
    elif isinstance(args, tuple):
        args = tuple(redact_value(arg) for arg in args)
    try:
        return str(record.msg) % args if args else str(record.msg)
    except (TypeError, ValueError):  # a malformed call: keep the template, not the arguments
        return str(record.msg)
