"""How the chaos run's clients behave: as real ones would, retrying what is safe to retry.

A gRPC call that fails UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED is sent again after a
growing, jittered back-off, to the other replica first; a callback the shim answered 5xx (or
never answered) is sent again the same way, as a webhook sender does. Every attempt is bounded,
and so is the whole of one call's retries.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from bench.phases import reason_of
from ticketing_service.entrypoints.dev.payment_state import PaymentServiceState

T = TypeVar("T")
ATTEMPT_SECONDS = 5.0
RETRY_SECONDS = 60.0
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 2.0
RETRIED = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)
# A restarted replica is back within seconds: reconnect soon rather than after grpc's default
# back-off, which grows to two minutes.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Refused(Exception):
    """The service answered with an error that a retry would not change (its reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GaveUp(Exception):
    """Every retry within the bound failed."""


@dataclass
class Tally:
    """What the clients sent and were answered, attempt by attempt."""

    calls: Counter[str] = field(default_factory=Counter)
    callbacks: Counter[str] = field(default_factory=Counter)
    stories: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)


class Backoff:
    """Growing, jittered waits between attempts, within an overall bound."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._next = FIRST_BACKOFF_SECONDS
        self._deadline = asyncio.get_running_loop().time() + RETRY_SECONDS

    async def wait(self) -> None:
        """Wait before the next attempt; GaveUp once the bound is past."""
        if asyncio.get_running_loop().time() + self._next > self._deadline:
            raise GaveUp
        await asyncio.sleep(self._rng.uniform(self._next / 2, self._next))
        self._next = min(2 * self._next, MAX_BACKOFF_SECONDS)


class Replicas:
    """Stubs for each replica; each attempt goes to the next one in turn."""

    def __init__(self, stubs: list[Any], tally: Tally, rng: random.Random) -> None:
        self._stubs = stubs
        self._turn = 0
        self._tally = tally
        self._rng = rng

    async def call(self, method: str, request: Any) -> Any:
        """Call `method` until it answers, retrying what is safe to retry; Refused or GaveUp."""
        backoff = Backoff(self._rng)
        while True:
            self._turn += 1
            stub = self._stubs[self._turn % len(self._stubs)]
            try:
                answer = await getattr(stub, method)(request, timeout=ATTEMPT_SECONDS)
            except grpc.aio.AioRpcError as error:
                reason = reason_of(error)
                self._tally.calls[f"{method} {reason}"] += 1
                if error.code() not in RETRIED:
                    raise Refused(reason) from None
                await backoff.wait()
                continue
            self._tally.calls[f"{method} OK"] += 1
            return answer


@asynccontextmanager
async def replica_stubs(
    ports: list[int], tally: Tally, rng: random.Random
) -> AsyncIterator[Replicas]:
    """A channel to each replica, closed afterwards."""
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) for port in ports
    ]
    try:
        yield Replicas([pb_grpc.TicketingServiceStub(c) for c in channels], tally, rng)
    finally:
        await asyncio.gather(*(c.close() for c in channels))


async def send_callback(
    state: PaymentServiceState,
    url: str,
    payload: dict[str, object],
    tally: Tally,
    rng: random.Random,
) -> str:
    """Send a signed callback (the fake's own sender and signer) until the shim takes it;
    the outcome it answered. Refused on a 4xx, GaveUp when the bound is past."""
    backoff = Backoff(rng)
    while True:
        sent = await state.send_callback(url, payload)
        tally.callbacks[str(sent.status_code or sent.detail)] += 1
        if sent.status_code == 200:
            return str(json.loads(sent.detail).get("outcome", "ignored"))
        if sent.status_code is not None and sent.status_code < 500 and sent.status_code != 429:
            raise Refused(f"HTTP {sent.status_code} {sent.detail[:80]}")
        await backoff.wait()
