"""A TCP proxy that can go silent: the network dropping without a word.

While silent it accepts connections and takes what is sent, but forwards nothing either way
and closes nothing, as a dead path looks to both ends. `resume()` cuts the connections that
went silent (their peers gave up on them by then) and forwards new ones again. In front of
Postgres it is a network that drops; in front of `serve`, from another loopback address, it
is another host. `silence_open_connections()` is the machine at the far end of the open
connections dying while new connections reach a live one, as behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit


def unix_socket_of(database_url: str) -> str:
    """The Unix socket a `postgresql://…?host=/dir` URL (the embedded server's) points to."""
    parts = urlsplit(database_url)
    [directory] = parse_qs(parts.query)["host"]
    return f"{directory}/.s.PGSQL.{parts.port or 5432}"


Upstream = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def unix_socket(path: str) -> Upstream:
    """Connections to the Unix socket at `path`."""
    return lambda: asyncio.open_unix_connection(path)


def from_another_host(port: int, address: str = "127.0.0.2") -> Upstream:
    """Connections to 127.0.0.1:`port` made from `address`, as another machine's would be."""
    return lambda: asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))


class SilentProxy:
    """Forwards 127.0.0.1:`port` to `upstream` until told to go silent."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._forwarding = asyncio.Event()  # for new connections
        self._forwarding.set()
        self._links: dict[tuple[asyncio.StreamWriter, asyncio.StreamWriter], asyncio.Event] = {}
        self._pumps: set[asyncio.Task[None]] = set()
        self.port = 0

    def go_silent(self) -> None:
        """From now on nothing is forwarded, and nothing is closed."""
        self._forwarding.clear()
        self.silence_open_connections()

    def silence_open_connections(self) -> None:
        """Forward nothing more on the connections open now, and close none of them."""
        for forwarding in self._links.values():
            forwarding.clear()

    def resume(self) -> None:
        """Cut every connection (those that went silent: their peers gave up on them by then);
        forward new connections again."""
        for client, server in self._links:
            client.transport.abort()
            server.transport.abort()
        self._links.clear()
        self._forwarding.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._forwarding.wait()  # a connection made while silent hears nothing
        up_reader, up_writer = await self._upstream()
        forwarding = asyncio.Event()
        forwarding.set()
        self._links[writer, up_writer] = forwarding
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            pump = asyncio.create_task(self._pump(source, sink, forwarding))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, forwarding: asyncio.Event
    ) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await source.read(65536):
                await forwarding.wait()
                sink.write(data)
                await sink.drain()
        sink.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SilentProxy]:
        """Listen on a free loopback port until the block ends."""
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self.resume()
            server.close()
            for pump in list(self._pumps):
                pump.cancel()
            await asyncio.gather(*self._pumps, return_exceptions=True)
