"""Steps of the paid registration flow, shared by the lifecycle tests."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.postgres import sql as sql  # the tests import it from here with the flow steps

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )

EVENT = "launch-party"
PRICE = 30000
# Far above what a running service's background passes need: only a broken run waits this long.
GUARD_SECONDS = 30


async def configure_event(
    stub: Stub, *tiers: settings_pb2.TierInput, currency: str = "", event_id: str = EVENT
) -> None:
    """Save an event whose tiers are `tiers` (a paid VIP tier of capacity 2 by default)."""
    tiers = tiers or (paid_tier("vip", capacity=2),)
    await stub.UpdateTicketingSettings(
        pb.UpdateTicketingSettingsRequest(
            event_id=event_id, event_title="Launch party", tiers=tiers, currency_code=currency
        )
    )


def paid_tier(
    tier_id: str, price: int = PRICE, capacity: int | None = None
) -> settings_pb2.TierInput:
    tier = settings_pb2.TierInput(tier_id=tier_id, name=tier_id.upper(), price_amount=price)
    if capacity is not None:
        tier.capacity = capacity
    return tier


async def start(
    stub: Stub, user_id: str, tier_id: str = "vip", **fields: Any
) -> pb.StartPaidRegistrationResponse:
    fields.setdefault("event_id", EVENT)
    return await stub.StartPaidRegistration(
        pb.StartPaidRegistrationRequest(tier_id=tier_id, user_id=user_id, **fields)
    )


async def hold(stub: Stub, user_id: str, tier_id: str = "vip") -> reservation_pb2.Reservation:
    """A live hold with its checkout, as StartPaidRegistration returns it."""
    response = await start(stub, user_id, tier_id)
    assert response.requires_payment
    return response.reservation


def payment_for(
    reservation: reservation_pb2.Reservation, **overrides: Any
) -> pb.ConfirmPaymentRequest:
    """The ConfirmPayment the payment service sends for a reservation it was paid for."""
    fields: dict[str, Any] = {
        "reservation_id": reservation.reservation_id,
        "checkout_id": reservation.checkout_id,
        "payment_id": f"pay-{reservation.reservation_id}",
        "tx_id": "tx-1",
        "provider": "portone",
        "amount": reservation.amount,
        "currency_code": reservation.currency_code,
        "raw_event": b'{"type":"ticket_payment.paid"}',
    }
    return pb.ConfirmPaymentRequest(**(fields | overrides))


def end_hold(database_url: str, reservation_id: str) -> None:
    """Make a hold overdue, as if its time had run out (the sweeper has not run)."""
    sql(
        database_url,
        "UPDATE reservations SET expire_time = now() - interval '1 second'"
        " WHERE reservation_id = $1",
        reservation_id,
    )


def status_of(database_url: str, reservation_id: str) -> str:
    [(status,)] = sql(
        database_url, "SELECT status FROM reservations WHERE reservation_id = $1", reservation_id
    )
    return str(status)


async def status_becomes(stub: Stub, reservation_id: str, status: int) -> float:
    """Seconds until the reservation has `status` (polled; bounded by the guard)."""
    began = time.monotonic()
    request = pb.GetReservationRequest(reservation_id=reservation_id)
    async with asyncio.timeout(GUARD_SECONDS):
        while True:  # the server's state: polled, bounded by the guard
            if (await stub.GetReservation(request)).reservation.status == status:
                return time.monotonic() - began
            await asyncio.sleep(0.05)
