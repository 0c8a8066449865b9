"""The benchmark's gRPC connections to the server, spread evenly over its workers.

Callers spread over several gRPC channels (one HTTP/2 connection each), as many clients of a
real deployment would, so `serve --workers N` behind SO_REUSEPORT receives connections on
every worker.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc
import psutil
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from bench.phases import CALL_SECONDS


class Stubs:
    """TicketingService stubs over several channels, handed out round-robin."""

    def __init__(self, stubs: Sequence[pb_grpc.TicketingServiceStub]) -> None:
        self._cycle: Iterator[Any] = itertools.cycle(stubs)

    def next(self) -> Any:
        """The stub for the next call (typed Any: the async stub types are stubs-only)."""
        return next(self._cycle)


@asynccontextmanager
async def grpc_stubs(
    port: int, channels: int, workers: Sequence[psutil.Process] = ()
) -> AsyncIterator[Stubs]:
    """`channels` channels to the server, each on a connection of its own.

    With the processes of `serve --workers N` as `workers`, the connections are spread evenly
    over them (see `_balanced`).
    """
    opened: list[grpc.aio.Channel] = []
    try:
        if len(workers) > 1:
            await _balanced(opened, port, channels, workers)
        else:
            opened += [_channel(port) for _ in range(channels)]
        yield Stubs([pb_grpc.TicketingServiceStub(c) for c in opened])
    finally:
        await asyncio.gather(*(c.close() for c in opened))


def _channel(port: int) -> grpc.aio.Channel:
    # A local subchannel pool per channel: otherwise channels to one target share a connection.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def _balanced(
    opened: list[grpc.aio.Channel], port: int, count: int, workers: Sequence[psutil.Process]
) -> None:
    """Open `count` connected channels into `opened`, as evenly over `workers` as they go.

    SO_REUSEPORT gives each new connection to a worker by a hash of its addresses, so 32
    connections over 2 workers split 19:13 or worse in nearly four runs out of ten (splits as
    far as 19:81 of the server's CPU were seen), and the busier worker can set the pace of a
    run. Each new connection is looked up among the workers' sockets (by this process's port
    of it) and closed again if its worker already has its share.
    """
    shares = EvenShares(count, len(workers))
    for _ in range(count * 20):
        if shares.full:
            return
        before = _ports_to(port)
        channel = _channel(port)
        await asyncio.wait_for(channel.channel_ready(), CALL_SECONDS)
        ours = _ports_to(port) - before
        if shares.keep(owner_of(ours, (peer_ports(worker, port) for worker in workers))):
            opened.append(channel)
        else:
            await channel.close()
    raise RuntimeError(f"Could not spread {count} connections over {len(workers)} workers.")


class EvenShares:
    """Which connections to keep: `count` in all, at most an even share per worker."""

    def __init__(self, count: int, workers: int) -> None:
        self._count = count
        self._share = -(-count // workers)  # rounded up
        self.placed = [0] * workers

    @property
    def full(self) -> bool:
        return sum(self.placed) == self._count

    def keep(self, owner: int | None) -> bool:
        """Whether to keep a connection that worker `owner` accepted (None: not found)."""
        if owner is None or self.full or self.placed[owner] >= self._share:
            return False
        self.placed[owner] += 1
        return True


def owner_of(local_ports: set[int], peers: Iterable[set[int]]) -> int | None:
    """The worker (by index) whose peer ports include one of `local_ports`, if any."""
    return next((n for n, ports in enumerate(peers) if local_ports & ports), None)


def _ports_to(port: int) -> set[int]:
    """This process's local ports of its TCP connections to `port`."""
    return {
        c.laddr.port
        for c in psutil.Process().net_connections("tcp")
        if c.raddr and c.raddr.port == port
    }


def peer_ports(worker: psutil.Process, port: int) -> set[int]:
    """The remote ports of the connections `worker` accepted on `port`."""
    return {c.raddr.port for c in worker.net_connections("tcp") if c.raddr and c.laddr.port == port}
