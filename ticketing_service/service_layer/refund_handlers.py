"""Use cases of giving money back: CancelRegistration, RefundReservation, CancelEvent and
GetEventCancellation (SPEC §10).

Every refund is written in the same transaction as the change that owes it, under the
reservation's row lock: two refunds of one payment queue on that lock, so the second sees the
first and the refunds that did not fail can never add up to more than was paid. The refund
worker (`refund_worker.py`) sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ticketing_service.domain import errors
from ticketing_service.domain.refunds import (
    EventCancellation,
    Refund,
    RefundReason,
    amount_to_refund,
    refund_amount,
    refund_percent,
    refundable,
)
from ticketing_service.domain.reservations import (
    LockedReservation,
    Reservation,
    ReservationStatus,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.ports import OwedRefund, UnitOfWork
from ticketing_service.service_layer.registration_handlers import with_refunds

# The reasons an organizer or operator may give; the others are the service's own.
REQUESTABLE_REASONS = frozenset(
    {
        RefundReason.ORGANIZER,
        RefundReason.GOODWILL,
        RefundReason.PAID_UNFULFILLED,
        RefundReason.DUPLICATE,
    }
)
# Reservations a payment settled, which can be refunded.
_PAID = frozenset(
    {
        ReservationStatus.CONFIRMED,
        ReservationStatus.PAID_UNFULFILLED,
        ReservationStatus.REGISTRATION_CANCELLED,
    }
)


@dataclass(frozen=True, slots=True)
class RefundResult:
    """The reservation after the change (with its refunds), and the refund made, if one was."""

    reservation: Reservation
    refund: Refund | None


@dataclass(frozen=True, slots=True)
class RefundCommand:
    """An organizer's refund of (part of) a reservation's payment; amount 0: all that is left."""

    reservation_id: str
    amount: int
    reason: RefundReason
    release_seat: bool
    request_id: str


async def cancel_registration(
    deps: Dependencies, reservation_id: str, user_id: str, request_id: str | None
) -> RefundResult:
    """The owner gives up a confirmed seat: it is back on sale, the policy's refund is owed."""
    async with deps.uow() as uow:
        locked = await _lock(uow, reservation_id)
        held = locked.reservation
        if held.user_id != user_id:
            raise errors.NotReservationOwner(
                "The reservation belongs to another user.", reservationId=reservation_id
            )
        if held.status is ReservationStatus.REGISTRATION_CANCELLED:
            # A repeat: the same answer, nothing written.
            reservation = await with_refunds(uow, held)
            return RefundResult(reservation, _cancellation_refund(reservation))
        if held.status is not ReservationStatus.CONFIRMED:
            raise errors.RegistrationNotCancellable(
                f"A {held.status.value} reservation has no seat to give up"
                " (a hold is cancelled with CancelReservation).",
                reservationId=reservation_id,
            )
        earlier = await uow.refunds.by_request(reservation_id, request_id) if request_id else None
        if earlier is not None:  # the id already named an organizer's refund of this reservation
            raise _request_id_reused()
        if await uow.cancellations.event_cancelled(held.event_id, held.tier_id):
            # CancelEvent came first and its batches had not reached this seat yet: it goes
            # back as they would give it back, in full, and counts as done by them.
            result = await _release_and_refund(
                uow, locked, RefundReason.EVENT_CANCELLED, 100, request_id
            )
            await uow.cancellations.finish(held.event_id, 1)
        else:
            settings = await uow.settings.get(held.event_id)
            assert settings is not None, "a reservation's event has settings"
            percent = refund_percent(settings.refund_policy, settings.event_start_time, locked.now)
            result = await _release_and_refund(
                uow, locked, RefundReason.CANCELLATION, percent, request_id
            )
        await uow.commit()
    return result


async def refund_reservation(deps: Dependencies, command: RefundCommand) -> RefundResult:
    """Refund all or part of a reservation's payment, and release its seat if asked."""
    if command.reason not in REQUESTABLE_REASONS:
        raise errors.InvalidArgument(
            [
                errors.FieldViolation(
                    "reason", "Give one of organizer, goodwill, paid_unfulfilled or duplicate."
                )
            ]
        )
    async with deps.uow() as uow:
        locked = await _lock(uow, command.reservation_id)
        repeat = await uow.refunds.by_request(command.reservation_id, command.request_id)
        if repeat is not None:
            return await _repeated_refund(uow, locked, repeat, command)
        held = locked.reservation
        if held.status not in _PAID or held.payment_id is None or held.checkout_id is None:
            raise errors.RegistrationNotCancellable(
                f"A {held.status.value} reservation has no payment to refund.",
                reservationId=command.reservation_id,
            )
        left = refundable(held.amount, await _refunds_of_payment(uow, held))
        try:
            amount = amount_to_refund(command.amount, left)
        except ValueError:
            raise errors.RefundExceedsPaid(
                f"{left} of the payment is left to refund.",
                reservationId=command.reservation_id,
                refundable=str(left),
            ) from None
        releasing = command.release_seat and held.status is ReservationStatus.CONFIRMED
        event_cancelled = releasing and await uow.cancellations.event_cancelled(
            held.event_id, held.tier_id
        )
        if releasing:
            held = await uow.cancellations.cancel_registration(held.reservation_id)
        refund = await uow.refunds.owe(
            _owed(held, amount, command.reason, command.request_id, command.release_seat)
        )
        if event_cancelled:
            # Released before the event's cancellation reached it: the rest of the payment is
            # owed as that cancellation would have owed it, and the seat counts as done by it.
            if left > amount:
                rest = _owed(held, left - amount, RefundReason.EVENT_CANCELLED, None, False)
                await uow.refunds.owe(rest)
            await uow.cancellations.finish(held.event_id, 1)
        reservation = await with_refunds(uow, held)
        await uow.commit()
    return RefundResult(reservation, refund)


async def cancel_event(
    deps: Dependencies, event_id: str, request_id: str | None
) -> EventCancellation:
    """Stop the event's sales now; the cancellation worker cancels the rest in batches."""
    async with deps.uow() as uow:
        if await uow.settings.get(event_id) is None:
            raise errors.EventNotFound("The event has no ticketing settings.", eventId=event_id)
        # The event, then its tiers: the order settings updates take them in.
        await uow.settings.lock_event(event_id)
        await uow.cancellations.cancel_event(event_id, request_id)
        progress = await uow.cancellations.progress(event_id)
        await uow.commit()
    assert progress is not None, "the event was just cancelled"
    return progress


async def get_event_cancellation(deps: Dependencies, event_id: str) -> EventCancellation:
    """How far the event's cancellation is."""
    async with deps.uow() as uow:
        progress = await uow.cancellations.progress(event_id)
        # Only when there is none: an unknown event is told apart from one never cancelled.
        unknown = progress is None and await uow.settings.get(event_id) is None
    if unknown:
        raise errors.EventNotFound("The event has no ticketing settings.", eventId=event_id)
    if progress is None:
        raise errors.EventNotCancelled("The event was not cancelled.", eventId=event_id)
    return progress


async def cancel_batch(deps: Dependencies, limit: int) -> int:
    """Cancel up to `limit` live holds and registrations of an event being cancelled, the
    registrations with a full refund; how many (0 when nothing is left anywhere)."""
    async with deps.uow() as uow:
        batch = await uow.cancellations.next_batch(limit)
        if batch is None:
            return 0
        event_id, locked = batch
        for one in locked:
            await _cancel_for_event(uow, one)
        await uow.cancellations.finish(event_id, len(locked))
        await uow.commit()
    return len(locked)


async def _cancel_for_event(uow: UnitOfWork, locked: LockedReservation) -> None:
    held = locked.reservation
    if held.status is ReservationStatus.PENDING_PAYMENT:
        await uow.holds.release_hold(held.reservation_id, ReservationStatus.CANCELLED)
    else:
        await _release_and_refund(uow, locked, RefundReason.EVENT_CANCELLED, 100, None)


async def _release_and_refund(
    uow: UnitOfWork,
    locked: LockedReservation,
    reason: RefundReason,
    percent: int,
    request_id: str | None,
) -> RefundResult:
    """Cancel a confirmed registration and owe `percent` of its payment (what is left of it)."""
    held = locked.reservation
    left = refundable(held.amount, await _refunds_of_payment(uow, held))
    amount = min(refund_amount(held.amount, percent), left)
    cancelled = await uow.cancellations.cancel_registration(held.reservation_id)
    refund = None
    if amount > 0:
        refund = await uow.refunds.owe(_owed(cancelled, amount, reason, request_id, False))
    return RefundResult(await with_refunds(uow, cancelled), refund)


async def _repeated_refund(
    uow: UnitOfWork, locked: LockedReservation, refund: Refund, command: RefundCommand
) -> RefundResult:
    """The answer to a RefundReservation seen before; the same id asking otherwise is refused."""
    asked = (command.amount or refund.amount, command.reason, command.release_seat)
    if asked != (refund.amount, refund.reason, refund.release_seat):
        raise _request_id_reused()
    return RefundResult(await with_refunds(uow, locked.reservation), refund)


def _request_id_reused() -> errors.InvalidArgument:
    return errors.InvalidArgument(
        [
            errors.FieldViolation(
                "request_id", "This request_id was used for another refund of the reservation."
            )
        ]
    )


async def _lock(uow: UnitOfWork, reservation_id: str) -> LockedReservation:
    locked = await uow.holds.lock(reservation_id)
    if locked is None:
        raise errors.ReservationNotFound(
            "No reservation has this id.", reservationId=reservation_id
        )
    return locked


async def _refunds_of_payment(uow: UnitOfWork, held: Reservation) -> list[Refund]:
    refunds = await uow.refunds.of_reservation(held.reservation_id)
    return replace(held, refunds=tuple(refunds)).refunds_of_payment()


def _cancellation_refund(reservation: Reservation) -> Refund | None:
    """The refund a cancellation of the registration made, if it made one."""
    reasons = (RefundReason.CANCELLATION, RefundReason.EVENT_CANCELLED)
    return next((r for r in reservation.refunds if r.reason in reasons), None)


def _owed(
    held: Reservation,
    amount: int,
    reason: RefundReason,
    request_id: str | None,
    release_seat: bool,
) -> OwedRefund:
    assert held.payment_id is not None, "a paid reservation"
    assert held.checkout_id is not None, "a paid reservation"
    return OwedRefund(
        reservation_id=held.reservation_id,
        payment_id=held.payment_id,
        checkout_id=held.checkout_id,
        amount=amount,
        currency_code=held.currency_code,
        reason=reason,
        request_id=request_id,
        release_seat=release_seat,
    )
