"""RFC 3339 times: the one parser the shim, the payment-service client and the fake share."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ticketing_service.domain.times import parse_rfc3339


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2024-05-01T12:30:00+09:00", datetime(2024, 5, 1, 3, 30, tzinfo=UTC)),
        ("2024-05-01t03:30:00.250z", datetime(2024, 5, 1, 3, 30, 0, 250000, tzinfo=UTC)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_an_rfc_3339_time_is_read_in_utc(text: str, moment: datetime) -> None:
    assert parse_rfc3339(text) == moment


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-01T12:30:00",  # no offset: ambiguous
        "2024-05-01 12:30:00Z",  # ISO 8601, not RFC 3339
        "2024-W18-3T12:30:00Z",
        "2024-02-30T00:00:00Z",  # no such day
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 in UTC
        "",
        None,
        1714534200,
    ],
)
def test_anything_else_is_not_read(text: object) -> None:
    assert parse_rfc3339(text) is None
