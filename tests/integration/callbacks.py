"""Running the webhook shim in tests, and building and signing the callbacks it takes."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx
from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from standardwebhooks import Webhook

from tests.postgres import sql
from ticketing_service.entrypoints.listening import bind_socket
from ticketing_service.entrypoints.webhook.app import CALLBACK_PATH
from ticketing_service.entrypoints.webhook.serve import build_verifier, webhook_server
from ticketing_service.entrypoints.webhook.signatures import sign_moim_hmac
from ticketing_service.webhook_config import WebhookConfig

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

HMAC_SECRET = "moim-callback-secret-never-logged"
WHSEC = "whsec_" + base64.b64encode(b"portone-v2-signing-key-never-logged").decode()
EVENT_ID = "launch-party"
TIER_ID = "vip"
PRICE = 30000
PENDING = reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT


@dataclass(frozen=True)
class Signed:
    """A callback as it goes over the wire."""

    body: bytes
    headers: dict[str, str]


# Running the shim


def shim_config(grpc_target: str, token: str | None = None) -> WebhookConfig:
    return WebhookConfig(
        listen="127.0.0.1:0",
        grpc_target=grpc_target,
        grpc_token=token,
        hmac_secrets=("retired-secret", HMAC_SECRET),
        standard_secrets=(WHSEC,),
        tolerance_seconds=300,
    )


@asynccontextmanager
async def running_shim(config: WebhookConfig) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the shim exactly as `run_webhook` builds it, on a free port; yield a client of it."""
    with bind_socket("127.0.0.1", 0) as sock:
        async with webhook_server(config, build_verifier(config)) as server:
            serving = asyncio.create_task(server.serve(sockets=[sock]))
            try:
                async with asyncio.timeout(10):
                    await server.listening.wait()
                url = f"http://127.0.0.1:{server.port}"
                async with httpx.AsyncClient(base_url=url, timeout=15) as client:
                    yield client
            finally:
                server.should_exit = True
                await serving


@contextmanager
def refused_port() -> Iterator[int]:
    """A port bound but never listening: connections to it are refused, and nobody takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def paid_event(reservation: reservation_pb2.Reservation, **changes: object) -> dict[str, object]:
    """The callback of the reservation's payment (one payment id per reservation: a payment
    pays one reservation, and one reported for a second is a mismatch there)."""
    return {
        "type": "ticket_payment.paid",
        "reservationId": reservation.reservation_id,
        "checkoutId": reservation.checkout_id,
        "paymentId": payment_id_of(reservation),
        "txId": "tx_1",
        "provider": reservation.provider,
        "amount": reservation.amount,
        "currency": reservation.currency_code,
        "paidAt": "2024-05-01T12:30:00+09:00",
    } | changes


def payment_id_of(reservation: reservation_pb2.Reservation) -> str:
    """The id of the payment `paid_event` reports for the reservation."""
    return f"pay_{reservation.reservation_id}"


def hmac_signed(body: bytes, delivery_id: str = "delivery-1", secret: str = HMAC_SECRET) -> Signed:
    signature = sign_moim_hmac(secret, body)
    headers = {"X-Ticket-Payment-Signature": signature, "X-Ticket-Payment-Event-Id": delivery_id}
    return Signed(body, headers | {"Content-Type": "application/json"})


def standard_signed(
    body: bytes, msg_id: str = "msg_1", secret: str = WHSEC, skew_seconds: int = 0
) -> Signed:
    """Signed by the official Standard Webhooks library, as PortOne V2 signs."""
    timestamp = int(time.time()) + skew_seconds
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }
    return Signed(body, headers)


SIGNERS: dict[str, Callable[[bytes, str], Signed]] = {
    "moim_hmac": lambda body, delivery: hmac_signed(body, delivery),
    "standard_webhooks": lambda body, delivery: standard_signed(body, delivery),
}


def encode(event: object) -> bytes:
    return json.dumps(event).encode()


async def post(shim: httpx.AsyncClient, signed: Signed) -> httpx.Response:
    return await shim.post(CALLBACK_PATH, content=signed.body, headers=signed.headers)


async def status_of(stub: Stub, reservation_id: str) -> reservation_pb2.Reservation:
    request = pb.GetReservationRequest(reservation_id=reservation_id)
    return (await stub.GetReservation(request)).reservation


def count_rows(database_url: str, table: str) -> int:
    [(count,)] = sql(database_url, f"SELECT count(*) FROM {table}")  # a constant table name
    return int(count)


async def hold_for_payment(stub: Stub, user_id: str = "user-1") -> reservation_pb2.Reservation:
    """A reservation pending payment, with its checkout opened at the payment service fake."""
    tier = settings_pb2.TierInput(tier_id=TIER_ID, name="VIP", price_amount=PRICE, capacity=5)
    await stub.UpdateTicketingSettings(
        pb.UpdateTicketingSettingsRequest(event_id=EVENT_ID, event_title="Launch", tiers=[tier])
    )
    started = await stub.StartPaidRegistration(
        pb.StartPaidRegistrationRequest(event_id=EVENT_ID, tier_id=TIER_ID, user_id=user_id)
    )
    assert started.reservation.status == PENDING
    return started.reservation
