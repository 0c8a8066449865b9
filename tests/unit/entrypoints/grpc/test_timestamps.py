"""write_timestamp sets exactly what protobuf's own FromDatetime sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ticketing_service.entrypoints.grpc.timestamps import write_timestamp

SEOUL = timezone(timedelta(hours=9))


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 26, 21, 59, 44, 123456, tzinfo=UTC),
        datetime(2026, 11, 27, 6, 59, 44, 999999, tzinfo=SEOUL),  # converted to UTC
        datetime(2026, 11, 26, 21, 59, 44),  # naive: taken as UTC
        datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC),  # before the epoch
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ],
)
def test_it_matches_from_datetime(value: datetime) -> None:
    expected, written = Timestamp(), Timestamp()
    expected.FromDatetime(value)
    write_timestamp(written, value)
    assert (written.seconds, written.nanos) == (expected.seconds, expected.nanos)
    in_utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    assert written.ToDatetime(tzinfo=UTC) == in_utc
