"""The one-off commands' lines count in words that agree with the number."""

from __future__ import annotations

import pytest

from ticketing_service.entrypoints.maintenance import counted


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 reservations"), (1, "1 reservation"), (2, "2 reservations")],
)
def test_a_count_of_one_is_singular(count: int, expected: str) -> None:
    assert counted(count, "reservation") == expected
