"""Use cases of seat holds: StartPaidRegistration, Get/FindReservation, CancelReservation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ticketing_service.domain import errors
from ticketing_service.domain.reservations import (
    Answer,
    Reservation,
    ReservationStatus,
    drop_blank_answers,
    return_urls,
)
from ticketing_service.domain.settings import Settings, TicketingMode, Tier
from ticketing_service.service_layer.checkouts import (
    CheckoutRequest,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.ports import UnitOfWork


@dataclass(frozen=True, slots=True)
class StartRegistration:
    """A user's request for a seat in a tier, with what the checkout page shows."""

    event_id: str
    tier_id: str
    user_id: str
    customer_name: str | None
    customer_email: str | None
    answers: tuple[Answer, ...]
    success_url: str | None
    cancel_url: str | None


@dataclass(frozen=True, slots=True)
class StartResult:
    """Whether payment is needed, and the hold with its checkout when it is."""

    requires_payment: bool
    reservation: Reservation | None


async def start_paid_registration(deps: Dependencies, command: StartRegistration) -> StartResult:
    """Hold a seat and open (or reuse) its checkout; free tiers need neither."""
    held = await _hold_seat(deps, command)
    if held is None:
        return StartResult(requires_payment=False, reservation=None)
    reservation, order_name = held
    if reservation.checkout_url is None:
        reservation = await _open_checkout(deps, reservation, order_name)
    return StartResult(requires_payment=True, reservation=reservation)


async def _hold_seat(
    deps: Dependencies, command: StartRegistration
) -> tuple[Reservation, str] | None:
    async with deps.uow() as uow:
        settings = _event_on(await uow.settings.get(command.event_id), command.event_id)
        tier = _tier(settings, command.tier_id)
        if not tier.is_paid:
            _check_on_sale(settings, tier)
            return None
        order_name = f"{settings.event_title or settings.event_id} - {tier.name}"
        # Lock order: the user at the event, then their pending hold, then the tier. Settings
        # updates take the event, then tiers; ConfirmPayment takes a reservation, then its
        # tier. No path takes them in another order, so none can wait on another in a cycle.
        await uow.holds.lock_user(command.event_id, command.user_id)
        existing = await _reusable_hold(uow, command)
        if existing is not None:
            # A retry gets its hold even once the tier stopped selling (its sale ended, it
            # was removed, the event left paid ticketing): the hold is still payable.
            return existing, order_name
        _check_paid_sale(settings, tier)
        # A full tier answers at once: in a rush most buyers find it full, and queueing each of
        # them on the tier's lock only to count it again would make the buyers behind them wait
        # too. A seat is still only ever given under the lock, after counting there.
        limited = tier.capacity is not None
        if limited and await uow.holds.all_seats_taken(command.event_id, tier.tier_id):
            raise _sold_out(tier)
        seats = await uow.holds.lock_tier_seats(command.event_id, tier.tier_id)
        if seats.event_cancelled:
            raise _event_cancelled(command.event_id)
        if seats.deleted:  # removed by a settings save that committed while this one waited
            raise errors.TierNotFound("The event has no such tier.", tierId=tier.tier_id)
        if not seats.has_free_seat:
            raise _sold_out(tier)
        reservation = await uow.holds.insert(
            _new_reservation(deps, command, settings, tier), deps.hold_seconds
        )
        await uow.commit()
    return reservation, order_name


def _event_on(settings: Settings | None, event_id: str) -> Settings:
    """The event's settings; an error when it has none or was cancelled."""
    if settings is None:
        raise errors.EventNotFound("The event has no ticketing settings.", eventId=event_id)
    if settings.cancel_time is not None:
        raise _event_cancelled(event_id)
    return settings


def _tier(settings: Settings, tier_id: str) -> Tier:
    """The tier asked for; TierNotFound when the event has none such."""
    tier = settings.tier(tier_id)
    if tier is None:
        raise errors.TierNotFound("The event has no such tier.", tierId=tier_id)
    return tier


def _check_paid_sale(settings: Settings, tier: Tier) -> None:
    """An error unless a new seat of this paid tier can be sold now."""
    if settings.mode is not TicketingMode.PAID or not settings.enabled:
        raise errors.PaidTicketingNotEnabled(
            "The event does not take payments through this service.", eventId=settings.event_id
        )
    if settings.currency_code is None:
        raise errors.PaidTicketingCurrencyMissing(
            "The event has paid tiers but no currency; save its settings with a currency.",
            eventId=settings.event_id,
        )
    _check_on_sale(settings, tier)


def _check_on_sale(settings: Settings, tier: Tier) -> None:
    """TierNotOnSale outside the tier's sale window, or once it is retained (free or paid)."""
    if not tier.is_on_sale(datetime.now(UTC), settings.event_start_time):
        raise errors.TierNotOnSale("The tier is not on sale now.", tierId=tier.tier_id)


def _sold_out(tier: Tier) -> errors.SoldOut:
    return errors.SoldOut("Every seat of the tier is taken or held.", tierId=tier.tier_id)


def _event_cancelled(event_id: str) -> errors.EventCancelled:
    return errors.EventCancelled("The organizer cancelled the event.", eventId=event_id)


async def _reusable_hold(uow: UnitOfWork, command: StartRegistration) -> Reservation | None:
    """The user's live hold for this tier (a retry); errors for any other standing."""
    # The pending hold is locked before registrations are read: a confirmation of that hold
    # needs the same row lock, so it either committed before (and its registration is seen
    # below) or waits until we are done. Read the other way round, a confirmation committing
    # between the two reads would let an already registered user take a second seat.
    locked = await uow.holds.lock_pending_of(command.event_id, command.user_id)
    if await uow.holds.registration_id_of(command.event_id, command.user_id):
        raise errors.AlreadyRegistered(
            "The user already has a seat at this event.", eventId=command.event_id
        )
    if locked is None:
        return None
    held = locked.reservation
    if not held.holds_seat_at(locked.now):
        await uow.holds.release_hold(held.reservation_id, ReservationStatus.EXPIRED)
        return None
    if held.tier_id == command.tier_id:
        return held
    raise errors.ReservationPending(
        "The user holds a seat in another tier of this event; cancel it first.",
        reservationId=held.reservation_id,
    )


def _new_reservation(
    deps: Dependencies, command: StartRegistration, settings: Settings, tier: Tier
) -> Reservation:
    success_url, cancel_url = return_urls(deps.public_base_url, command.event_id)
    placeholder = datetime.now(UTC)  # the database stamps create and expire times
    assert settings.currency_code is not None
    return Reservation(
        reservation_id=str(uuid.uuid4()),
        event_id=command.event_id,
        tier_id=tier.tier_id,
        user_id=command.user_id,
        status=ReservationStatus.PENDING_PAYMENT,
        amount=tier.price_amount,
        currency_code=settings.currency_code,
        provider=settings.provider or "portone",
        provider_account_id=settings.provider_account_id,
        answers=drop_blank_answers(command.answers),
        customer_name=command.customer_name,
        customer_email=command.customer_email,
        success_url=command.success_url or success_url,
        cancel_url=command.cancel_url or cancel_url,
        create_time=placeholder,
        expire_time=placeholder,
    )


async def _open_checkout(deps: Dependencies, held: Reservation, order_name: str) -> Reservation:
    """Ask the payment service for the checkout; the idempotency key makes retries safe."""
    try:
        checkout = await deps.payment_service.create_checkout(
            _checkout_request(deps, held, order_name)
        )
    except PaymentServiceUnreachable as error:
        # The hold stays: a retry finds it and asks again with the same idempotency key.
        raise errors.PaymentServiceUnavailable(
            "The payment service is unavailable; the seat stays held, retry shortly.",
            reservationId=held.reservation_id,
        ) from error
    except PaymentServiceRefused as error:
        async with deps.uow() as uow:
            await uow.holds.release_hold(held.reservation_id, ReservationStatus.CANCELLED)
            await uow.commit()
        raise errors.CheckoutRejected(
            "The payment service refused the checkout; the hold was released.",
            reservationId=held.reservation_id,
        ) from error
    async with deps.uow() as uow:
        reservation = await uow.holds.attach_checkout(held.reservation_id, checkout)
        await uow.commit()
    if reservation is None:
        # Cancelled or expired while the payment service was asked: no URL to pay at is given
        # out. A retry makes a new hold (and checkout) if the user still wants a seat.
        raise errors.ConcurrentUpdate(
            "The hold was released while its checkout was opened; retry to hold a seat again.",
            reservationId=held.reservation_id,
        )
    return reservation


def _checkout_request(deps: Dependencies, held: Reservation, order_name: str) -> CheckoutRequest:
    return CheckoutRequest(
        reservation_id=held.reservation_id,
        event_id=held.event_id,
        tier_id=held.tier_id,
        order_name=order_name,
        amount=held.amount,
        currency_code=held.currency_code,
        provider=held.provider,
        user_id=held.user_id,
        customer_name=held.customer_name,
        customer_email=held.customer_email,
        success_url=held.success_url,
        cancel_url=held.cancel_url,
        callback_url=deps.callback_url,
        expire_time=held.expire_time,
    )


async def get_reservation(deps: Dependencies, reservation_id: str) -> Reservation:
    """A reservation as stored now."""
    async with deps.uow() as uow:
        uow.read_one_snapshot()  # the reservation and its refunds, from one moment
        reservation = await uow.holds.get(reservation_id)
        if reservation is None:
            raise errors.ReservationNotFound(
                "No reservation has this id.", reservationId=reservation_id
            )
        return await with_refunds(uow, reservation)


async def find_reservation(deps: Dependencies, event_id: str, user_id: str) -> Reservation:
    """The user's most recently made reservation for the event."""
    async with deps.uow() as uow:
        uow.read_one_snapshot()  # the reservation and its refunds, from one moment
        reservation = await uow.holds.latest_of(event_id, user_id)
        if reservation is None:
            raise errors.ReservationNotFound(
                "The user has no reservation for this event.", eventId=event_id, userId=user_id
            )
        return await with_refunds(uow, reservation)


async def with_refunds(uow: UnitOfWork, reservation: Reservation) -> Reservation:
    """The reservation with its refunds, read in the same transaction (a read-only one reads
    them from the same moment as the reservation: `read_one_snapshot`)."""
    refunds = await uow.refunds.of_reservation(reservation.reservation_id)
    return replace(reservation, refunds=tuple(refunds))


async def cancel_reservation(deps: Dependencies, reservation_id: str, user_id: str) -> Reservation:
    """Release the owner's pending hold; cancelling twice answers the cancelled reservation."""
    async with deps.uow() as uow:
        locked = await uow.holds.lock(reservation_id)
        if locked is None:
            raise errors.ReservationNotFound(
                "No reservation has this id.", reservationId=reservation_id
            )
        held = locked.reservation
        if held.user_id != user_id:
            raise errors.NotReservationOwner(
                "The reservation belongs to another user.", reservationId=reservation_id
            )
        if held.status is ReservationStatus.CANCELLED:
            return held
        released = await uow.holds.release_hold(reservation_id, ReservationStatus.CANCELLED)
        if released is None:
            raise errors.ReservationNotCancellable(
                f"A {held.status.value} reservation cannot be cancelled.",
                reservationId=reservation_id,
            )
        await uow.commit()
    return released
