"""How many calls one server process runs at once, counted from when a call's request arrived.

gRPC's own `maximum_concurrent_rpcs` counts a call from its first headers. A client that opens
calls and never sends their request therefore held every place: 300 such calls from one
connection had every other caller, health checks included, refused with RESOURCE_EXHAUSTED for as
long as they stayed open. Here a call takes a place only while its handler runs, once its
request is read; calls still waiting for theirs are bounded per client host (arrival.py).

Only the service's own methods are counted. Health and reflection are open to anyone and cost
no database work: counted, 256 health watches from one client that sent no token had every
other caller refused, and a busy server failed its health checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ticketing_service.domain.errors import ServerBusy
from ticketing_service.entrypoints.grpc.auth import PROTECTED_SERVICE_PREFIX
from ticketing_service.entrypoints.grpc.errors import abort
from ticketing_service.entrypoints.grpc.wrapping import Behaviour, Context, WrappingInterceptor
from ticketing_service.entrypoints.observability.interceptor import note_caller_noise

BUSY = "This server is running as many calls as it takes; retry shortly."


def streams_per_connection(limit: int) -> int:
    """Calls one connection may have open: twice the process's limit, so that a single
    connection still meets the limit's refusal at once rather than waiting in its client."""
    return 2 * limit


class CallLimiter(WrappingInterceptor):
    """At most `limit` calls run at once; past it a call is refused at once, RESOURCE_EXHAUSTED
    with reason SERVER_BUSY."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._running = 0

    def awaited(self, method: str, behaviour: Behaviour) -> Behaviour:
        """Limit a call whose behaviour is awaited."""
        if not method.startswith(PROTECTED_SERVICE_PREFIX):
            return behaviour

        async def limited(request: Any, context: Context) -> Any:
            await self._enter(context)
            try:
                return await behaviour(request, context)
            finally:
                self._running -= 1

        return limited

    def iterated(self, method: str, behaviour: Behaviour) -> Behaviour:
        """Limit a call whose behaviour is an async generator (a watcher holds its place)."""
        if not method.startswith(PROTECTED_SERVICE_PREFIX):
            return behaviour

        async def limited(request: Any, context: Context) -> AsyncIterator[Any]:
            await self._enter(context)
            try:
                async for message in behaviour(request, context):
                    yield message
            finally:
                self._running -= 1

        return limited

    async def _enter(self, context: Context) -> None:
        if self._running >= self._limit:
            note_caller_noise()  # callers decide how often they are refused: sampled
            await abort(context, ServerBusy(BUSY))
        self._running += 1
