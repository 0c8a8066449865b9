"""RFC 3339 times, as the payment service and its callbacks write them: one parser for all.

Stricter than `datetime.fromisoformat`, which takes many ISO 8601 forms (no offset, week dates,
a space for `T`): a time without its offset is ambiguous, and one that the other side did not
mean to send is refused rather than guessed at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339 section 5.6 `date-time`; the offset is mandatory.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_rfc3339(value: object) -> datetime | None:
    """`value` as an aware datetime in UTC; None when it is not an RFC 3339 date-time of a real
    moment that UTC can hold (`2024-02-30`, or year 1 with a positive offset, are not)."""
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
