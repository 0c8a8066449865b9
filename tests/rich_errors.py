"""Reads the rich error model (ErrorInfo, BadRequest) from a failed gRPC call."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


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
    status = rpc_status.from_call(error)
    assert status is not None, f"no rich status on {error.code()}: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    bad_request = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
        elif detail.Is(bad_request.DESCRIPTOR):
            detail.Unpack(bad_request)
    return RichError(
        code=error.code(),
        reason=info.reason,
        domain=info.domain,
        metadata=dict(info.metadata),
        fields=[v.field for v in bad_request.field_violations],
    )
