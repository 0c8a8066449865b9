"""Every status the server sends fits in a default client's 8 KiB of metadata."""

from __future__ import annotations

import base64
from urllib.parse import quote

import grpc
from google.rpc import error_details_pb2, status_pb2

from ticketing_service.domain.errors import FieldViolation, InvalidArgument, TierNotFound
from ticketing_service.entrypoints.grpc.errors import MAX_FIELD_VIOLATIONS, to_status

# What a default client accepts in all, with room left for the other headers of a response.
CLIENT_METADATA_BYTES = 8 * 1024
ROOM_FOR_OTHER_HEADERS = 1024


def metadata_bytes(status: grpc.Status) -> int:
    """The size of the status as it travels: grpc-message (percent-encoded) and the details."""
    details = sum(
        len(key) + len(base64.b64encode(value))
        for key, value in status.trailing_metadata
        if isinstance(value, bytes)
    )
    return len("grpc-message") + len(quote(status.details)) + details


def violations(count: int, text: str) -> list[FieldViolation]:
    return [FieldViolation(f"tiers[{n}].{text}", text) for n in range(count)]


def sent_violations(status: grpc.Status) -> list[error_details_pb2.BadRequest.FieldViolation]:
    [details] = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    bad_request = error_details_pb2.BadRequest()
    assert status_pb2.Status.FromString(details).details[1].Unpack(bad_request)
    return list(bad_request.field_violations)


def test_the_worst_invalid_argument_fits_and_carries_the_first_20_violations() -> None:
    # Hundreds of violations whose texts echo long, multi-byte input.
    status = to_status(InvalidArgument(violations(600, "가" * 10_000)))

    assert metadata_bytes(status) < CLIENT_METADATA_BYTES - ROOM_FOR_OTHER_HEADERS
    sent = sent_violations(status)
    assert len(sent) == MAX_FIELD_VIOLATIONS
    assert sent[0].field.startswith("tiers[0].")


def test_the_control_the_same_violations_unclipped_would_not_fit() -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations(100, "Required; must not be empty.")
        ]
    )
    assert len(base64.b64encode(bad_request.SerializeToString())) > CLIENT_METADATA_BYTES


def test_the_message_names_three_fields_and_counts_the_rest() -> None:
    error = InvalidArgument(violations(250, "name"))
    assert error.message == (
        "The request has invalid fields (tiers[0].name, tiers[1].name, tiers[2].name"
        " and 247 more); correct them and retry."
    )


def test_long_metadata_values_are_clipped() -> None:
    status = to_status(TierNotFound("No such tier.", tierId="x" * 100_000))
    assert metadata_bytes(status) < CLIENT_METADATA_BYTES - ROOM_FOR_OTHER_HEADERS
