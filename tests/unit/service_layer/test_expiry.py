"""The sweeper's batches on fakes: every overdue hold expired, every confirmed seat folded."""

from __future__ import annotations

from tests.fakes import FakeDatabase
from tests.unit.service_layer.conftest import EVENT, PRICE, later, paid_event, registration
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.reservations import ReservationStatus
from ticketing_service.domain.settings import Tier
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.expiry import expire_overdue_holds
from ticketing_service.service_layer.registration_handlers import start_paid_registration


async def test_overdue_holds_are_expired_in_batches_and_live_ones_kept(
    deps: Dependencies, database: FakeDatabase
) -> None:
    database.store.settings[EVENT] = paid_event(Tier("vip", "VIP", PRICE, None))
    for user in range(5):
        await start_paid_registration(deps, registration(f"lapsed-{user}"))
    later(database, 601)
    await start_paid_registration(deps, registration("live"))

    assert await expire_overdue_holds(deps, batch_size=2) == 5

    statuses = sorted(r.status for r in database.store.reservations.values())
    assert statuses == [ReservationStatus.EXPIRED] * 5 + [ReservationStatus.PENDING_PAYMENT]
    expired_commits = [
        c.events.get(RegistrationEventType.RESERVATION_EXPIRED, 0) for c in database.committed[-3:]
    ]
    assert expired_commits == [2, 2, 1]  # one short transaction per batch
