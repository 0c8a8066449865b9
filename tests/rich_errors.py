"""Reads the rich error model (ErrorInfo, BadRequest) from a failed gRPC call.

The parsing is the Python client's (`TicketingError.from_rpc_error`), so every test that reads
an error also exercises what callers use; this adds only the check that details were sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_status import rpc_status
from moim.ticketing.client import TicketingError


@dataclass(frozen=True)
class RichError:
    """The parts of a failed call a client acts on."""

    code: grpc.StatusCode
    reason: str
    domain: str
    metadata: dict[str, str]
    fields: list[str]


def rich_error(error: grpc.aio.AioRpcError) -> RichError:
    """Unpack the status details the server attached to a failed call."""
    assert rpc_status.from_call(error) is not None, (
        f"no rich status on {error.code()}: {error.details()}"
    )
    parsed = TicketingError.from_rpc_error(error)
    return RichError(
        code=parsed.code,
        reason=parsed.reason,
        domain=parsed.domain,
        metadata=parsed.metadata,
        fields=[v.field for v in parsed.field_violations],
    )
