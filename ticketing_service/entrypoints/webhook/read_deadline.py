"""uvicorn's HTTP/1.1 protocol with a deadline on receiving each request, headers and body.

uvicorn has no such deadline. `timeout_keep_alive` runs only between requests, and any byte
received cancels it, so a connection that never sends a request line, or drips its headers or
body a byte at a time, stays open for good (an ASGI middleware cannot help: it runs once the
headers are in). Here each connection must deliver a complete request within the deadline,
counted from when it opened or from the previous answer on it; then it is closed. An app still
waiting for that request's body sees the client disconnect and forwards nothing.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.h11_impl import H11Protocol

from ticketing_service.entrypoints.observability.request_context import serving_no_request

logger = logging.getLogger(__name__)


class ReadDeadlineProtocol(H11Protocol):
    """H11Protocol that closes a connection whose request is not complete in time."""

    # Set on the subclass that with_read_deadline makes.
    read_timeout_seconds: float = 10.0

    _deadline: asyncio.TimerHandle | None = None

    # Narrower than asyncio.Protocol's BaseTransport, exactly as uvicorn's own override is.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the first request's deadline."""
        super().connection_made(transport)
        self._arm()

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

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(self.read_timeout_seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _disarm_once_received(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.more_body and not cycle.response_complete:
            self._disarm()

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.info(
                "closed a connection that sent no complete request within %g s",
                self.read_timeout_seconds,
            )
            self.transport.close()


def with_read_deadline(seconds: float) -> type[ReadDeadlineProtocol]:
    """The protocol class to give uvicorn (`http=`) for a deadline of `seconds`."""
    return type("ReadDeadlineProtocol", (ReadDeadlineProtocol,), {"read_timeout_seconds": seconds})
