"""Each call's request is read by the service, so a call that never sends one is bounded.

gRPC runs a unary method's handler only once the request has arrived; until then nothing of the
service runs, and the call lasts as long as its client likes. One client that opened such calls
on 80 connections (27,000 calls, no token needed) took a server from 102 to 681 MB, past a
replica's memory limit, without a line in its log; and a call whose client ended its stream
without a request was never answered at all. Here every method with a single request is served
as a client-streaming one (the same on the wire), whose first step is reading that request:

- a TicketingService call without the bearer token (when the server has one) is refused
  UNAUTHENTICATED at once, from its metadata, which comes with its headers: it is never read
  and holds no place. Without this, a client with no token held up to its host's bound of
  calls, each keeping its connection from ever being idle: 1,000 connections of one call
  each took every connection the server accepts, from every host, for as long as they liked;
- a call's request must arrive within `arrival_seconds` (REQUEST_ARRIVAL_SECONDS) of its
  start, or the call is refused DEADLINE_EXCEEDED, giving its place back: a connection whose
  client holds its requests back then has no call, and is closed once idle (server.py);
- at most `per_address` calls from one client host wait for their request at once; past that
  a call is refused RESOURCE_EXHAUSTED without being read. A request normally comes with its
  call, so only calls that hold theirs back are ever near the bound. It is four connections'
  worth (`waiting_per_address`), so that one connection's stalled calls never lock the rest of
  its host out; by default 2,048 calls, about 40 MB;
- a call whose stream ends without a request is refused INVALID_ARGUMENT;
- a call still waiting for its request when the server begins to stop is refused UNAVAILABLE
  (reason SERVER_STOPPING) at once, and a client stream (reflection's) waiting for its next
  request ends there, as if its client had ended it. Either held the stop for its whole grace
  period;
- a call that comes once the server has begun to stop is refused the same way (CLOSED), and
  gRPC's own stop waits until calls stop coming (`drain`): it ends every call that has come
  but was not yet handed to the service as CANCELLED, which no client retries. Under load that
  was most of the calls in flight (297 of 300 callers at a SIGTERM), each a user's error.

These refusals reach the interceptors inside this one as an Unread request (decoding.py), so
they are logged and counted as any refused call. Put this interceptor first.

A call that stays open holds its place for as long as it is open: a watch (health's, open to
anyone, or the feed's), and a client-streaming call (reflection's, open to anyone too), which
waits for its next request all that time. 17,600 reflection streams that sent nothing had
taken a server from 102 to 467 MB. No other interceptor sees reflection, so a reflection
stream past the bound is refused here directly.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc

from ticketing_service.domain.errors import ServerStopping
from ticketing_service.entrypoints.grpc.auth import UNAUTHENTICATED, BearerToken
from ticketing_service.entrypoints.grpc.decoding import Unread
from ticketing_service.entrypoints.grpc.wrapping import (
    Behaviour,
    Context,
    Handler,
    WrappingInterceptor,
)

NO_REQUEST = Unread(
    grpc.StatusCode.INVALID_ARGUMENT,
    "The call ended without sending its request message.",
    caller_noise=True,
)
TOO_MANY_WAITING = Unread(
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    "Too many calls from this address are open or waiting to send their request.",
    caller_noise=True,
)
_STOPPED = "The server began to stop before the call's request arrived; send the call again."
STOPPING = Unread(grpc.StatusCode.UNAVAILABLE, _STOPPED, ServerStopping(_STOPPED))
_CLOSED = "The server is stopping and takes no new call; send the call again."
CLOSED = Unread(grpc.StatusCode.UNAVAILABLE, _CLOSED, ServerStopping(_CLOSED))
# How long after its start a call's request may arrive. A client sends it with the call's
# headers, often in the same packet: 10 s is far past any network's delay (the webhook shim
# gives a request as long), and short beside the idle time that closes a connection without
# calls (300 s). DEADLINE_EXCEEDED past it: the time the server allows ran out before the
# call could be served (not CANCELLED, which reads as the client's own doing); the call was
# never read, so it is safe to send again.
REQUEST_ARRIVAL_SECONDS = 10.0
# The stop drains until no call has come for DRAIN_QUIET_SECONDS, for at most DRAIN_SECONDS:
# refusing a call takes well under a millisecond, so a quiet gap means gRPC's queue is empty;
# the bound keeps clients that retry at once from holding the stop. An idle server (no call
# in the gap before its stop) does not wait at all.
DRAIN_QUIET_SECONDS = 0.1
DRAIN_SECONDS = 1.0

T = TypeVar("T")


def waiting_per_address(calls_per_connection: int) -> int:
    """Calls one client host may have waiting for their request: four connections' worth."""
    return 4 * calls_per_connection


def client_address(peer: str) -> str:
    """A call's peer without its port (`ipv4:10.0.0.7`): a host's connections count as one."""
    return peer.rpartition(":")[0]


class RequestArrival(WrappingInterceptor):
    """Serves every method client-streaming, reading its request; a bound of places per host.

    A call holds a place of its host while it waits for its request; a call that streams its
    answers (a watch), or reads a stream of requests (reflection), for as long as it is open.
    """

    def __init__(
        self,
        per_address: int,
        arrival_seconds: float = REQUEST_ARRIVAL_SECONDS,
        token: BearerToken | None = None,
    ) -> None:
        super().__init__()
        self._per_address = per_address
        self._arrival_seconds = arrival_seconds
        self._too_late = Unread(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"The call's request did not arrive within {arrival_seconds:g} s of the call's"
            " start; send the call again, its request with it.",
            caller_noise=True,
        )
        self._token = token
        self._waiting: dict[str, int] = {}
        self._reading: set[asyncio.Timeout] = set()  # of the calls waiting for a request
        self._stopping = False
        self._last_call = -DRAIN_QUIET_SECONDS  # the event loop's time a call last came

    async def drain(self) -> None:
        """Once `end_waits` was called: return when no call has come (those since refused
        CLOSED) for DRAIN_QUIET_SECONDS, or DRAIN_SECONDS after this call began."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS

        def left() -> float:
            return min(self._last_call + DRAIN_QUIET_SECONDS, deadline) - loop.time()

        while (wait := left()) > 0:  # noqa: ASYNC110 - a quiet gap is no event: it is timed
            await asyncio.sleep(wait)

    def end_waits(self) -> None:
        """The server is stopping: refuse the calls that wait for their request now (STOPPING),
        and end client streams at their next wait for a request, now and from now on."""
        self._stopping = True
        now = asyncio.get_running_loop().time()
        for reading in self._reading:
            reading.reschedule(now)

    def wrap(self, method: str, handler: Handler) -> Handler:
        """The client-streaming handler of the same answers (synchronous ones pass through)."""
        deserialize, serialize = handler.request_deserializer, handler.response_serializer
        # The token a call of this method needs, if it needs one.
        token = self._token if self._token is not None and self._token.guards(method) else None
        if inspect.iscoroutinefunction(handler.unary_unary):
            answered = self._answered(handler.unary_unary, token)
            return grpc.stream_unary_rpc_method_handler(answered, deserialize, serialize)
        if inspect.isasyncgenfunction(handler.unary_stream):
            streamed = self._streamed(handler.unary_stream, token)
            return grpc.stream_stream_rpc_method_handler(streamed, deserialize, serialize)
        if inspect.iscoroutinefunction(handler.unary_stream):  # it writes (health's Watch)
            written = self._written(handler.unary_stream, token)
            return grpc.stream_stream_rpc_method_handler(written, deserialize, serialize)
        if inspect.isasyncgenfunction(handler.stream_stream):  # reflection's
            held = self._held(handler.stream_stream, token)
            return grpc.stream_stream_rpc_method_handler(held, deserialize, serialize)
        return handler

    def _answered(self, behaviour: Behaviour, token: BearerToken | None) -> Behaviour:
        async def answered(requests: Any, context: Context) -> Any:
            with self._place(context, token) as refused:
                request = await self._read(context) if refused is None else refused
            return await behaviour(request, context)

        return answered

    def _streamed(self, behaviour: Behaviour, token: BearerToken | None) -> Behaviour:
        async def streamed(requests: Any, context: Context) -> AsyncIterator[Any]:
            with self._place(context, token) as refused:
                request = await self._read(context) if refused is None else refused
                async for message in behaviour(request, context):
                    yield message

        return streamed

    def _written(self, behaviour: Behaviour, token: BearerToken | None) -> Behaviour:
        async def written(requests: Any, context: Context) -> None:
            with self._place(context, token) as refused:
                request = await self._read(context) if refused is None else refused
                await behaviour(request, context)

        return written

    def _held(self, behaviour: Behaviour, token: BearerToken | None) -> Behaviour:
        async def held(requests: Any, context: Context) -> AsyncIterator[Any]:
            with self._place(context, token) as refused:
                if refused is not None:
                    await context.abort(refused.code, refused.description)
                async for message in behaviour(self._until_stop(requests), context):
                    yield message

        return held

    async def _read(self, context: Context) -> Any:
        """The call's request; NO_REQUEST if its stream ended without one, STOPPING if
        `end_waits` came first, the DEADLINE_EXCEEDED one if `arrival_seconds` passed first."""
        try:
            request = await self._unless_stopped(context.read(), self._arrival_seconds)
        except TimeoutError:
            return STOPPING if self._stopping else self._too_late
        return NO_REQUEST if request is grpc.aio.EOF else request

    async def _until_stop(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A client stream's requests, ending as if its client had ended it at `end_waits`."""
        while not self._stopping:
            try:
                request = await self._unless_stopped(anext(requests))
            except (StopAsyncIteration, TimeoutError):
                return
            yield request

    async def _unless_stopped(self, waiting: Awaitable[T], seconds: float | None = None) -> T:
        """`waiting`'s result; TimeoutError if `end_waits`, or `seconds` from now, come first."""
        reading = asyncio.timeout(seconds)
        self._reading.add(reading)
        try:
            async with reading:
                return await waiting
        finally:
            self._reading.discard(reading)

    @contextmanager
    def _place(self, context: Context, token: BearerToken | None) -> Iterator[Unread | None]:
        """One of the places of the call's host, held until the block ends (None); or why the
        call gets none and is refused unread: it lacks the `token` its method needs
        (UNAUTHENTICATED), or its host has no place left (TOO_MANY_WAITING)."""
        self._last_call = asyncio.get_running_loop().time()  # a refused call came too
        if token is not None and not token.carried_by(context.invocation_metadata()):
            yield UNAUTHENTICATED
            return
        if self._stopping:
            yield CLOSED
            return
        address = client_address(context.peer())
        waiting = self._waiting.get(address, 0)
        if waiting >= self._per_address:
            yield TOO_MANY_WAITING
            return
        self._waiting[address] = waiting + 1
        try:
            yield None
        finally:
            left = self._waiting[address] - 1
            if left:
                self._waiting[address] = left
            else:
                del self._waiting[address]
