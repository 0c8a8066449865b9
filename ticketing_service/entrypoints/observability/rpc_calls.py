"""Watching gRPC calls from a server interceptor: when each starts and how it ended.

grpc.aio interceptors see the *handler*, not the call, so observing a call means wrapping the
handler's behaviour, keeping its kind: a coroutine stays a coroutine, an async generator an async
generator, and a synchronous behaviour (the standard health servicer's, which grpc runs in a
thread) stays synchronous. Unary-unary and unary-stream behaviours are wrapped (the service has
no client-streaming methods); anything else passes through unobserved.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class RpcOutcome:
    """How a call ended: its canonical code, the ErrorInfo reason ("" without one), and time."""

    method: str
    code: grpc.StatusCode
    reason: str
    duration_seconds: float
    response: object | None = None  # the unary response; None on failure and for streams


@functools.lru_cache(maxsize=256)  # asked twice per call; only served methods get here
def short_method(method: str) -> str:
    """`/moim.ticketing.v1.TicketingService/ConfirmPayment` → `ConfirmPayment`."""
    return method.rsplit("/", 1)[-1]


def error_reason(context: Context) -> str:
    """The `google.rpc.ErrorInfo` reason a call was aborted with, or ""."""
    for key, value in context.trailing_metadata() or ():
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return str(info.reason)
    return ""


def _code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):  # set by abort(), abort_with_status() or set_code()
        return code
    # An exception that escaped without an abort: grpc answers UNKNOWN for it.
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


class _RecordingContext:
    """A synchronous behaviour's context that remembers the code it was given.

    grpc.aio hands synchronous behaviours a context without `code()` or `trailing_metadata()`;
    this one answers both from what the behaviour set, and passes everything else through.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._code: grpc.StatusCode | None = None

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code
        self._inner.set_code(code)

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code = code
        self._inner.abort(code, details)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CallObserver(Protocol):
    """Told when each served call starts, and how it ended."""

    def started(self, method: str, request: Any, context: Context) -> Any:
        """Called as the call starts; what it returns is handed back to `finished`."""
        ...

    def finished(self, state: Any, outcome: RpcOutcome) -> None:
        """Called once the call ended, whether it succeeded, failed or was cancelled."""
        ...


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """An interceptor that tells its observers when each served call starts and how it ended.

    `started` runs in observer order inside the call's own task, so context variables an
    observer sets are seen by the handler and everything it awaits; `finished` runs in reverse
    order, so the first observer sees the end last. One interceptor for all observers: each
    interceptor of its own would add a handler lookup and a wrapper to every call.
    """

    def __init__(self, *observers: CallObserver) -> None:
        self._observers = observers
        self._reversed = observers[::-1]
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def _started(self, method: str, request: Any, context: Context) -> list[Any]:
        return [observer.started(method, request, context) for observer in self._observers]

    def _finished(self, states: list[Any], outcome: RpcOutcome) -> None:
        for observer, state in zip(self._reversed, reversed(states), strict=True):
            observer.finished(state, outcome)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        """Wrap the handler of a known method; unknown methods (UNIMPLEMENTED) pass untouched."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        # grpc asks for the handler on every call; the wrapper of the same handler is reused.
        # One entry per method: a handler made for a single call (a refusal) just replaces it.
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: Handler) -> Handler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler

    def _end(
        self,
        states: list[Any],
        method: str,
        context: Context,
        began: float,
        error: BaseException | None,
        response: object | None = None,
    ) -> None:
        code = _code(context, error)
        outcome = RpcOutcome(
            method=method,
            code=code,
            reason=error_reason(context) if code != grpc.StatusCode.OK else "",
            duration_seconds=time.perf_counter() - began,
            response=response if code == grpc.StatusCode.OK else None,
        )
        self._finished(states, outcome)

    def _unary(self, method: str, behaviour: Any) -> Callable[[Any, Context], Any]:
        if not inspect.iscoroutinefunction(behaviour):
            # A synchronous behaviour (the health servicer's): grpc runs it in a thread, so the
            # wrapper must stay synchronous too.
            return self._sync_unary(method, behaviour)

        async def observed(request: Any, context: Context) -> Any:
            states = self._started(method, request, context)
            began = time.perf_counter()
            try:
                response = await behaviour(request, context)
            except BaseException as error:
                self._end(states, method, context, began, error)
                raise
            self._end(states, method, context, began, None, response)
            return response

        return observed

    def _sync_unary(self, method: str, behaviour: Any) -> Callable[[Any, Context], Any]:
        def observed(request: Any, grpc_context: Context) -> Any:
            context = cast(Context, _RecordingContext(grpc_context))
            states = self._started(method, request, context)
            began = time.perf_counter()
            try:
                response = behaviour(request, context)
            except BaseException as error:
                self._end(states, method, context, began, error)
                raise
            self._end(states, method, context, began, None, response)
            return response

        return observed

    def _stream(self, method: str, behaviour: Any) -> Callable[[Any, Context], Any]:
        if inspect.isgeneratorfunction(behaviour):
            return self._sync_stream(method, behaviour)
        if not inspect.isasyncgenfunction(behaviour):
            # A streaming behaviour that writes with context.write() and returns.
            return self._unary(method, behaviour)

        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            states = self._started(method, request, context)
            began = time.perf_counter()
            error: BaseException | None = None
            try:
                async for message in behaviour(request, context):
                    yield message
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._end(states, method, context, began, error)

        return observed

    def _sync_stream(self, method: str, behaviour: Any) -> Callable[[Any, Context], Any]:
        def observed(request: Any, grpc_context: Context) -> Iterator[Any]:
            context = cast(Context, _RecordingContext(grpc_context))
            states = self._started(method, request, context)
            began = time.perf_counter()
            error: BaseException | None = None
            try:
                yield from behaviour(request, context)
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._end(states, method, context, began, error)

        return observed
