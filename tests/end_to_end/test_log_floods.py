"""`serve` flooded with calls without its token writes a bounded log that still counts them."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import grpc
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.end_to_end.test_production_serving import LoggedProcess

TOKEN = "flood-token-never-logged"
FLOOD = 400
SUPPRESSED = re.compile(r"^Suppressed (\d+) more INFO lines of this kind")


async def flood(port: int) -> list[grpc.StatusCode]:
    """FLOOD calls without the token, half of them ConfirmPayments, and one with it halfway."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TicketingServiceStub(channel)

        async def call(method: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
            try:
                if method == "ConfirmPayment":
                    await stub.ConfirmPayment(pb.ConfirmPaymentRequest(), timeout=30)
                else:
                    request = pb.GetTicketingSettingsRequest(event_id="nope")
                    await stub.GetTicketingSettings(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        reads = [call("GetTicketingSettings") for _ in range(FLOOD // 2)]
        token = (("authorization", f"Bearer {TOKEN}"), ("x-request-id", "the-token-holder"))
        confirms = [call("ConfirmPayment") for _ in range(FLOOD // 2)]
        return list(await asyncio.gather(*reads, call("GetTicketingSettings", token), *confirms))


def test_calls_without_the_token_are_logged_a_few_a_second_and_every_one_is_counted(
    tmp_path: Path,
) -> None:
    process = LoggedProcess(
        ["serve", "--listen", "127.0.0.1:0"],
        {
            "TICKETING_DATA_DIR": str(tmp_path),
            "TICKETING_GRPC_TOKEN": TOKEN,
            "TICKET_PAYMENT_SERVICE_URL": "http://127.0.0.1:9",
            "TICKET_PAYMENT_SERVICE_TOKEN": "payment-token",
        },
    )
    try:
        codes = asyncio.run(flood(process.port_after("TicketingService on")))
    finally:
        assert process.stop() == 0  # a second not yet summarized is at its exit
    unauthenticated = grpc.StatusCode.UNAUTHENTICATED
    assert codes.count(unauthenticated) == FLOOD
    assert grpc.StatusCode.NOT_FOUND in codes  # the caller with the token was served
    records = process.records()
    refused = [r for r in records if r.get("grpc_code") == "UNAUTHENTICATED"]
    summaries = [m for r in records if (m := SUPPRESSED.match(str(r["message"])))]
    suppressed = sum(int(m[1]) for m in summaries)
    assert summaries
    # A money RPC's name spares no refusal its bound: one template for every method.
    assert len(refused) + suppressed == FLOOD, json.dumps(records[-5:])
    assert len(refused) < FLOOD // 2  # so the ConfirmPayments' lines too were held back
    # Never sampled: the served call's line.
    assert [r["grpc_code"] for r in records if r.get("request_id") == "the-token-holder"] == [
        "NOT_FOUND"
    ]
