"""A request whose bytes are not its message answers INVALID_ARGUMENT, not UNKNOWN.

gRPC decodes a request before any handler or interceptor runs. A `DecodeError` there (a corrupt
wire format, a string that is not UTF-8) answered UNKNOWN, with the Python exception's text as
its message, and logged a traceback, and the call had no line and no metrics of its own. Here
the request is decoded by a deserializer that keeps the error, and the call is refused with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

from google.protobuf.message import DecodeError

from ticketing_service.domain.errors import FieldViolation, InvalidArgument
from ticketing_service.entrypoints.grpc.errors import abort
from ticketing_service.entrypoints.grpc.wrapping import (
    Behaviour,
    Context,
    Deserializer,
    WrappingInterceptor,
)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """In place of a request that could not be decoded: why."""

    error: str


class RequestDecoding(WrappingInterceptor):
    """Refuses a request that could not be decoded with INVALID_ARGUMENT naming `request`.

    Put it before the token check: a refusal handler decodes the request too.
    """

    def deserializer(self, deserialize: Deserializer) -> Deserializer:
        """The handler's deserializer, returning an Undecodable instead of raising."""
        if deserialize is None:
            return None

        def decode(data: bytes) -> Any:
            try:
                return deserialize(data)
            except DecodeError as error:
                return Undecodable(str(error))

        return decode

    def awaited(self, method: str, behaviour: Behaviour) -> Behaviour:
        """Refuse an undecodable request, else run the behaviour."""

        async def decoded(request: Any, context: Context) -> Any:
            if isinstance(request, Undecodable):
                await _refuse(context, request)
            return await behaviour(request, context)

        return decoded

    def iterated(self, method: str, behaviour: Behaviour) -> Behaviour:
        """Refuse an undecodable request, else stream what the behaviour yields."""

        async def decoded(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _refuse(context, request)
            async for message in behaviour(request, context):
                yield message

        return decoded


async def _refuse(context: Context, request: Undecodable) -> NoReturn:
    # The error's text comes from protobuf, never from the caller's bytes.
    reason = f"The request is not a valid encoding of this method's message: {request.error}"
    await abort(context, InvalidArgument([FieldViolation("request", reason)]))
