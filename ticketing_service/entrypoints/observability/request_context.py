"""The request a log record belongs to, carried in context variables across awaits.

A context variable, not a logger adapter: the handler, the use case and the adapters below it
log through plain module loggers, and each record still names the request that caused it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace

# Ids come from callers (metadata, headers): bounded, so a hostile value cannot bloat each line.
MAX_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is being served: a request id, the RPC or HTTP route, and the reservation if known."""

    request_id: str = ""
    rpc: str = ""
    route: str = ""
    reservation_id: str = ""


_NO_REQUEST = RequestContext()  # frozen: safe to share as the default
_current: ContextVar[RequestContext] = ContextVar("ticketing_request", default=_NO_REQUEST)


def current_request() -> RequestContext:
    """The context of the request being served here; all fields are empty outside of one."""
    return _current.get()


def new_request_id(given: str | None = None) -> str:
    """A caller's id when it is usable (printable ASCII, bounded), else a fresh uuid4."""
    candidate = (given or "").strip()
    # ASCII only: the id is echoed in response headers, which carry no other text safely.
    if (
        candidate
        and len(candidate) <= MAX_ID_LENGTH
        and candidate.isascii()
        and candidate.isprintable()
    ):
        return candidate
    return _random_uuid()


def _random_uuid() -> str:
    """A random (version 4) UUID's text, as `str(uuid.uuid4())` gives, without the UUID object.

    Every call the caller sent no id for makes one: building and printing a `uuid.UUID` cost
    about 1.5 % of a confirmation's server time.
    """
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def begin_request(
    request_id: str, *, rpc: str = "", route: str = "", reservation_id: str = ""
) -> Token[RequestContext]:
    """Start serving one request in this context; pass the token to `end_request`."""
    return _current.set(RequestContext(request_id, rpc, route, _bounded(reservation_id)))


def end_request(token: Token[RequestContext]) -> None:
    """Restore the context that was current before `begin_request`."""
    # A streaming generator finalised by the event loop runs in another context, where the
    # token does not apply; that context is discarded anyway.
    with suppress(ValueError):
        _current.reset(token)


@contextmanager
def request_scope(
    request_id: str, *, rpc: str = "", route: str = "", reservation_id: str = ""
) -> Iterator[RequestContext]:
    """Serve one request under a fresh context; the previous one is restored afterwards."""
    token = begin_request(request_id, rpc=rpc, route=route, reservation_id=reservation_id)
    try:
        yield _current.get()
    finally:
        end_request(token)


def note_reservation(reservation_id: str) -> None:
    """Name the reservation the current request concerns, once it is known."""
    current = _current.get()
    if reservation_id and reservation_id != current.reservation_id:
        _current.set(replace(current, reservation_id=_bounded(reservation_id)))


def _bounded(value: str) -> str:
    return value[:MAX_ID_LENGTH]
