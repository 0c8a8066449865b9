"""Datetimes into `google.protobuf.Timestamp` fields, on the path of every answer."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def write_timestamp(target: Timestamp, value: datetime) -> None:
    """Set `target` to `value` (a naive value is taken as UTC), as `FromDatetime` would.

    `FromDatetime` goes through a time tuple and `calendar.timegm`; a reservation has up to
    three timestamps, and that way cost about a tenth of a confirmation's own handler time.
    """
    since_epoch = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    target.seconds = since_epoch.days * 86_400 + since_epoch.seconds
    target.nanos = since_epoch.microseconds * 1_000
