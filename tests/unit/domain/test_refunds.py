"""The refund policy and the refundable amount: floor of a percentage, in minor units."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ticketing_service.domain.refunds import (
    Refund,
    RefundReason,
    RefundRetryPolicy,
    RefundRule,
    RefundStatus,
    amount_to_refund,
    mismatch_reason,
    policy_problems,
    refund_amount,
    refund_percent,
    refundable,
)

START = datetime(2026, 12, 24, 19, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hours_before", "percent"),
    [(500, 100), (168, 100), (167.9, 70), (100, 70), (72, 70), (71, 50), (24, 50), (23, 0), (0, 0)],
)
def test_moims_published_policy_is_the_default(hours_before: float, percent: int) -> None:
    at = START - timedelta(hours=hours_before)
    assert refund_percent(None, START, at) == percent


def test_after_the_start_nothing_is_refunded_and_without_a_start_everything_is() -> None:
    assert refund_percent(None, START, START + timedelta(hours=1)) == 0
    assert refund_percent(None, None, START) == 100


def test_an_organizers_own_policy_replaces_the_default_in_any_order() -> None:
    generous = [RefundRule(0, 90), RefundRule(48, 100)]
    assert refund_percent(generous, START, START - timedelta(hours=49)) == 100
    assert refund_percent(generous, START, START - timedelta(hours=1)) == 90


@pytest.mark.parametrize(
    ("paid", "percent", "amount"),
    [
        (30000, 70, 21000),  # KRW: no minor unit
        (33333, 70, 23333),  # 23333.1 KRW floored
        (1999, 70, 1399),  # USD 19.99 → 13.99 (13.993 floored)
        (1999, 50, 999),  # USD 9.995 → 9.99, never rounded up
        (1999, 100, 1999),
        (1999, 0, 0),
    ],
)
def test_a_refund_is_the_floor_of_the_percentage_in_minor_units(
    paid: int, percent: int, amount: int
) -> None:
    assert refund_amount(paid, percent) == amount


def refund(amount: int, status: RefundStatus) -> Refund:
    return Refund(
        "f", "r", "pay", "chk", amount, "KRW", RefundReason.GOODWILL, status, START, START
    )


def test_refunds_that_did_not_fail_count_against_what_was_paid() -> None:
    refunds = [
        refund(10000, RefundStatus.SUCCEEDED),
        refund(5000, RefundStatus.PENDING),
        refund(3000, RefundStatus.REQUESTED),
        refund(30000, RefundStatus.FAILED),
    ]
    assert refundable(30000, refunds) == 12000
    assert refundable(10000, refunds) == 0


def test_a_malformed_policy_is_described() -> None:
    assert policy_problems([RefundRule(24, 50), RefundRule(24, 70)]) != []
    assert policy_problems([RefundRule(-1, 50)]) != []
    assert policy_problems([RefundRule(24, 101)]) != []
    assert policy_problems([RefundRule(24, 50), RefundRule(0, 0)]) == []


@pytest.mark.parametrize(
    "rule", [RefundRule(0, 100), RefundRule(0, 0), RefundRule(24 * 366, 100), RefundRule(0, 1)]
)
def test_a_rule_at_the_edges_of_its_ranges_is_accepted(rule: RefundRule) -> None:
    assert policy_problems([rule]) == []


@pytest.mark.parametrize(
    "rule", [RefundRule(0, 150), RefundRule(0, -1), RefundRule(24 * 366 + 1, 100)]
)
def test_a_rule_past_the_edges_of_its_ranges_is_refused(rule: RefundRule) -> None:
    assert policy_problems([rule]) != []


@pytest.mark.parametrize(
    ("asked", "left", "amount"),
    [(0, 700, 700), (300, 700, 300), (700, 700, 700), (1, 700, 1), (0, 1, 1)],
)
def test_a_refund_takes_what_was_asked_or_all_that_is_left(
    asked: int, left: int, amount: int
) -> None:
    assert amount_to_refund(asked, left) == amount


@pytest.mark.parametrize(("asked", "left"), [(701, 700), (0, 0), (1, 0)])
def test_a_refund_of_more_than_is_left_or_of_nothing_is_refused(asked: int, left: int) -> None:
    with pytest.raises(ValueError, match="left to refund"):
        amount_to_refund(asked, left)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (["payment_id"], RefundReason.DUPLICATE),
        (["amount"], RefundReason.MISMATCH),
        (["currency_code"], RefundReason.MISMATCH),
        (["amount", "payment_id"], RefundReason.MISMATCH),
        (["provider", "amount"], RefundReason.MISMATCH),
        # Not money taken for this reservation's checkout as reported: kept for an operator.
        (["checkout_id"], None),
        (["checkout_id", "amount"], None),
        (["provider"], None),
        (["provider", "payment_id"], None),
    ],
)
def test_only_money_taken_for_the_reservations_own_checkout_is_refunded_by_itself(
    fields: list[str], reason: RefundReason | None
) -> None:
    assert mismatch_reason(fields) is reason


@pytest.mark.parametrize(
    ("attempts", "seconds"), [(0, 30), (1, 30), (2, 60), (3, 120), (8, 3600), (1000, 3600)]
)
def test_retries_wait_twice_as_long_each_time_and_never_more_than_an_hour(
    attempts: int, seconds: int
) -> None:
    policy = RefundRetryPolicy(backoff=timedelta(seconds=30))

    assert policy.delay(attempts) == timedelta(seconds=seconds)
