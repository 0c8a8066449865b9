"""The real `webhook` command flooded with forged callbacks writes a bounded log that counts them.

A paid callback in the middle of the flood is still logged in full.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from tests.end_to_end.serving import wait_until
from tests.integration.callbacks import encode, hmac_signed, paid_event, post
from tests.integration.flows import configure_event, hold, paid_tier
from tests.integration.test_webhook_shim import started_shim
from ticketing_service.entrypoints.grpc.server import RunningServer

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

FLOOD = 400
START_SECONDS = 60
LISTENING = re.compile(r"webhook shim listening on 127\.0\.0\.1:(\d+)")


def records(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def suppressed(entries: list[dict[str, object]], logger: str, level: str) -> list[int]:
    """The counts the summaries of `logger`'s suppressed `level` lines give."""
    pattern = re.compile(rf"^Suppressed (\d+) more {level} lines of this kind")
    return [
        int(match[1])
        for entry in entries
        if entry["logger"] == logger and (match := pattern.match(str(entry["message"])))
    ]


async def test_forged_callbacks_are_logged_a_few_a_second_and_every_one_is_counted(
    server: RunningServer, stub: Stub, tmp_path: Path
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=2))
    reservation = await hold(stub, "buyer-1")
    body = encode(paid_event(reservation))
    forged = hmac_signed(body, "forged", secret="not-the-shim-s-secret")
    log = tmp_path / "webhook.log"
    with log.open("w") as stderr:  # a file, not a pipe: a flood unbounded would fill a pipe
        process = started_shim(server.port, stderr=stderr)
    try:
        assert wait_until(lambda: bool(LISTENING.search(log.read_text())), START_SECONDS)
        [port] = LISTENING.findall(log.read_text())
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as shim:
            first, second = ([post(shim, forged) for _ in range(FLOOD // 2)] for _ in "12")
            paid = post(shim, hmac_signed(body, "the-paid-one"))
            answers = await asyncio.gather(*first, paid, *second)
    finally:
        process.terminate()  # a second not yet summarized is at its exit
        assert process.wait(timeout=START_SECONDS) == 0
    assert sorted(a.status_code for a in answers) == [200] + [401] * FLOOD
    entries = records(log)
    refused = [e for e in entries if e.get("http_status") == 401]
    rejected = [e for e in entries if str(e["message"]).startswith("Rejected a payment")]
    answered = suppressed(entries, "ticketing_service.webhook", "INFO")
    signatures = suppressed(entries, "ticketing_service.entrypoints.webhook.app", "WARNING")
    assert answered
    assert signatures
    assert len(refused) + sum(answered) == FLOOD
    assert len(rejected) + sum(signatures) == FLOOD
    assert len(refused) < FLOOD // 2
    paid_lines = [e for e in entries if e.get("request_id") == "the-paid-one"]
    assert [e.get("http_status") for e in paid_lines if "http_status" in e] == [200]
    assert any("Payment callback 'the-paid-one'" in str(e["message"]) for e in paid_lines)
