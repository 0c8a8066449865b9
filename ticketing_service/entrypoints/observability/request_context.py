"""The request a log record belongs to, carried in context variables across awaits.

A context variable, not a logger adapter: the handler, the use case and the adapters below it
log through plain module loggers, and each record still names the request that caused it.
"""

from __future__ import annotations

import uuid
from contextlib import suppress
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
    return str(uuid.uuid4())


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


def note_reservation(reservation_id: str) -> None:
    """Name the reservation the current request concerns, once it is known."""
    current = _current.get()
    if reservation_id and reservation_id != current.reservation_id:
        _current.set(replace(current, reservation_id=_bounded(reservation_id)))


def _bounded(value: str) -> str:
    return value[:MAX_ID_LENGTH]
