"""Signed payment callbacks to the webhook shim, as moim-payment sends them (SPEC §6)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from moim.ticketing.v1 import reservation_pb2

from ticketing_service.entrypoints.webhook.signatures import sign_moim_hmac

CALLBACK_PATH = "/api/ticket-payment-callbacks"


class CallbackRefused(Exception):
    """The shim answered a signed callback with something other than 200."""


def callback_body(reservation: reservation_pb2.Reservation, payment_id: str) -> bytes:
    """The payment service's `ticket_payment.paid` callback for a reservation."""
    return json.dumps(
        {
            "type": "ticket_payment.paid",
            "reservationId": reservation.reservation_id,
            "checkoutId": reservation.checkout_id,
            "paymentId": payment_id,
            "txId": f"tx-{payment_id}",
            "provider": "portone",
            "amount": reservation.amount,
            "currency": reservation.currency_code,
            "paidAt": datetime.now(UTC).isoformat(),
        }
    ).encode()


def moim_hmac_headers(secret: str, body: bytes, delivery_id: str) -> dict[str, str]:
    """moim-payment's signature: lowercase hex HMAC-SHA256 of the raw body."""
    signature = sign_moim_hmac(secret, body)
    return {
        "Content-Type": "application/json",
        "X-Ticket-Payment-Signature": signature,
        "X-Ticket-Payment-Event-Id": delivery_id,
    }


class ShimConnections:
    """Keep-alive HTTP/1.1 connections to the shim, one per concurrent caller.

    A minimal client on asyncio streams: a general-purpose one (httpx) spent about 6 ms of CPU
    per callback here, more than the shim and the server together, so the load generator and
    not the service set the pace.
    """

    def __init__(self, port: int) -> None:
        self._port = port
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one request; the status and the body of the answer."""
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        request = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self._port}\r\n"
            f"Content-Length: {len(body)}\r\n{lines}\r\n"
        ).encode() + body
        reader, writer = self._idle.pop() if self._idle else await self._connect()
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status, length = _status_and_length(head)
            answer = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self._idle.append((reader, writer))
        return status, answer

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self._port)

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()

    async def __aenter__(self) -> ShimConnections:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _status_and_length(head: bytes) -> tuple[int, int]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, length


def outcome_of(status: int, answer: bytes) -> str:
    """The outcome of an answered callback; CallbackRefused unless the shim answered 200."""
    if status != 200:
        raise CallbackRefused(f"HTTP {status} {answer[:60]!r}")
    return str(json.loads(answer)["outcome"])


async def post_callback(
    shim: ShimConnections, secret: str, reservation: reservation_pb2.Reservation, n: int
) -> str:
    """Send one signed callback; the outcome the shim answered."""
    payment_id = f"pay-{reservation.reservation_id}"
    body = callback_body(reservation, payment_id)
    headers = moim_hmac_headers(secret, body, f"delivery-{reservation.reservation_id}-{n}")
    return outcome_of(*await shim.post(CALLBACK_PATH, body, headers))
