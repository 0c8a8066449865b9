"""A call whose request cannot be read is refused with a status that says why.

gRPC decodes a request before any handler or interceptor runs. A `DecodeError` there (a corrupt
wire format, a string that is not UTF-8) answered UNKNOWN, with the Python exception's text as
its message, and logged a traceback, and the call had no line and no metrics of its own. Here
the request is decoded by a deserializer that keeps the error, and the call is refused with it.
The same marker stands in for a request that was not read: one that never came, came too
late or had not come when the server began to stop, or one of a call without the token
(arrival.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from ticketing_service.domain.errors import FieldViolation, InvalidArgument, TicketingError
from ticketing_service.entrypoints.grpc.errors import abort
from ticketing_service.entrypoints.grpc.wrapping import (
    Behaviour,
    Context,
    Deserializer,
    WrappingInterceptor,
)
from ticketing_service.entrypoints.observability.interceptor import note_caller_noise


@dataclass(frozen=True, slots=True)
class Unread:
    """In place of a request the call cannot be served with: the status that refuses it.

    An INVALID_ARGUMENT one names the field `request`, with `description` as its violation;
    one with an `error` is refused with it, its reason included.
    """

    code: grpc.StatusCode
    description: str
    error: TicketingError | None = None
    # A refusal any caller can provoke as often as it likes: its line is sampled.
    caller_noise: bool = False


class RequestDecoding(WrappingInterceptor):
    """Refuses a call whose request is Unread (undecodable, or not read) with its status."""

    def deserializer(self, deserialize: Deserializer) -> Deserializer:
        """The handler's deserializer, returning an Unread instead of raising."""
        if deserialize is None:
            return None

        def decode(data: bytes) -> Any:
            try:
                return deserialize(data)
            except DecodeError as error:
                # The error's text comes from protobuf, never from the caller's bytes.
                return Unread(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"The request is not a valid encoding of this method's message: {error}",
                )

        return decode

    def awaited(self, method: str, behaviour: Behaviour) -> Behaviour:
        """Refuse an Unread request, else run the behaviour."""

        async def decoded(request: Any, context: Context) -> Any:
            if isinstance(request, Unread):
                await _refuse(context, request)
            return await behaviour(request, context)

        return decoded

    def iterated(self, method: str, behaviour: Behaviour) -> Behaviour:
        """Refuse an Unread request, else stream what the behaviour yields."""

        async def decoded(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, Unread):
                await _refuse(context, request)
            async for message in behaviour(request, context):
                yield message

        return decoded


async def _refuse(context: Context, request: Unread) -> NoReturn:
    if request.caller_noise:
        note_caller_noise()
    if request.code == grpc.StatusCode.INVALID_ARGUMENT:
        await abort(context, InvalidArgument([FieldViolation("request", request.description)]))
    if request.error is not None:
        await abort(context, request.error)
    await context.abort(request.code, request.description)
