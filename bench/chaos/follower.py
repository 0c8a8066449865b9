"""A feed consumer through the chaos run, as the Moim backend follows the feed.

It watches WatchRegistrationEvents from the start, and after a stream fails (a killed replica,
a stopping one, Postgres away) it opens the next on the other replica, after the last sequence
it got; it counts how its streams ended. It keeps
every sequence it was sent and drops none, so what it kept must be exactly 1..N: an event no
watcher was handed, or one sent twice, shows there.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from bench.chaos.clients import CHANNEL_OPTIONS
from bench.chaos.invariants import Verdict
from bench.phases import reason_of

RECONNECT_SECONDS = (0.1, 0.5)
# Once the run has settled, the follower has this long to receive the feed's last event.
CATCH_UP_SECONDS = 30.0


class FeedFollower:
    """Follows the feed across the replicas while `following`; `verdict` judges what it got."""

    def __init__(self, ports: list[int], rng: random.Random) -> None:
        self._targets = [f"127.0.0.1:{port}" for port in ports]
        self._rng = rng
        self.sequences: list[int] = []
        self.streams = 0
        # How the streams ended, by reason (SERVER_STOPPING: a replica's graceful stop).
        self.endings: Counter[str] = Counter()
        self._received = asyncio.Event()

    @asynccontextmanager
    async def following(self) -> AsyncIterator[None]:
        """Follow the feed while the block runs."""
        task = asyncio.create_task(self._follow())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _follow(self) -> None:
        """Watch, and watch again on the other replica after each failed stream."""
        channels = [grpc.aio.insecure_channel(t, options=CHANNEL_OPTIONS) for t in self._targets]
        try:
            for channel in itertools.cycle(channels):
                self.streams += 1
                after = self.sequences[-1] if self.sequences else 0
                request = pb.WatchRegistrationEventsRequest(after_sequence=after)
                stub = pb_grpc.TicketingServiceStub(channel)
                try:
                    async for answer in stub.WatchRegistrationEvents(request):
                        self.sequences.append(answer.event.sequence)
                        self._received.set()
                except grpc.aio.AioRpcError as error:
                    # The next stream, on the other replica, resumes after the last one.
                    self.endings[reason_of(error)] += 1
                await asyncio.sleep(self._rng.uniform(*RECONNECT_SECONDS))
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))

    async def verdict(self, last: int) -> Verdict:
        """Whether it got 1..`last`, each once and in order (waiting, bounded, to get there)."""
        try:
            async with asyncio.timeout(CATCH_UP_SECONDS):
                while not self.sequences or self.sequences[-1] < last:
                    self._received.clear()
                    await self._received.wait()
        except TimeoutError:
            pass
        got, expected = self.sequences, list(range(1, last + 1))
        endings = ", ".join(f"{n} {reason}" for reason, n in self.endings.most_common())
        seen = f"{len(got)} events over {self.streams} streams (ended: {endings or 'none'})"
        if got != expected:
            missing = sorted(set(expected) - set(got))
            twice = sorted(n for n, times in Counter(got).items() if times > 1)
            disorder = ", out of order" if got != sorted(got) else ""
            seen += f"; of 1..{last}, missing {missing[:5]}, twice {twice[:5]}{disorder}"
        name = "a consumer following the feed through the faults got each event once, in order"
        return Verdict(name, got == expected, seen)
