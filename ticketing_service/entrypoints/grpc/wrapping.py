"""A server interceptor that wraps the behaviour of each served method, keeping its kind.

grpc.aio interceptors see the *handler*, not the call, so the handler's behaviour is wrapped: a
behaviour that is awaited (unary-unary, and a unary-stream written with `context.write`, as the
health service's Watch is) stays one, an async generator stays one. Both run once the call's
request has arrived, in the call's own task. Client-streaming behaviours (reflection's
bidirectional stream) and synchronous ones pass through.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"
Behaviour: TypeAlias = "Callable[..., Any]"
Deserializer: TypeAlias = "Callable[[bytes], Any] | None"


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each served method's behaviour with `awaited` or `iterated`, once per handler."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def awaited(self, method: str, behaviour: Behaviour) -> Behaviour:
        """The wrapper of a behaviour that is awaited."""
        raise NotImplementedError

    def iterated(self, method: str, behaviour: Behaviour) -> Behaviour:
        """The wrapper of a behaviour that is an async generator."""
        raise NotImplementedError

    def deserializer(self, deserialize: Deserializer) -> Deserializer:
        """What decodes the request of a wrapped behaviour: by default, the handler's own."""
        return deserialize

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
        wrapped = self.wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, method: str, handler: Handler) -> Handler:
        """The handler that serves `method`'s calls in place of `handler`."""
        behaviour = handler.unary_unary or handler.unary_stream
        if inspect.isasyncgenfunction(behaviour):
            wrapped = self.iterated(method, behaviour)
        elif inspect.iscoroutinefunction(behaviour):
            wrapped = self.awaited(method, behaviour)
        else:  # client-streaming, or a synchronous servicer's (the thread-based health one)
            return handler
        make = (
            grpc.unary_unary_rpc_method_handler
            if handler.unary_unary is not None
            else grpc.unary_stream_rpc_method_handler
        )
        return make(
            wrapped, self.deserializer(handler.request_deserializer), handler.response_serializer
        )
