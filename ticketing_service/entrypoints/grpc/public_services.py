"""grpc's health and reflection services, except that their streams end at a graceful stop.

Anyone may open them, without a token. As grpc ships them, a health Watch or a reflection
stream left open held every stop of the server for its whole grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2


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


class ReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc]  # untyped
    """grpc's asyncio reflection service, except that a stream ends (OK) at a graceful stop,
    having answered each request it had read."""

    def __init__(self, service_names: tuple[str, ...]) -> None:
        super().__init__(service_names)
        self._stopping = asyncio.Event()

    def end_streams(self) -> None:
        """End every stream at its next wait for a request, now and from now on."""
        self._stopping.set()

    async def ServerReflectionInfo(
        self, requests: AsyncIterable[reflection_pb2.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        answers = super().ServerReflectionInfo(_until(self._stopping, requests), context)
        async for answer in answers:
            yield answer


async def _until(stop: asyncio.Event, requests: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """`requests` until they end or `stop` is set, whichever comes first."""
    stopped = asyncio.ensure_future(stop.wait())
    pending = aiter(requests)
    try:
        while not stop.is_set():
            received = asyncio.ensure_future(anext(pending))
            await asyncio.wait((received, stopped), return_when=asyncio.FIRST_COMPLETED)
            if not received.done():
                received.cancel()
                return
            if isinstance(received.exception(), StopAsyncIteration):
                return
            yield received.result()
    finally:
        stopped.cancel()
