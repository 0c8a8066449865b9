"""Refunds: what is owed back to a payer, by which policy, and how much may still be refunded.

Money always ends in a seat or back with the payer. Amounts are integers in the currency's minor
unit; a percentage is applied with floor division, so a refund is never a fraction of a minor
unit and never more than the policy gives (the payer's side of a rounding is never guessed).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


class RefundReason(enum.StrEnum):
    """Why money goes back."""

    CANCELLATION = "cancellation"  # the user gave up their seat (the event's policy applies)
    ORGANIZER = "organizer"
    GOODWILL = "goodwill"
    PAID_UNFULFILLED = "paid_unfulfilled"  # paid, but no seat could be given
    DUPLICATE = "duplicate"  # a second payment of a reservation another payment settled
    MISMATCH = "mismatch"  # a payment whose amount or currency did not match its reservation
    EVENT_CANCELLED = "event_cancelled"


class RefundStatus(enum.StrEnum):
    """Where a refund is: requested → pending → succeeded | failed."""

    REQUESTED = "requested"  # owed, not yet accepted by the payment service
    PENDING = "pending"  # accepted by the payment service, not settled yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # refused, or given up after the last attempt: an operator acts

    @property
    def counts_against_payment(self) -> bool:
        """Whether the refund is (or may still become) money returned."""
        return self is not RefundStatus.FAILED

    @property
    def is_final(self) -> bool:
        """Whether nothing more will happen to it."""
        return self in (RefundStatus.SUCCEEDED, RefundStatus.FAILED)


# A refund's failure code when the payment service could not say whether it made the refund.
OUTCOME_UNKNOWN = "outcome_unknown"


@dataclass(frozen=True, slots=True)
class Refund:
    """One refund of (part of) one payment."""

    refund_id: str
    reservation_id: str
    payment_id: str
    checkout_id: str
    amount: int
    currency_code: str
    reason: RefundReason
    status: RefundStatus
    create_time: datetime
    update_time: datetime
    failure_code: str | None = None
    # RefundReservation's request id and what it asked, so a repeat is recognised.
    request_id: str | None = None
    release_seat: bool = False
    # Tries of sending or following it so far.
    attempts: int = 0

    @property
    def outcome_unknown(self) -> bool:
        """Failed without the payment service's word on it: the refund may have been made, and
        RefreshRefund asks about it again. Every other failure is its word, and final."""
        return self.status is RefundStatus.FAILED and self.failure_code == OUTCOME_UNKNOWN

    @property
    def may_return_money(self) -> bool:
        """Whether it is, or may still become, money returned: not failed, or failed with its
        outcome unknown. Its payment stays owed back meanwhile: it never settles a seat."""
        return self.status.counts_against_payment or self.outcome_unknown


@dataclass(frozen=True, slots=True)
class RefundRule:
    """At least `min_hours_before_start` hours before the event starts, `percent` back."""

    min_hours_before_start: int
    percent: int


# Moim's published policy: a week or more before 100 %, three days 70 %, a day 50 %, later 0 %.
DEFAULT_REFUND_POLICY: tuple[RefundRule, ...] = (
    RefundRule(168, 100),
    RefundRule(72, 70),
    RefundRule(24, 50),
)


def refund_percent(
    policy: Sequence[RefundRule] | None, event_start: datetime | None, at: datetime
) -> int:
    """The percent the policy gives back for a cancellation `at`; 100 without a start time.

    The rule with the most hours that still lies ahead of the start applies; none does: 0.
    An event with no start time cannot be "too late" to cancel, so it refunds in full.
    """
    if event_start is None:
        return 100
    rules = sorted(policy or DEFAULT_REFUND_POLICY, key=lambda r: -r.min_hours_before_start)
    ahead = event_start - at
    for rule in rules:
        if ahead >= timedelta(hours=rule.min_hours_before_start):
            return rule.percent
    return 0


def refund_amount(paid: int, percent: int) -> int:
    """`floor(paid * percent / 100)`, in minor units."""
    return paid * percent // 100


def refundable(paid: int, refunds: Iterable[Refund]) -> int:
    """What may still be refunded of a payment of `paid`: the refunds not failed count."""
    taken = sum(r.amount for r in refunds if r.status.counts_against_payment)
    return max(paid - taken, 0)


def amount_to_refund(asked: int, left: int) -> int:
    """What a refund of `asked` (0: all that is left) takes.

    Raises ValueError when nothing is left or more is asked than is left.
    """
    amount = asked or left
    if amount <= 0 or amount > left:
        raise ValueError(f"{amount} asked, {left} left to refund")
    return amount


def mismatch_reason(fields: Sequence[str]) -> RefundReason | None:
    """Why a mismatched payment is owed back by itself, or None when it is not (SPEC §10).

    Only money taken for the reservation's own checkout is: a second payment of a settled
    reservation (only its payment id differs) as a duplicate, one of another amount or currency
    as a mismatch. A payment of another checkout may have paid that checkout's seat, and one
    whose provider alone differs is this checkout's payment written carelessly, which its next
    report may settle: both are kept and announced for an operator, never refunded by
    themselves (each had ended with a seat and a refund of its money).
    """
    if "checkout_id" in fields:
        return None
    if "amount" in fields or "currency_code" in fields:
        return RefundReason.MISMATCH
    return RefundReason.DUPLICATE if list(fields) == ["payment_id"] else None


# Tries of a refund are never spaced further apart than this.
LONGEST_RETRY = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RefundRetryPolicy:
    """How refunds are retried: a transient failure waits `backoff`, doubled each attempt (at
    most an hour); after `max_attempts` failed tries a refund the payment service says it never
    took is failed for an operator (one it cannot tell of is failed as unknown, for RefreshRefund
    to correct once it can). A refund the payment service accepted (pending) is followed at the
    same pace, without limit: money it is moving is never declared lost."""

    backoff: timedelta = timedelta(seconds=30)
    max_attempts: int = 10

    def delay(self, attempts: int) -> timedelta:
        """How long to wait after `attempts` tries."""
        doublings = min(max(attempts - 1, 0), 16)  # 30 s * 2^16 is far past the cap
        return min(self.backoff * (1 << doublings), LONGEST_RETRY)


def policy_problems(policy: Sequence[RefundRule]) -> list[str]:
    """Why a refund policy is malformed (empty when it is fine)."""
    problems = []
    hours = [r.min_hours_before_start for r in policy]
    if len(set(hours)) != len(hours):
        problems.append("Each min_hours_before_start may appear once.")
    if any(h < 0 or h > 24 * 366 for h in hours):
        problems.append("min_hours_before_start must be from 0 to 8784 (a year).")
    if any(not 0 <= r.percent <= 100 for r in policy):
        problems.append("percent must be from 0 to 100.")
    return problems


@dataclass(frozen=True, slots=True)
class EventCancellation:
    """How far an event's cancellation is (CancelEvent)."""

    event_id: str
    cancel_time: datetime
    done: bool
    reservations_done: int
    reservations_total: int
    refunds_pending: int
    refunds_succeeded: int
    refunds_failed: int
