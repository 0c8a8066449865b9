"""Money: integer amounts in a currency's ISO 4217 minor unit, never floats.

Amounts cross every boundary (proto, database, payment service) as whole numbers of the
currency's minor unit, so nothing is ever rounded. This table is the one place that knows how
many minor units a major unit has; add a currency here before it can be used.
"""

from __future__ import annotations

# ISO 4217 exponents: KRW and JPY have no minor unit; USD has cents.
MINOR_UNIT_EXPONENTS: dict[str, int] = {
    "KRW": 0,
    "JPY": 0,
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CNY": 2,
    "TWD": 2,
    "HKD": 2,
    "SGD": 2,
    "AUD": 2,
    "CAD": 2,
    "VND": 0,
    "THB": 2,
    "PHP": 2,
    "IDR": 2,
    "MYR": 2,
}

DEFAULT_CURRENCY = "KRW"

# The largest amount accepted anywhere: fits in a Postgres bigint and in JavaScript's safe range.
MAX_AMOUNT = 2**53 - 1


def is_known_currency(code: str) -> bool:
    """Whether the service can take payments in this ISO 4217 currency code."""
    return code in MINOR_UNIT_EXPONENTS


def format_amount(amount: int, currency_code: str) -> str:
    """Render an amount for people, e.g. 1050 USD -> '10.50 USD', 15000 KRW -> '15000 KRW'."""
    exponent = MINOR_UNIT_EXPONENTS[currency_code]
    if exponent == 0:
        return f"{amount} {currency_code}"
    major, minor = divmod(abs(amount), 10**exponent)
    sign = "-" if amount < 0 else ""
    return f"{sign}{major}.{minor:0{exponent}d} {currency_code}"
