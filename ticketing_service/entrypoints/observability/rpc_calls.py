"""Watching gRPC calls from a server interceptor: when each starts and how it ended.

grpc.aio interceptors see the *handler*, not the call, so observing a call means wrapping the
handler's behaviour, keeping its kind: a coroutine stays a coroutine, an async generator an async
generator. Every behaviour this server registers is asynchronous (the servicer, the asyncio
health servicer); unary-unary and unary-stream ones are wrapped, and anything else (reflection's
bidirectional stream) passes through unobserved.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"

# The ErrorInfo reason the call is being refused with, noted where it aborts (`errors.abort`):
# each call runs in a task of its own, so the value never leaks into another call.
_failure_reason: ContextVar[str] = ContextVar("ticketing_failure_reason", default="")


def note_failure_reason(reason: str) -> None:
    """Name the reason the current call is about to be refused with."""
    _failure_reason.set(reason)


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


def _code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):  # set by abort(), abort_with_status() or set_code()
        return code
    # An exception that escaped without an abort: grpc answers UNKNOWN for it.
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


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
    order, so the first observer sees the end last.
    """

    def __init__(self, *observers: CallObserver) -> None:
        self._observers = observers
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

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

    def _start(self, method: str, request: Any, context: Context) -> list[Any]:
        _failure_reason.set("")
        return [observer.started(method, request, context) for observer in self._observers]

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
        ok = code == grpc.StatusCode.OK
        outcome = RpcOutcome(
            method=method,
            code=code,
            reason="" if ok else _failure_reason.get(),
            duration_seconds=time.perf_counter() - began,
            response=response if ok else None,
        )
        for observer, state in zip(self._observers[::-1], states[::-1], strict=True):
            observer.finished(state, outcome)

    def _unary(self, method: str, behaviour: Any) -> Callable[[Any, Context], Any]:
        async def observed(request: Any, context: Context) -> Any:
            states = self._start(method, request, context)
            began = time.perf_counter()
            try:
                response = await behaviour(request, context)
            except BaseException as error:
                self._end(states, method, context, began, error)
                raise
            self._end(states, method, context, began, None, response)
            return response

        return observed

    def _stream(self, method: str, behaviour: Any) -> Callable[[Any, Context], Any]:
        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            states = self._start(method, request, context)
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
