"""The sweeper's batches on fakes: every overdue hold expired, every confirmed seat folded."""

from __future__ import annotations

import pytest

from tests.fakes import FakeCheckouts, FakeDatabase
from tests.unit.service_layer.conftest import EVENT, PRICE, later, paid_event, registration
from ticketing_service.domain import errors
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reservations import ReservationStatus
from ticketing_service.domain.settings import Tier
from ticketing_service.service_layer.checkouts import PaymentServiceUnreachable
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.expiry import expire_overdue_holds
from ticketing_service.service_layer.registration_handlers import start_paid_registration


async def hold_without_checkout(deps: Dependencies, user_id: str) -> None:
    """A hold whose checkout could not be opened (the payment service was away)."""
    with pytest.raises(errors.PaymentServiceUnavailable):
        await start_paid_registration(deps, registration(user_id))


async def test_overdue_holds_are_expired_in_batches_and_live_ones_kept(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    database.store.settings[EVENT] = paid_event(Tier("vip", "VIP", PRICE, None))
    checkouts.fail_with = PaymentServiceUnreachable
    for user in range(5):
        await hold_without_checkout(deps, f"lapsed-{user}")
    later(database, 601)
    await hold_without_checkout(deps, "live")

    assert await expire_overdue_holds(deps, batch_size=2) == 5

    statuses = sorted(r.status for r in database.store.reservations.values())
    assert statuses == [ReservationStatus.EXPIRED] * 5 + [ReservationStatus.PENDING_PAYMENT]
    expired_commits = [
        c.events.get(RegistrationEventType.RESERVATION_EXPIRED, 0) for c in database.committed[-3:]
    ]
    assert expired_commits == [2, 2, 1]  # one short transaction per batch


async def test_an_overdue_hold_with_a_checkout_is_left_to_reconciliation(
    deps: Dependencies, database: FakeDatabase
) -> None:
    database.store.settings[EVENT] = paid_event(Tier("vip", "VIP", PRICE, None))
    await start_paid_registration(deps, registration("payer"))
    later(database, 601)
    assert await expire_overdue_holds(deps) == 0
