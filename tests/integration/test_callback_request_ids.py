"""One request id follows a callback from the real shim's line to the real server's lines.

The runbook (docs/operations.md, "Read the logs") finds a callback's lines by grepping the JSON
lines for `"request_id": "<delivery id>"`; these tests grep the same way.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.callbacks import (
    encode,
    hmac_signed,
    hold_for_payment,
    paid_event,
    post,
    running_shim,
    shim_config,
    standard_signed,
)
from ticketing_service.bootstrap import Service
from ticketing_service.config import Config
from ticketing_service.entrypoints.observability.interceptor import ObservingInterceptor
from ticketing_service.entrypoints.serving import served

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

CALLBACK_LINE = ("ticketing_service.webhook", "POST /api/ticket-payment-callbacks 200")


@dataclass(frozen=True)
class Deployed:
    """The shim and a client of the server it forwards to."""

    shim: httpx.AsyncClient
    stub: Stub


@pytest.fixture
async def deployed(service: Service, config: Config) -> AsyncIterator[Deployed]:
    """The server observed as `serve` observes it (a line per call), and the shim in front."""
    async with (
        served(service, config, "127.0.0.1:0", interceptors=[ObservingInterceptor()]) as server,
        grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel,
        running_shim(shim_config(f"127.0.0.1:{server.port}")) as shim,
    ):
        yield Deployed(shim, pb_grpc.TicketingServiceStub(channel))


def lines_of(logs: io.StringIO, delivery_id: str) -> set[tuple[str, str]]:
    """The logger and message (without its duration) of each line the runbook's grep finds."""
    wanted = f'"request_id": "{delivery_id}"'
    found = [json.loads(line) for line in logs.getvalue().splitlines() if wanted in line]
    return {(line["logger"], line["message"].split(" in ")[0]) for line in found}


async def logged(logs: io.StringIO, delivery_id: str, rpc_line: str) -> set[tuple[str, str]]:
    """What the grep finds once the server's line `rpc_line` is among it: a refused call's status
    can reach the shim before the server writes its line."""
    async with asyncio.timeout(10):
        server_line = ("ticketing_service.rpc", rpc_line)
        while server_line not in lines_of(logs, delivery_id):  # noqa: ASYNC110 - a log line: no event reports it
            await asyncio.sleep(0.01)
    return lines_of(logs, delivery_id)


async def test_the_server_logs_a_paid_callbacks_confirm_payment_under_its_delivery_id(
    deployed: Deployed, captured_logs: io.StringIO
) -> None:
    reservation = await hold_for_payment(deployed.stub)
    signed = standard_signed(encode(paid_event(reservation)), "msg_2a8e4Lk")
    assert (await post(deployed.shim, signed)).status_code == 200

    assert CALLBACK_LINE in await logged(captured_logs, "msg_2a8e4Lk", "ConfirmPayment OK")


async def test_the_server_logs_a_refund_callbacks_refresh_refund_under_its_delivery_id(
    deployed: Deployed, captured_logs: io.StringIO
) -> None:
    # A refund nobody owes: the service answers NOT_FOUND, the shim 200 (nothing to retry).
    event = {"type": "ticket_payment.refunded", "refundId": str(uuid.uuid4())}
    assert (await post(deployed.shim, hmac_signed(encode(event), "evt-9"))).status_code == 200

    assert CALLBACK_LINE in await logged(captured_logs, "evt-9", "RefreshRefund NOT_FOUND")


async def test_a_delivery_id_redaction_would_mask_is_replaced_by_one_fresh_id_on_both_sides(
    deployed: Deployed, captured_logs: io.StringIO
) -> None:
    # The delivery id is not signed: a card number in it must not reach the server's line,
    # which redaction skips. The shim and the server agree on the id that replaces it.
    event = {"type": "ticket_payment.refunded", "refundId": str(uuid.uuid4())}
    signed = hmac_signed(encode(event), "evt-4242-4242-4242-4242")
    answer = await post(deployed.shim, signed)
    assert answer.status_code == 200
    fresh = answer.headers["x-request-id"]
    assert uuid.UUID(fresh).version == 4

    assert CALLBACK_LINE in await logged(captured_logs, fresh, "RefreshRefund NOT_FOUND")
    assert "4242" not in captured_logs.getvalue()
