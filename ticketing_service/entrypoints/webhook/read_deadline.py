"""uvicorn's HTTP/1.1 protocol with a deadline on receiving each request, headers and body, and
a cap on open connections at which the one that has waited longest for its request gives way.

uvicorn has no such deadline. `timeout_keep_alive` runs only between requests, and any byte
received cancels it, so a connection that never sends a request line, or drips its headers or
body a byte at a time, stays open for good (an ASGI middleware cannot help: it runs once the
headers are in). Here each connection must deliver a complete request within the deadline,
counted from when it opened or from the previous answer on it; then it is closed. An app still
waiting for that request's body sees the client disconnect and forwards nothing.

Within the deadline, idle sockets could still take every file the process may open, and then
it accepted nothing, not even a callback sent at once. So a server holds at most
`max_connections`: a connection that arrives past them closes the one that has waited longest
for its request (itself only when all others are being served). One that sends its request at
once is served however many idle ones keep arriving (uvicorn's `limit_concurrency` turns the
new connection away instead, so idle ones would lock callbacks out).
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from ticketing_service.entrypoints.observability.request_context import serving_no_request
from ticketing_service.entrypoints.observability.sampling import CALLER_NOISE

logger = logging.getLogger(__name__)

# Evictions come in floods: one line per second at most, with how many there were.
EVICTION_REPORT_SECONDS = 1.0


class WaitingConnections:
    """One server's connections that wait for a complete request, longest-waiting first."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        # A dict keeps insertion order: a connection goes to the end each time its clock starts.
        self.connections: dict[ReadDeadlineProtocol, None] = {}
        self.evicted = 0  # since the last report

    def count_eviction(self, loop: asyncio.AbstractEventLoop, port: int | None) -> None:
        """Count a closed connection; the first since the last line has the next one logged."""
        self.evicted += 1
        if self.evicted == 1:
            loop.call_later(EVICTION_REPORT_SECONDS, self._report, port)

    def _report(self, port: int | None) -> None:
        logger.warning(
            "closed %d connection(s) on port %s that had sent no complete request, oldest "
            "first, to keep %d open at most",
            self.evicted,
            port,
            self.max_connections,
        )
        self.evicted = 0


class ReadDeadlineProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request is not complete in time, and the
    longest-waiting such connection when a new one would pass the server's cap."""

    # Set on the subclass that with_read_deadline makes, one per server.
    read_timeout_seconds: float = 10.0
    _waiting: ClassVar[WaitingConnections]

    _deadline: asyncio.TimerHandle | None = None

    # Narrower than asyncio.Protocol's BaseTransport, exactly as uvicorn's own override is.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the first request's deadline; past the cap, close the longest-waiting one."""
        super().connection_made(transport)
        self._arm()
        # uvicorn's set of this server's open connections, this one included.
        if len(self.connections) > self._waiting.max_connections:
            self._evict_longest_waiting()

    def data_received(self, data: bytes) -> None:
        """Parse the bytes; a complete request stops the clock (the app may take its time)."""
        super().data_received(data)
        self._disarm_once_received()

    def on_response_complete(self) -> None:
        """Start the next request's deadline (a pipelined request may already be complete)."""
        # Called from the answered request's task: what it starts here (the next request's
        # task, its reading, the timers) must not inherit that request's id for its lines.
        with serving_no_request():
            self._arm()
            super().on_response_complete()
            self._disarm_once_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock and let uvicorn tell the app the client is gone."""
        self._disarm()
        super().connection_lost(exc)

    # A connection waits for a request exactly while its deadline is armed.
    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.read_timeout_seconds, self._expire)
            self._waiting.connections[self] = None

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
            del self._waiting.connections[self]

    def _disarm_once_received(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            self._disarm()

    def _expire(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            # Any client can open connections that send nothing: sampled.
            logger.info(
                "closed a connection that sent no complete request within %g s",
                self.read_timeout_seconds,
                extra=CALLER_NOISE,
            )
            self.transport.close()

    def _evict_longest_waiting(self) -> None:
        longest = next(iter(self._waiting.connections), None)
        if longest is None:  # every connection, this one too, is being served or closing
            return
        longest._disarm()
        # Not close(): that waits to send what is left to a peer that may never read it, and
        # the file is what is wanted back.
        longest.transport.abort()
        self._waiting.count_eviction(self.loop, self.server[1] if self.server else None)


def with_read_deadline(seconds: float, max_connections: int) -> type[ReadDeadlineProtocol]:
    """The protocol class to give uvicorn (`http=`) for one server: a deadline of `seconds`,
    at most `max_connections` open."""
    attributes = {"read_timeout_seconds": seconds, "_waiting": WaitingConnections(max_connections)}
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), attributes)
