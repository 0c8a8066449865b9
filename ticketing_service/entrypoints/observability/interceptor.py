"""Each served gRPC call: a request id, one log line when it ends, and its metrics.

Unary-unary and unary-stream behaviours are observed (see entrypoints/grpc/wrapping.py); anything
else (reflection's bidirectional stream) passes through. The wrapper runs in the call's own task,
so the request context it enters is seen by the handler and everything it awaits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from contextvars import ContextVar, Token
from typing import Any

import grpc

from ticketing_service.entrypoints.grpc.wrapping import Behaviour, Context, WrappingInterceptor
from ticketing_service.entrypoints.observability.logging import log_composed
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.observability.request_context import (
    RequestContext,
    begin_request,
    end_request,
    new_request_id,
    note_reservation,
)
from ticketing_service.entrypoints.observability.sampling import CALLER_NOISE_FLAG

REQUEST_ID_KEY = "x-request-id"
# Probes call these every few seconds on every replica: logged at DEBUG, not INFO.
QUIET_RPC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
# Server-side faults are warnings; a refused request is the caller's business, and so is a
# watch this process ended as it stops (reason SERVER_STOPPING).
_WARNING_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)

rpc_log = logging.getLogger("ticketing_service.rpc")

# The ErrorInfo reason the call is being refused with, noted where it aborts (`errors.abort`):
# each call runs in a task of its own, so the value never leaks into another call.
_failure_reason: ContextVar[str] = ContextVar("ticketing_failure_reason", default="")
# Whether the call is being refused before the service read it, for a reason any caller can
# provoke at will (no token, no request, no place): its line is sampled (sampling.py).
_caller_noise: ContextVar[bool] = ContextVar("ticketing_caller_noise", default=False)


def note_failure_reason(reason: str) -> None:
    """Name the reason the current call is about to be refused with."""
    _failure_reason.set(reason)


def note_caller_noise() -> None:
    """Say the current call is being refused unread, for a reason its caller chose."""
    _caller_noise.set(True)


@functools.lru_cache(maxsize=256)  # only served methods get here
def short_method(method: str) -> str:
    """`/moim.ticketing.v1.TicketingService/ConfirmPayment` → `ConfirmPayment`."""
    return method.rsplit("/", 1)[-1]


def _request_id(context: Context) -> str:
    """The caller's `x-request-id` when it is usable, else a fresh uuid4."""
    for name, value in context.invocation_metadata() or ():
        if name == REQUEST_ID_KEY:
            return new_request_id(value if isinstance(value, str) else None)
    return new_request_id()


def _reservation_of(message: object) -> str:
    """The reservation a request or response names (`reservation_id`, `reservation`), or ""."""
    value = getattr(message, "reservation_id", None)
    if isinstance(value, str) and value:
        return value
    value = getattr(getattr(message, "reservation", None), "reservation_id", None)
    return value if isinstance(value, str) else ""


def _begin(method: str, request: object, context: Context) -> Token[RequestContext]:
    """Enter the call's request context, with no failure reason yet."""
    _failure_reason.set("")
    _caller_noise.set(False)
    return begin_request(
        _request_id(context), rpc=short_method(method), reservation_id=_reservation_of(request)
    )


def _code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):  # set by abort(), abort_with_status() or set_code()
        return code
    # An exception that escaped without an abort: grpc answers UNKNOWN for it.
    return grpc.StatusCode.UNKNOWN if error is not None else grpc.StatusCode.OK


class ObservingInterceptor(WrappingInterceptor):
    """Serves each call under its request context, then logs its line and counts it.

    Put it first among the server's interceptors, so that calls the others refuse are observed.
    """

    def __init__(self, metrics: TicketingMetrics | None = None) -> None:
        super().__init__()
        self._metrics = metrics

    def awaited(self, method: str, behaviour: Behaviour) -> Behaviour:
        """Observe a call whose behaviour is awaited."""

        async def observed(request: Any, context: Context) -> Any:
            token, began = _begin(method, request, context), time.perf_counter()
            error: BaseException | None = None
            response = None
            try:
                response = await behaviour(request, context)
                return response
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._finish(token, method, context, began, error, response)

        return observed

    def iterated(self, method: str, behaviour: Behaviour) -> Behaviour:
        """Observe a call whose behaviour is an async generator."""

        async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
            token, began = _begin(method, request, context), time.perf_counter()
            error: BaseException | None = None
            try:
                async for message in behaviour(request, context):
                    yield message
            except BaseException as caught:
                error = caught
                raise
            finally:
                self._finish(token, method, context, began, error)

        return observed

    def _finish(
        self,
        token: Token[RequestContext],
        method: str,
        context: Context,
        began: float,
        error: BaseException | None,
        response: object | None = None,
    ) -> None:
        seconds = time.perf_counter() - began
        code = _code(context, error)
        reason = "" if code == grpc.StatusCode.OK else _failure_reason.get()
        if self._metrics is not None:
            self._metrics.rpc_served(method, code, reason, seconds)
        note_reservation(_reservation_of(response))
        fault = code in _WARNING_CODES and reason != "SERVER_STOPPING"
        level = logging.WARNING if fault else logging.INFO
        if level == logging.INFO and method.startswith(QUIET_RPC_PREFIXES):
            level = logging.DEBUG
        duration_ms = round(seconds * 1000, 1)
        fields: dict[str, object] = {
            "grpc_code": code.name,
            "reason": reason,
            "duration_ms": duration_ms,
        }
        name = short_method(method)
        # Whatever the method: a call refused unread moved nothing, money RPCs' included, and
        # sparing them would let any caller flood the log by naming one.
        if code != grpc.StatusCode.OK and _caller_noise.get():
            fields[CALLER_NOISE_FLAG] = True
        # Only registered methods are observed: the path, a code, a reason from our vocabulary
        # and a number are nothing a caller wrote, and the request id and reservation stamped
        # on the line are admitted only in a safe form (request_context), so redaction can skip it.
        # One template for every call: the sampling of refused calls' lines counts them as one.
        log_composed(rpc_log, level, "%s %s in %.1f ms", fields, name, code.name, duration_ms)
        end_request(token)
