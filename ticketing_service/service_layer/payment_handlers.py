"""Use case of payments: ConfirmPayment, in one transaction under the reservation's row lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from ticketing_service.domain import errors
from ticketing_service.domain.refunds import RefundReason, mismatch_reason
from ticketing_service.domain.reservations import (
    SETTLED_STATUSES,
    ConfirmOutcome,
    LockedReservation,
    PaymentClaim,
    Reservation,
    ReservationStatus,
    payment_differences,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.ports import OwedRefund, UnitOfWork
from ticketing_service.service_layer.registration_handlers import with_refunds

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    """What confirming did, and the reservation afterwards."""

    outcome: ConfirmOutcome
    reservation: Reservation


async def confirm_payment(deps: Dependencies, claim: PaymentClaim) -> ConfirmResult:
    """Record a payment and give its user a seat; repeats answer from what is stored."""
    async with deps.uow() as uow:
        # Every confirmation of a reservation queues on this row lock, so two deliveries of
        # the same payment can never both see `pending_payment` and both register the user.
        locked = await uow.holds.lock(claim.reservation_id, claim.payment_id)
        if locked is None:
            raise errors.ReservationNotFound(
                "No reservation has this id.", reservationId=claim.reservation_id
            )
        repeated = await _repeated_delivery(uow, locked, claim)
        if repeated is not None:
            return repeated
        wrong = payment_differences(locked, claim)
        if wrong:
            # Committed although the call fails: the money was taken, so the attempt is kept,
            # announced on the feed and refunded, once per payment.
            if await uow.payments.record_mismatch(claim, wrong):
                await _refund_mismatch(deps, uow, claim, wrong)
            else:
                await _top_up_refund(deps, uow, locked, claim)
            await uow.commit()
            raise errors.PaymentMismatch(
                f"The payment does not match the reservation ({', '.join(wrong)}).",
                reservationId=claim.reservation_id,
            )
        if locked.reservation.status in SETTLED_STATUSES:
            # The same payment again: answer from what is stored, write nothing.
            return await _answer(uow, locked.repeat_outcome(), locked.reservation)
        settled = await _settle(uow, locked, claim)
        if settled.outcome is ConfirmOutcome.PAID_UNFULFILLED and deps.auto_refund:
            await uow.refunds.owe(_refund_of(claim, RefundReason.PAID_UNFULFILLED))
        if (
            locked.event_cancelled
            and locked.reservation.status is ReservationStatus.PENDING_PAYMENT
        ):
            # A hold the event's cancellation had yet to reach: it counts as done by it.
            await uow.cancellations.finish(locked.reservation.event_id, 1)
        if claim.delivery is not None:
            await uow.payments.record_delivery(claim, settled.outcome)
        result = await _answer(uow, settled.outcome, settled.reservation)
        await uow.commit()
    return result


async def _answer(uow: UnitOfWork, outcome: ConfirmOutcome, held: Reservation) -> ConfirmResult:
    """The answer. A payment without a seat names its refunds, the first time and repeated
    (reservation.proto, `refunds`); a seat's answer needs no query for them."""
    if outcome is ConfirmOutcome.PAID_UNFULFILLED:
        held = await with_refunds(uow, held)
    return ConfirmResult(outcome, held)


async def _refund_mismatch(
    deps: Dependencies, uow: UnitOfWork, claim: PaymentClaim, wrong: list[str]
) -> None:
    """Owe back a mismatched payment the domain says is owed: all of it, as reported.

    One payment, one fate: not a payment that settled a reservation (this one or another) or
    that is owed back already, reported again with other values. Refunding it would take back a
    seat's money or return it twice; an operator looks at it (the feed announced it).
    """
    reason = mismatch_reason(wrong)
    if not deps.auto_refund or claim.amount <= 0 or reason is None:
        return
    if await uow.payments.spoken_for(claim.payment_id):
        log.error(
            "payment %s settled a reservation or is owed back already; reported again with"
            " other values, it is not refunded again",
            claim.payment_id,
        )
        return
    await uow.refunds.owe(_refund_of(claim, reason))


async def _top_up_refund(
    deps: Dependencies, uow: UnitOfWork, locked: LockedReservation, claim: PaymentClaim
) -> None:
    """A payment of this reservation's checkout being refunded as a mismatch, reported again
    for more than its refunds return: the difference is owed too.

    Its first report may be wrong (a signed callback of 1 for a payment of 20,000): its refund
    returned 1 and every later report of the payment, the payment service's own answer
    included, was refused as owed back, so 19,999 stayed with no seat and no refund. Money ends
    with a seat or with the payer; a report of more than was taken fails at the payment service
    (refund_exceeds_cancellable) and the refund is failed for an operator.
    """
    reservation = locked.reservation
    if (
        not deps.auto_refund
        or claim.payment_id not in locked.owed_back
        or locked.paid_elsewhere
        or reservation.payment_id == claim.payment_id  # it settled this reservation
        or claim.checkout_id != reservation.checkout_id
    ):
        return
    refunds = [
        r
        for r in await uow.refunds.of_reservation(reservation.reservation_id)
        if r.payment_id == claim.payment_id and r.may_return_money
    ]
    if any(r.currency_code != claim.currency_code for r in refunds):
        return  # another currency than its refunds: an operator looks (the feed announced it)
    left = claim.amount - sum(r.amount for r in refunds)
    if left > 0:
        await uow.refunds.owe(replace(_refund_of(claim, RefundReason.MISMATCH), amount=left))


def _refund_of(claim: PaymentClaim, reason: RefundReason) -> OwedRefund:
    """A full refund of the claimed payment."""
    return OwedRefund(
        reservation_id=claim.reservation_id,
        payment_id=claim.payment_id,
        checkout_id=claim.checkout_id,
        amount=claim.amount,
        currency_code=claim.currency_code,
        reason=reason,
    )


async def _repeated_delivery(
    uow: UnitOfWork, locked: LockedReservation, claim: PaymentClaim
) -> ConfirmResult | None:
    """The first result of this same delivery seen before; no work is done twice.

    An id seen before for another payment is not a repeat: the claim goes through the ordinary
    rules below, so a reused id can never swallow a payment.
    """
    if claim.delivery is None:
        return None
    seen = await uow.payments.delivery_outcome(claim.delivery)
    if seen is None:
        return None
    if not claim.is_repeat_of(seen):
        log.warning(
            "delivery id %r (%s) was seen before for another payment; handling this one anew",
            claim.delivery.delivery_id,
            claim.delivery.scheme.value,
        )
        return None
    return await _answer(uow, seen.outcome, locked.reservation)


async def _settle(uow: UnitOfWork, locked: LockedReservation, claim: PaymentClaim) -> ConfirmResult:
    """Carry out what the domain decides: a seat, or the payment recorded with a refund due."""
    seats = None
    uow.late_payment = locked.is_late
    if locked.needs_seat_count:
        # A late payment: a seat is looked for under the tier lock, exactly as
        # StartPaidRegistration looks for one.
        held = locked.reservation
        seats = await uow.holds.lock_tier_seats(held.event_id, held.tier_id)
    if locked.settle(seats) is ConfirmOutcome.CONFIRMED:
        accepted = await uow.payments.accept(locked, claim)
        if accepted is not None:
            return ConfirmResult(ConfirmOutcome.CONFIRMED, accepted)
        # None: another reservation of the user registered them at this moment (the unique
        # registration per user and event decided), so this one is paid without a seat.
    unfulfilled = await uow.payments.mark_paid_unfulfilled(claim)
    return ConfirmResult(ConfirmOutcome.PAID_UNFULFILLED, unfulfilled)
