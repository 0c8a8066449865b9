"""Use cases of reconciliation (SPEC §9): ask the payment service where a checkout stands, and
settle what a lost callback would have settled.

A pass leases the reservations that are due (a live hold asked once early, a hold at its end
before it is expired, follow-ups of reservations that ended while the answer was open), asks
about each outside any transaction (the payment-service client caps the calls in flight), and
applies each answer under the reservation's row lock. A paid checkout goes through ConfirmPayment
itself, so a reconciliation and a callback of the same payment queue on that lock and settle it
once; the second sees ALREADY_CONFIRMED.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from ticketing_service.domain import errors
from ticketing_service.domain.reconciliation import CheckoutAnswer, Step, keep_or_end, next_step
from ticketing_service.domain.reservations import (
    ConfirmOutcome,
    Delivery,
    DeliveryScheme,
    PaymentClaim,
    Reservation,
    ReservationStatus,
)
from ticketing_service.service_layer.checkouts import (
    CheckoutNotFound,
    CheckoutStatus,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.payment_handlers import confirm_payment
from ticketing_service.service_layer.ports import ReconcileCandidate, UnitOfWork

log = logging.getLogger(__name__)

BATCH_SIZE = 50
# A claimed reservation is left to its replica this long: its asking is bounded by the
# payment-service timeout, and applying the answer takes a transaction.
LEASE = timedelta(seconds=120)


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What asking about a reservation's checkout found, what it did, and the reservation after.

    `answer` is None for a reservation without a checkout (nothing to ask about); `outcome` is
    set when the answer settled a payment.
    """

    reservation: Reservation
    answer: CheckoutAnswer | None
    step: Step | None
    outcome: ConfirmOutcome | None = None


async def reconcile_due(deps: Dependencies, batch_size: int = BATCH_SIZE) -> list[Reconciled]:
    """One pass: lease what is due, a batch at a time until none is left, ask about each, and
    apply each answer. (One batch a pass left 320 holds ending together waiting minutes at
    the default sweep interval, their payments under way meanwhile.)"""
    ask_after = deps.reconcile_policy.ask_after
    done: list[Reconciled] = []
    while True:
        async with deps.uow() as uow:
            due = await uow.reconciliation.claim_due(ask_after, LEASE, batch_size)
            await uow.commit()
        done += await asyncio.gather(*(_reconcile(deps, candidate) for candidate in due))
        if len(due) < batch_size:
            break
    async with deps.uow() as uow:
        deps.observer.awaiting_follow_up(await uow.reconciliation.awaiting_follow_up())
    return done


async def reconcile_reservation(deps: Dependencies, reservation_id: str) -> Reconciled:
    """Ask about one reservation's checkout now and apply the answer (ReconcileReservation)."""
    async with deps.uow() as uow:
        candidate = await uow.reconciliation.candidate(reservation_id)
    if candidate is None:
        raise errors.ReservationNotFound(
            "No reservation has this id.", reservationId=reservation_id
        )
    if candidate.reservation.checkout_id is None:
        return Reconciled(candidate.reservation, None, None)
    return await _reconcile(deps, candidate)


async def reconcile_since(deps: Dependencies, since: timedelta) -> list[Reconciled]:
    """Ask about every unsettled reservation with a checkout made in the last `since`."""
    async with deps.uow() as uow:
        candidates = await uow.reconciliation.unsettled_since(since)
    done: list[Reconciled] = []
    for start in range(0, len(candidates), BATCH_SIZE):
        batch = candidates[start : start + BATCH_SIZE]
        done += await asyncio.gather(*(_reconcile(deps, candidate) for candidate in batch))
    return done


async def _reconcile(deps: Dependencies, candidate: ReconcileCandidate) -> Reconciled:
    reservation = candidate.reservation
    answer, status = await _ask(deps, reservation)
    if answer is CheckoutAnswer.PAID and status is not None:
        reconciled = await _settle(deps, reservation, status)
    else:
        reconciled = await _apply(deps, candidate, answer)
    deps.observer.reconciled(answer, reconciled.outcome)
    return reconciled


async def _ask(
    deps: Dependencies, reservation: Reservation
) -> tuple[CheckoutAnswer, CheckoutStatus | None]:
    """The payment service's word on the reservation's checkout; never raises for it."""
    assert reservation.checkout_id is not None, "only a checkout is asked about"
    try:
        status = await deps.payment_service.get_checkout(reservation.checkout_id)
    except CheckoutNotFound:
        return CheckoutAnswer.NOT_FOUND, None
    except (PaymentServiceUnreachable, PaymentServiceRefused) as error:
        # A malformed answer is no answer: ask again later rather than act on it.
        log.warning(
            "could not learn the checkout of reservation %s: %s",
            reservation.reservation_id,
            type(error).__name__,
        )
        return CheckoutAnswer.UNREACHABLE, None
    if status.reservation_id != reservation.reservation_id:
        log.warning(
            "the payment service says checkout %s is another reservation's; not acting on it",
            reservation.checkout_id,
        )
        return CheckoutAnswer.UNREACHABLE, None
    return CheckoutAnswer(status.status.value), status


async def _settle(deps: Dependencies, reservation: Reservation, paid: CheckoutStatus) -> Reconciled:
    """Confirm the payment exactly as its callback would have (the late-payment rule included)."""
    claim = PaymentClaim(
        reservation_id=reservation.reservation_id,
        checkout_id=paid.checkout_id,
        payment_id=paid.payment_id or "",
        tx_id=paid.tx_id,
        provider=reservation.provider,
        amount=paid.amount,
        currency_code=paid.currency_code,
        paid_time=paid.paid_time,
        delivery=Delivery(DeliveryScheme.RECONCILE, f"reconcile:{paid.checkout_id}"),
        raw_event=_as_raw_event(paid),
    )
    try:
        result = await confirm_payment(deps, claim)
    except errors.PaymentMismatch:
        # Recorded and announced by ConfirmPayment (a refund follows when money was taken);
        # nothing more to learn. The hold was not paid: past its end it ends, as an unpaid one
        # does (left pending, it was leased and asked about again at every pass).
        return await _after_mismatch(deps, reservation.reservation_id)
    return Reconciled(result.reservation, CheckoutAnswer.PAID, Step.CONFIRM, result.outcome)


async def _after_mismatch(deps: Dependencies, reservation_id: str) -> Reconciled:
    """Stop asking about a reservation whose checkout was paid in another amount or currency;
    end it if it is a hold past its end."""
    async with deps.uow() as uow:
        locked = await uow.holds.lock(reservation_id)
        assert locked is not None, "a reservation is never deleted"
        step, after = Step.DONE, locked.reservation
        if after.status is ReservationStatus.PENDING_PAYMENT and not after.holds_seat_at(
            locked.now
        ):
            step = Step.EXPIRE
            after = await uow.holds.release_hold(reservation_id, ReservationStatus.EXPIRED) or after
        await uow.reconciliation.asked(reservation_id, None, 0)
        await uow.commit()
    return Reconciled(after, CheckoutAnswer.PAID, step)


async def _apply(
    deps: Dependencies, candidate: ReconcileCandidate, answer: CheckoutAnswer
) -> Reconciled:
    """Act on an answer that settles nothing, under the reservation's row lock."""
    policy = deps.reconcile_policy
    async with deps.uow() as uow:
        locked = await uow.holds.lock(candidate.reservation.reservation_id)
        assert locked is not None, "a reservation is never deleted"
        held = locked.reservation
        step = next_step(held, answer, locked.now, candidate.hold_extended, policy)
        if step is Step.KEEP_HOLD:
            # Under the tier lock, as StartPaidRegistration counts: the ended hold is not
            # counted, so a free seat is one for it.
            step = keep_or_end(await uow.holds.lock_tier_seats(held.event_id, held.tier_id))
        after = await _carry_out(uow, candidate, step, policy.payment_grace)
        follow_up = policy.follow_up_after(candidate.attempts)
        asked_again = step in (Step.FOLLOW_UP, Step.EXPIRE_AND_FOLLOW_UP)
        await uow.reconciliation.asked(
            candidate.reservation.reservation_id,
            follow_up if asked_again else None,
            candidate.attempts + 1 if asked_again else candidate.attempts,
        )
        await uow.commit()
    return Reconciled(after or held, answer, step)


async def _carry_out(
    uow: UnitOfWork, candidate: ReconcileCandidate, step: Step, grace: timedelta
) -> Reservation | None:
    """The change a step makes to the reservation, if any; the reservation after it."""
    reservation_id = candidate.reservation.reservation_id
    if step is Step.KEEP_HOLD:
        return await uow.reconciliation.keep_hold(reservation_id, grace)
    if step in (Step.EXPIRE, Step.EXPIRE_AND_FOLLOW_UP):
        return await uow.holds.release_hold(reservation_id, ReservationStatus.EXPIRED)
    return None


def _as_raw_event(paid: CheckoutStatus) -> bytes:
    """What the payment service answered, kept with the payment as a callback's body is."""
    answer = {
        "source": "reconciliation",
        "checkoutId": paid.checkout_id,
        "reservationId": paid.reservation_id,
        "status": paid.status.value,
        "amount": paid.amount,
        "currency": paid.currency_code,
        "paymentId": paid.payment_id,
        "txId": paid.tx_id,
        "paidAt": paid.paid_time.isoformat() if paid.paid_time else None,
    }
    return json.dumps(answer, separators=(",", ":")).encode()
