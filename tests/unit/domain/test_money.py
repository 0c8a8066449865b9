"""Money in minor units: one exponent table, no floats."""

from __future__ import annotations

import pytest

from ticketing_service.domain.money import format_amount, is_known_currency


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (15000, "KRW", "15000 KRW"),
        (1050, "USD", "10.50 USD"),
        (5, "USD", "0.05 USD"),
        (0, "JPY", "0 JPY"),
    ],
)
def test_amounts_are_rendered_from_minor_units_without_rounding(
    amount: int, currency: str, shown: str
) -> None:
    assert format_amount(amount, currency) == shown


@pytest.mark.parametrize(
    ("code", "known"), [("KRW", True), ("USD", True), ("krw", False), ("XYZ", False)]
)
def test_only_listed_upper_case_codes_are_known(code: str, known: bool) -> None:
    assert is_known_currency(code) is known
