"""The request a log record belongs to, carried in context variables across awaits.

A context variable, not a logger adapter: the handler, the use case and the adapters below it
log through plain module loggers, and each record still names the request that caused it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from dataclasses import dataclass, replace

from ticketing_service.entrypoints.observability.redaction import redact_text

# Ids come from callers (metadata, headers): bounded, so a hostile value cannot bloat each line.
MAX_ID_LENGTH = 128
# Reservation ids are the service's own uuid4s, and every reply names one in this form.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


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
    """A caller's id when it is usable, else a fresh uuid4: printable ASCII (it is echoed in a
    response header), bounded, no space (it could add a field to a console line), and nothing
    redaction would mask (it is on the server's per-call line, which redaction skips)."""
    candidate = (given or "").strip()
    if (
        0 < len(candidate) <= MAX_ID_LENGTH
        and candidate.isascii()
        and candidate.isprintable()
        and " " not in candidate
        and redact_text(candidate) == candidate
    ):
        return candidate
    return str(uuid.uuid4())


def begin_request(
    request_id: str, *, rpc: str = "", route: str = "", reservation_id: str = ""
) -> Token[RequestContext]:
    """Start serving one request in this context; pass the token to `end_request`."""
    return _current.set(RequestContext(request_id, rpc, route, _reservation(reservation_id)))


def end_request(token: Token[RequestContext]) -> None:
    """Restore the context that was current before `begin_request`."""
    # A streaming generator finalised by the event loop runs in another context, where the
    # token does not apply; that context is discarded anyway.
    with suppress(ValueError):
        _current.reset(token)


@contextmanager
def serving_no_request() -> Iterator[None]:
    """Run a block as part of no request: a connection's own work that a server does from the
    task of the request it has just answered (reading the next one, arming its timers)."""
    token = _current.set(_NO_REQUEST)
    try:
        yield
    finally:
        _current.reset(token)


def note_reservation(reservation_id: str) -> None:
    """Name the reservation the current request concerns, once it is known."""
    current = _current.get()
    if reservation_id and reservation_id != current.reservation_id:
        _current.set(replace(current, reservation_id=_reservation(reservation_id)))


def _reservation(value: str) -> str:
    # Taken from requests before they are validated, and written on the per-call line that
    # redaction skips: anything but a reservation id of ours could be a caller's secret.
    return value if _CANONICAL_UUID.fullmatch(value) else ""
