"""RFC 3339 times, as the payment service and its callbacks write them: one parser for all.

Stricter than `datetime.fromisoformat`, which takes many ISO 8601 forms (no offset, week dates,
a space for `T`): a time without its offset is ambiguous, and one that the other side did not
mean to send is refused rather than guessed at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# The moments the service keeps. Postgres stores the first and the last microsecond Python can
# hold (year 1, and 9999-12-31T23:59:59.999999) as -infinity and infinity, which come back
# naive; and no payment, sale or event of this service is older than 1970.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)

# RFC 3339 section 5.6 `date-time`; the offset is mandatory.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_rfc3339(value: object) -> datetime | None:
    """`value` as an aware datetime in UTC; None when it is not an RFC 3339 date-time of a real
    moment from EARLIEST to LATEST (`2024-02-30`, or year 1 with a positive offset, are not)."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    try:
        when = datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return when if EARLIEST <= when <= LATEST else None
