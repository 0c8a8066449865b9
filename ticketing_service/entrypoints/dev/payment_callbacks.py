"""The payment service fake's signed callbacks, sent as moim-payment sends them (SPEC §6)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass

import httpx

from ticketing_service.entrypoints.webhook.signatures import sign_moim_hmac

# A callback to a shim that does not answer gives up after this long; nothing waits forever.
CALLBACK_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class SentCallback:
    """One callback sent: where, what, and the answer (status None: it never arrived)."""

    url: str
    payload: dict[str, object]
    status_code: int | None
    detail: str


async def deliver(url: str, secret: str, payload: dict[str, object]) -> SentCallback:
    """POST `payload` to `url` signed with `secret`; report the answer, never raise."""
    raw = json.dumps(payload, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Ticket-Payment-Signature": sign_moim_hmac(secret, raw),
        "X-Ticket-Payment-Event-Id": f"fake-{uuid.uuid4()}",
    }
    try:
        async with (
            asyncio.timeout(CALLBACK_TIMEOUT_SECONDS),
            httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS) as client,
        ):
            answer = await client.post(url, content=raw, headers=headers)
    except (TimeoutError, httpx.HTTPError, httpx.InvalidURL) as error:
        return SentCallback(url, payload, None, type(error).__name__)
    return SentCallback(url, payload, answer.status_code, answer.text[:500])
