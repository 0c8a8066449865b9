"""The optional bearer token on every TicketingService call (health and reflection stay open)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc

from ticketing_service.domain.errors import Unauthenticated
from ticketing_service.entrypoints.grpc.errors import abort

PROTECTED_SERVICE_PREFIX = "/moim.ticketing.v1.TicketingService/"

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses TicketingService calls without `authorization: Bearer <token>` of a known token.

    Several tokens are accepted while one is being rotated (TICKETING_GRPC_TOKEN=new,old).
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens or not all(tokens):
            raise ValueError("BearerTokenInterceptor needs at least one non-empty token.")
        self._expected = tuple(f"Bearer {token}".encode() for token in tokens)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        """Pass authorized calls on; answer others with UNAUTHENTICATED."""
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(PROTECTED_SERVICE_PREFIX):
            return handler
        if self._authorized(handler_call_details.invocation_metadata):
            return handler
        return _refusing(handler)

    def _authorized(self, metadata: Any) -> bool:
        for key, value in metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                return _matches_any(given, self._expected)
        return False


def _matches_any(given: bytes, expected: Sequence[bytes]) -> bool:
    # Every token is compared, each in constant time, with no early exit: how long a refusal
    # takes tells nothing about which token, or which prefix of one, came close.
    matched = False
    for token in expected:
        matched |= hmac.compare_digest(given, token)
    return matched


def _refusing(handler: Handler) -> Handler:
    error = Unauthenticated(
        "The call needs `authorization: Bearer <token>` metadata with the service's token."
    )

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort(context, error)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await abort(context, error)
        yield  # pragma: no cover  # makes this an async generator for streaming methods

    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, deserializer, serializer)
