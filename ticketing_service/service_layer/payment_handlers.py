"""Use case of payments: ConfirmPayment, in one transaction under the reservation's row lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ticketing_service.domain import errors
from ticketing_service.domain.reservations import (
    SETTLED_STATUSES,
    ConfirmOutcome,
    LockedReservation,
    PaymentClaim,
    Reservation,
    payment_differences,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.ports import UnitOfWork

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
        locked = await uow.reservations.lock(claim.reservation_id)
        if locked is None:
            raise errors.ReservationNotFound(
                "No reservation has this id.", reservationId=claim.reservation_id
            )
        repeated = await _repeated_delivery(uow, locked, claim)
        if repeated is not None:
            return repeated
        wrong = payment_differences(locked, claim)
        if wrong:
            # Committed although the call fails: the money may have been taken (a refund is
            # due), so the attempt is kept and announced on the feed, once per payment.
            await uow.reservations.record_mismatch(claim, wrong)
            await uow.commit()
            raise errors.PaymentMismatch(
                f"The payment does not match the reservation ({', '.join(wrong)}).",
                reservationId=claim.reservation_id,
            )
        if locked.reservation.status in SETTLED_STATUSES:
            # The same payment again: answer from what is stored, write nothing.
            return ConfirmResult(_settled_outcome(locked), locked.reservation)
        result = await _settle(uow, locked, claim)
        if claim.delivery is not None:
            await uow.reservations.record_delivery(claim, result.outcome)
        await uow.commit()
    return result


async def _repeated_delivery(
    uow: UnitOfWork, locked: LockedReservation, claim: PaymentClaim
) -> ConfirmResult | None:
    """The first result of this same delivery seen before; no work is done twice.

    An id seen before for another payment is not a repeat: the claim goes through the ordinary
    rules below, so a reused id can never swallow a payment.
    """
    if claim.delivery is None:
        return None
    seen = await uow.reservations.delivery_outcome(claim.delivery)
    if seen is None:
        return None
    if not claim.is_repeat_of(seen):
        log.warning(
            "delivery id %r (%s) was seen before for another payment; handling this one anew",
            claim.delivery.delivery_id,
            claim.delivery.scheme.value,
        )
        return None
    return ConfirmResult(seen.outcome, locked.reservation)


def _settled_outcome(locked: LockedReservation) -> ConfirmOutcome:
    if locked.reservation.registration_id is None:
        return ConfirmOutcome.PAID_UNFULFILLED
    return ConfirmOutcome.ALREADY_CONFIRMED


async def _settle(uow: UnitOfWork, locked: LockedReservation, claim: PaymentClaim) -> ConfirmResult:
    """Give the seat the hold kept, or a free seat to a late payment, or record a refund due."""
    held = locked.reservation
    if held.holds_seat_at(locked.now):
        # The seat was counted when the hold was made: no tier lock, so confirmations of one
        # tier run in parallel.
        accepted = await uow.reservations.accept(locked, claim)
    else:
        # A late payment: the hold no longer counts, so a seat must be found under the tier
        # lock exactly as StartPaidRegistration finds one.
        uow.late_payment = True
        seats = await uow.reservations.lock_tier_seats(held.event_id, held.tier_id)
        accepted = await uow.reservations.accept(locked, claim) if seats.has_free_seat else None
    if accepted is not None:
        return ConfirmResult(ConfirmOutcome.CONFIRMED, accepted)
    unfulfilled = await uow.reservations.mark_paid_unfulfilled(claim)
    return ConfirmResult(ConfirmOutcome.PAID_UNFULFILLED, unfulfilled)
