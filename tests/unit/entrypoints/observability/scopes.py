"""Serving one request in a test, as the interceptor and the shim's middleware do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ticketing_service.entrypoints.observability.request_context import (
    begin_request,
    end_request,
)


@contextmanager
def request_scope(request_id: str, *, rpc: str = "", route: str = "") -> Iterator[None]:
    """Serve one request under a fresh context; the previous one is restored afterwards."""
    token = begin_request(request_id, rpc=rpc, route=route)
    try:
        yield
    finally:
        end_request(token)
