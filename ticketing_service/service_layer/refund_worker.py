"""Sending refunds and following them until they settle (SPEC §10), and RefreshRefund.

A pass leases the refunds that are due (a transaction of its own), then asks the payment service
about each with no transaction open, and records what it learnt in a short transaction per
refund. The idempotency key `refund:<id>` makes a resend after a crash or a lost answer harmless:
the payment service makes one refund per key.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from ticketing_service.domain import errors
from ticketing_service.domain.refunds import (
    OUTCOME_UNKNOWN,
    Refund,
    RefundRetryPolicy,
    RefundStatus,
)
from ticketing_service.service_layer.checkouts import (
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.ports import RefundChange
from ticketing_service.service_layer.refunds import (
    RefundRefused,
    RefundRequest,
    RefundState,
    UnknownRefund,
)
from ticketing_service.service_layer.refunds import RefundStatus as Answer

log = logging.getLogger(__name__)

# Refunds leased at a time (and sent at once), and the least time a sender keeps them. The lease
# must outlast the batch's calls (two per refund at most: a send, then past its last attempt a
# read), each bounded by the payment service's timeout (the client also bounds how many are in
# flight: `bootstrap.refund_lease`), so two replicas never send one refund at once.
REFUND_BATCH = 10
MIN_LEASE = timedelta(minutes=2)
# Why a refund the service gave up on failed.
MAX_ATTEMPTS_CODE = "max_attempts"
# The payment service said it succeeded, for another amount: its word, final (asking again
# must never turn it into money returned).
AMOUNT_MISMATCH_CODE = "refunded_amount_mismatch"


async def send_due_refunds(deps: Dependencies, lease: timedelta = MIN_LEASE) -> int:
    """Send or follow every refund that is due now, a leased batch at a time; how many were
    tried."""
    tried = 0
    while True:
        async with deps.uow() as uow:
            due = await uow.refunds.claim_due(lease, REFUND_BATCH)
            await uow.commit()
        await asyncio.gather(*(_try(deps, refund) for refund in due))
        tried += len(due)
        if len(due) < REFUND_BATCH:
            return tried


async def refresh_refund(deps: Dependencies, refund_id: str) -> Refund:
    """Ask the payment service where a refund stands and record it (a refund's callback is only
    a hint to ask: its body is never trusted for money). A settled refund is answered as it is,
    unless it failed without the payment service's word on it: that one is asked about, and
    corrected by what it says."""
    async with deps.uow() as uow:
        refund = await uow.refunds.get(refund_id)
    if refund is None:
        raise errors.RefundNotFound("No refund has this id.", refundId=refund_id)
    if refund.status.is_final and not refund.outcome_unknown:
        return refund
    try:
        answer = await deps.payment_service.get_refund(refund_id)
    except (PaymentServiceRefused, PaymentServiceUnreachable) as failure:
        # Not sent yet, or the payment service cannot say now: the worker follows a refund
        # still owed, and one failed as unknown stays failed for an operator (a 404 of it is
        # no proof either: the send that made it may not have landed yet).
        log.warning("refund %s was not refreshed: %s", refund_id, failure)
        return refund
    # A failed refund recorded pending or succeeded counts against its payment again. No lock
    # of the reservation is needed: what the payment service says is recorded whatever was
    # owed meanwhile, and a refund RefundReservation owed while this one was failed is refused
    # by the payment service if it is more than is left (refund_exceeds_cancellable): it fails.
    return await _record(deps, refund, _learnt(refund, answer, deps.refund_retry))


async def _try(deps: Dependencies, refund: Refund) -> None:
    """One try of a refund: send it (requested) or ask about it (pending), and record it."""
    if refund.status is RefundStatus.REQUESTED:
        change = await _send(deps, refund)
    else:
        change = await _follow(deps, refund)
    await _record(deps, refund, change)


async def _send(deps: Dependencies, refund: Refund) -> RefundChange:
    """Send a requested refund; a try that learnt nothing is tried again later. A refusal, or
    the last attempt, fails it only once the payment service says it never took it: an earlier
    send may have made it, even one never recorded (the process died awaiting its answer, and
    the resend after its lease was refused `idempotent_request_in_flight`)."""
    policy = deps.refund_retry
    try:
        answer = await deps.payment_service.create_refund(_request(refund))
    except RefundRefused as refused:
        return await _unless_taken(deps, refund, refused, refused.code)
    except (PaymentServiceUnreachable, PaymentServiceRefused) as failure:
        if refund_attempts(refund) < policy.max_attempts:
            return _retry_later(refund, policy, failure)
        return await _unless_taken(deps, refund, failure, MAX_ATTEMPTS_CODE)
    return _learnt(refund, answer, policy)


async def _unless_taken(
    deps: Dependencies, refund: Refund, failure: Exception, code: str
) -> RefundChange:
    """A refund is failed with `code` only if the payment service says it never took it (a send
    whose answer was lost or malformed may have made it): one it has is recorded as it says,
    and one it cannot say anything of is failed with OUTCOME_UNKNOWN (not sent after its last
    attempt or a refusal, it may have been made)."""
    policy = deps.refund_retry
    attempts = refund_attempts(refund)
    try:
        answer = await deps.payment_service.get_refund(refund.refund_id)
    except UnknownRefund:
        log.error(
            "refund %s failed after %d attempts (%s): the payment service never took it",
            refund.refund_id,
            attempts,
            failure,
        )
        return RefundChange(RefundStatus.FAILED, attempts, None, code)
    except (PaymentServiceUnreachable, PaymentServiceRefused) as unknown:
        # Left requested it would be sent for ever, unseen; failed, it is seen (the alert on
        # failed refunds) and its code says to ask the payment team before refunding again.
        log.error(
            "refund %s was not sent after %d attempts (%s) and the payment service cannot say"
            " whether it has it (%s): failed for an operator",
            refund.refund_id,
            attempts,
            failure,
            unknown,
        )
        return RefundChange(RefundStatus.FAILED, attempts, None, OUTCOME_UNKNOWN)
    return _learnt(refund, answer, policy)


async def _follow(deps: Dependencies, refund: Refund) -> RefundChange:
    """Ask where a pending refund stands. The payment service is moving that money: only its
    own `failed` fails it; any error (a refusal to read it, a malformed answer, no answer) is
    asked about again later, without limit."""
    try:
        answer = await deps.payment_service.get_refund(refund.refund_id)
    except (PaymentServiceUnreachable, PaymentServiceRefused) as failure:
        return _retry_later(refund, deps.refund_retry, failure)
    return _learnt(refund, answer, deps.refund_retry)


def _learnt(refund: Refund, answer: Answer, policy: RefundRetryPolicy) -> RefundChange:
    """The change a payment service's answer makes; a pending refund is asked about again.

    A refund succeeds for its whole amount: a `succeeded` for another amount breaks the
    contract, and is failed (AMOUNT_MISMATCH_CODE) for an operator to settle with the payment
    team, never recorded as the money returned. (A pending refund's `refundedAmount` says
    nothing yet, and a failed one's nothing at all.)"""
    attempts = refund_attempts(refund)
    if answer.status is RefundState.SUCCEEDED and answer.refunded_amount != refund.amount:
        log.error(
            "refund %s of %d: the payment service says it succeeded with refundedAmount %d;"
            " failed for an operator",
            refund.refund_id,
            refund.amount,
            answer.refunded_amount,
        )
        return RefundChange(
            RefundStatus.FAILED, attempts, None, AMOUNT_MISMATCH_CODE, answer.refund_id
        )
    if answer.status is RefundState.SUCCEEDED:
        return RefundChange(RefundStatus.SUCCEEDED, attempts, None, None, answer.refund_id)
    if answer.status is RefundState.FAILED:
        code = answer.failure_code or "refund_failed"
        return RefundChange(RefundStatus.FAILED, attempts, None, code, answer.refund_id)
    return RefundChange(
        RefundStatus.PENDING, attempts, policy.delay(attempts), None, answer.refund_id
    )


def _retry_later(refund: Refund, policy: RefundRetryPolicy, failure: Exception) -> RefundChange:
    """A try that learnt nothing: the refund stays as it is and is tried again after the
    back-off. An answer that is not "not now" (a refusal, a malformed answer) is for an
    operator to look at."""
    attempts = refund_attempts(refund)
    level = logging.WARNING if isinstance(failure, PaymentServiceUnreachable) else logging.ERROR
    log.log(
        level, "refund %s (%s) will be tried again: %s", refund.refund_id, refund.status, failure
    )
    return RefundChange(refund.status, attempts, policy.delay(attempts))


def refund_attempts(refund: Refund) -> int:
    """The tries of a refund, this one included."""
    return refund.attempts + 1


async def _record(deps: Dependencies, refund: Refund, change: RefundChange) -> Refund:
    """Record what a try of `refund` (as read before it) learnt; the refund as it is now. A try
    recorded meanwhile (the worker's and a RefreshRefund at once) makes this one stale: it is
    dropped, and whatever it missed is learnt by the next try."""
    async with deps.uow() as uow:
        recorded = await uow.refunds.record(refund, change)
        if recorded is None:
            log.info(
                "refund %s changed while it was asked about: this try is dropped", refund.refund_id
            )
            recorded = await uow.refunds.get(refund.refund_id)
        await uow.commit()
    assert recorded is not None, "a refund is never deleted"
    return recorded


def _request(refund: Refund) -> RefundRequest:
    return RefundRequest(
        refund_id=refund.refund_id,
        checkout_id=refund.checkout_id,
        payment_id=refund.payment_id,
        reservation_id=refund.reservation_id,
        amount=refund.amount,
        currency_code=refund.currency_code,
        reason=refund.reason.value,
    )
