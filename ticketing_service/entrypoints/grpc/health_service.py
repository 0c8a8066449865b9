"""grpc's health service, except that its watches end at a graceful stop.

Anyone may open one, without a token. As grpc ships it, a health Watch left open held every
stop of the server for its whole grace period. (A reflection stream, open to anyone too, is
ended at the stop by RequestArrival, see arrival.py.)
"""

from __future__ import annotations

import contextlib
from typing import Any

from grpc_health.v1 import health, health_pb2


class _WatchEnded(Exception):
    """A health Watch has told its client NOT_SERVING at a graceful stop: it ends there."""


class HealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # grpc_health is untyped
    """grpc's asyncio health service, except that every Watch ends (OK) once it has sent
    NOT_SERVING at a graceful stop. Left open, it held the stop for its whole grace period."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = False

    async def enter_graceful_shutdown(self) -> None:
        self.stopping = True
        # A watch of a name never set (anyone may open one) would wait for a change that never
        # comes, holding the stop for its whole grace: it is told NOT_SERVING as well.
        for service in list(self._server_watchers):  # grpc's own record of the watched names
            await self.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await super().enter_graceful_shutdown()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        with contextlib.suppress(_WatchEnded):
            await super().Watch(request, _LastWriteAtStop(context, self))


class _LastWriteAtStop:
    """A health Watch's call context, whose NOT_SERVING once the stop began is its last write."""

    def __init__(self, context: Any, servicer: HealthServicer) -> None:
        self._context = context
        self._servicer = servicer

    def __getattr__(self, name: str) -> Any:  # whatever else grpc's Watch asks of its context
        return getattr(self._context, name)

    async def write(self, message: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(message)
        if self._servicer.stopping and message.status == health_pb2.HealthCheckResponse.NOT_SERVING:
            raise _WatchEnded
