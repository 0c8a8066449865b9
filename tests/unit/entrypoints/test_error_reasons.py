"""Every reason of the contract maps to exactly one domain error and one status code."""

from __future__ import annotations

import grpc
from moim.ticketing.v1 import error_reason_pb2

from ticketing_service.domain.errors import InvalidArgument, all_error_types
from ticketing_service.entrypoints.grpc.errors import ERROR_DOMAIN, STATUS_CODES, to_status

PREFIX = "ERROR_REASON_"


def contract_reasons() -> list[str]:
    names = error_reason_pb2.ErrorReason.keys()
    return sorted(n.removeprefix(PREFIX) for n in names if n != f"{PREFIX}UNSPECIFIED")


def test_every_contract_reason_has_exactly_one_domain_error() -> None:
    reasons = [error.reason for error in all_error_types()]
    assert sorted(reasons) == contract_reasons()


def test_every_domain_error_has_a_status_code() -> None:
    assert set(STATUS_CODES) == set(all_error_types())


def test_a_status_carries_the_reason_domain_and_field_violations() -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from ticketing_service.domain.errors import FieldViolation

    status = to_status(InvalidArgument([FieldViolation("event_id", "Required.")]))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    decoded = rpc_status.from_call(_FakeCall(status))
    assert decoded is not None
    info, bad_request = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    decoded.details[0].Unpack(info)
    decoded.details[1].Unpack(bad_request)
    assert (info.reason, info.domain) == ("INVALID_ARGUMENT", ERROR_DOMAIN)
    assert [v.field for v in bad_request.field_violations] == ["event_id"]


class _FakeCall:
    """The two methods of a call that `rpc_status.from_call` reads."""

    def __init__(self, status: grpc.Status) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return tuple(self._status.trailing_metadata)
