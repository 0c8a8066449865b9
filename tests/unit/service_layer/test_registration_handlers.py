"""StartPaidRegistration, GetReservation and CancelReservation, every branch, on fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.fakes import FakeCheckouts, FakeDatabase, FakeReservations
from tests.unit.service_layer.conftest import EVENT, PRICE, later, paid_event, registration
from ticketing_service.domain import errors
from ticketing_service.domain.reservations import Answer, ReservationStatus
from ticketing_service.domain.settings import TicketingMode, Tier
from ticketing_service.service_layer.checkouts import (
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.refund_handlers import cancel_event
from ticketing_service.service_layer.registration_handlers import (
    cancel_reservation,
    find_reservation,
    get_reservation,
    start_paid_registration,
)


@pytest.fixture(autouse=True)
def an_event_on_sale(database: FakeDatabase) -> None:
    database.store.settings[EVENT] = paid_event(
        Tier("vip", "VIP", PRICE, capacity=1),
        Tier("free", "Free", 0, None),
        Tier("more", "More", PRICE, None),
    )


async def test_a_paid_tier_gets_a_hold_with_its_checkout_and_the_answers_kept(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    started = await start_paid_registration(deps, registration("user-1"))
    held = started.reservation
    assert started.requires_payment
    assert held is not None
    assert (held.status, held.amount, held.currency_code) == (
        ReservationStatus.PENDING_PAYMENT,
        PRICE,
        "KRW",
    )
    assert held.answers == (Answer("q1", "Vegan"),)
    assert held.checkout_url == f"https://pay.example/chk-{held.reservation_id}"
    assert held.expire_time - held.create_time == timedelta(seconds=600)
    [asked] = checkouts.asked
    assert asked.order_name == "Launch party - VIP"
    assert asked.success_url == f"https://moim.example/events/{EVENT}/register?payment=success"


async def test_a_free_tier_needs_no_payment_and_stores_nothing(
    deps: Dependencies, database: FakeDatabase
) -> None:
    started = await start_paid_registration(deps, registration("user-1", tier_id="free"))
    assert (started.requires_payment, started.reservation) == (False, None)
    assert database.store.reservations == {}


async def test_a_free_tier_of_a_cancelled_event_answers_event_cancelled(
    deps: Dependencies,
) -> None:
    await cancel_event(deps, EVENT, None)

    # A free tier takes no tier lock: only the settings' cancel time can refuse it.
    with pytest.raises(errors.EventCancelled):
        await start_paid_registration(deps, registration("user-1", tier_id="free"))


async def test_a_retry_of_the_same_tier_answers_the_same_hold_and_opens_no_second_checkout(
    deps: Dependencies, checkouts: FakeCheckouts
) -> None:
    first = await start_paid_registration(deps, registration("user-1"))
    again = await start_paid_registration(deps, registration("user-1"))
    assert again.reservation == first.reservation
    assert len(checkouts.asked) == 1


@pytest.mark.parametrize(
    ("setup", "command", "error"),
    [
        ("none", registration("u"), errors.EventNotFound),
        ("paid", registration("u", tier_id="missing"), errors.TierNotFound),
        ("disabled", registration("u"), errors.PaidTicketingNotEnabled),
        ("external", registration("u"), errors.PaidTicketingNotEnabled),
        ("no currency", registration("u"), errors.PaidTicketingCurrencyMissing),
        ("sale over", registration("u"), errors.TierNotOnSale),
    ],
)
async def test_an_event_or_tier_that_cannot_sell_is_refused(
    deps: Dependencies,
    database: FakeDatabase,
    setup: str,
    command: object,
    error: type[errors.TicketingError],
) -> None:
    settings = database.store.settings[EVENT]
    now = database.store.now
    changed = {
        "none": None,
        "paid": settings,
        "disabled": replace(settings, enabled=False),
        "external": replace(settings, mode=TicketingMode.EXTERNAL),
        "no currency": replace(settings, currency_code=None),
        "sale over": replace(
            settings, tiers=(Tier("vip", "VIP", PRICE, 1, sale_end_time=now - timedelta(1)),)
        ),
    }[setup]
    if changed is None:
        del database.store.settings[EVENT]
    else:
        database.store.settings[EVENT] = changed
    with pytest.raises(error):
        await start_paid_registration(deps, command)  # type: ignore[arg-type]  # a StartRegistration


@pytest.mark.parametrize("change", ["sale over", "retained", "external", "disabled"])
async def test_a_retry_gets_its_live_hold_once_the_tier_stopped_selling(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts, change: str
) -> None:
    first = await start_paid_registration(deps, registration("user-1"))
    settings = database.store.settings[EVENT]
    vip = settings.tiers[0]
    database.store.settings[EVENT] = {
        "sale over": replace(
            settings,
            tiers=(replace(vip, sale_end_time=database.store.now - timedelta(1)),),
        ),
        "retained": replace(settings, tiers=(replace(vip, retained=True),)),
        "external": replace(settings, mode=TicketingMode.EXTERNAL),
        "disabled": replace(settings, enabled=False),
    }[change]

    again = await start_paid_registration(deps, registration("user-1"))

    assert again.reservation == first.reservation
    assert len(checkouts.asked) == 1
    with pytest.raises((errors.TierNotOnSale, errors.PaidTicketingNotEnabled)):
        await start_paid_registration(deps, registration("user-2"))  # a new buyer is refused


@pytest.mark.parametrize("change", ["sale over", "sale not started", "retained"])
async def test_a_free_tier_outside_its_sale_is_not_on_sale(
    deps: Dependencies, database: FakeDatabase, change: str
) -> None:
    now = database.store.now
    free = Tier("free", "Free", 0, None)
    database.store.settings[EVENT] = paid_event(
        {
            "sale over": replace(free, sale_end_time=now - timedelta(1)),
            "sale not started": replace(free, sale_start_time=now + timedelta(1)),
            "retained": replace(free, retained=True),
        }[change]
    )
    with pytest.raises(errors.TierNotOnSale):
        await start_paid_registration(deps, registration("user-1", tier_id="free"))


async def test_a_tier_removed_while_its_lock_was_awaited_is_not_found_not_sold_out(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A settings save removing the tier commits while the buyer waits for the tier's lock: the
    # buyer was told SOLD_OUT (a tester's race, 39 of 40 runs), which no wait would change.
    locking = FakeReservations.lock_tier_seats

    async def removed_meanwhile(self: FakeReservations, event_id: str, tier_id: str) -> object:
        self._store.deleted_tiers.add((event_id, tier_id))  # in the transaction's view
        return await locking(self, event_id, tier_id)

    monkeypatch.setattr(FakeReservations, "lock_tier_seats", removed_meanwhile)
    with pytest.raises(errors.TierNotFound):
        await start_paid_registration(deps, registration("user-1"))


async def test_the_last_seat_taken_answers_sold_out(deps: Dependencies) -> None:
    await start_paid_registration(deps, registration("first"))
    with pytest.raises(errors.SoldOut):
        await start_paid_registration(deps, registration("second"))


async def test_a_full_tier_answers_sold_out_without_taking_its_lock(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_paid_registration(deps, registration("first"))

    async def lock_tier_seats(*_: object) -> None:
        raise AssertionError("a full tier's lock was waited for")

    monkeypatch.setattr(FakeReservations, "lock_tier_seats", lock_tier_seats)
    with pytest.raises(errors.SoldOut):
        await start_paid_registration(deps, registration("second"))


async def test_an_unlimited_tier_is_never_read_for_being_full(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def all_seats_taken(*_: object) -> bool:
        raise AssertionError("an unlimited tier was counted before its lock")

    monkeypatch.setattr(FakeReservations, "all_seats_taken", all_seats_taken)
    held = await start_paid_registration(deps, registration("first", tier_id="more"))
    assert held.reservation is not None


async def test_the_last_seat_taken_after_the_lock_free_read_answers_sold_out(
    deps: Dependencies, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start_paid_registration(deps, registration("first"))

    async def read_before_the_last_seat_went(*_: object) -> bool:
        return False

    monkeypatch.setattr(FakeReservations, "all_seats_taken", read_before_the_last_seat_went)
    with pytest.raises(errors.SoldOut):
        await start_paid_registration(deps, registration("second"))


async def test_a_registered_user_is_refused_and_a_hold_in_another_tier_is_pending(
    deps: Dependencies, database: FakeDatabase
) -> None:
    await start_paid_registration(deps, registration("user-1", tier_id="more"))
    with pytest.raises(errors.ReservationPending):
        await start_paid_registration(deps, registration("user-1"))
    database.store.registrations[(EVENT, "user-2")] = ("registration", "reservation")
    with pytest.raises(errors.AlreadyRegistered):
        await start_paid_registration(deps, registration("user-2"))


async def test_a_lapsed_hold_is_expired_and_a_new_one_made(
    deps: Dependencies, database: FakeDatabase
) -> None:
    first = await start_paid_registration(deps, registration("user-1"))
    later(database, 601)
    second = await start_paid_registration(deps, registration("user-1"))
    assert first.reservation is not None
    assert second.reservation is not None
    assert second.reservation.reservation_id != first.reservation.reservation_id
    lapsed = database.store.reservations[first.reservation.reservation_id]
    assert lapsed.status is ReservationStatus.EXPIRED


async def test_a_payment_service_outage_keeps_the_hold_for_a_retry(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    checkouts.fail_with = PaymentServiceUnreachable
    with pytest.raises(errors.PaymentServiceUnavailable):
        await start_paid_registration(deps, registration("user-1"))
    [kept] = database.store.reservations.values()
    assert (kept.status, kept.checkout_id) == (ReservationStatus.PENDING_PAYMENT, None)
    checkouts.fail_with = None
    retried = await start_paid_registration(deps, registration("user-1"))
    assert retried.reservation is not None
    assert retried.reservation.reservation_id == kept.reservation_id


async def test_a_refused_checkout_cancels_the_hold_and_frees_the_seat(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    checkouts.fail_with = PaymentServiceRefused
    with pytest.raises(errors.CheckoutRejected):
        await start_paid_registration(deps, registration("user-1"))
    [cancelled] = database.store.reservations.values()
    assert cancelled.status is ReservationStatus.CANCELLED
    checkouts.fail_with = None
    assert (await start_paid_registration(deps, registration("user-2"))).requires_payment


async def test_a_hold_cancelled_while_its_checkout_is_opened_gets_no_url(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    async def cancel_meanwhile() -> None:
        [held] = database.store.reservations.values()
        await cancel_reservation(deps, held.reservation_id, held.user_id)

    checkouts.meanwhile.append(cancel_meanwhile)
    with pytest.raises(errors.ConcurrentUpdate):
        await start_paid_registration(deps, registration("user-1"))
    [held] = database.store.reservations.values()
    assert (held.status, held.checkout_url) == (ReservationStatus.CANCELLED, None)


async def test_get_reads_a_reservation_and_an_unknown_id_is_not_found(
    deps: Dependencies,
) -> None:
    started = await start_paid_registration(deps, registration("user-1"))
    assert started.reservation is not None
    read = await get_reservation(deps, started.reservation.reservation_id)
    assert read == started.reservation
    with pytest.raises(errors.ReservationNotFound):
        await get_reservation(deps, "00000000-0000-4000-8000-000000000000")


async def test_only_the_owner_cancels_only_a_pending_hold_and_twice_is_harmless(
    deps: Dependencies, database: FakeDatabase
) -> None:
    started = await start_paid_registration(deps, registration("owner"))
    assert started.reservation is not None
    reservation_id = started.reservation.reservation_id
    with pytest.raises(errors.NotReservationOwner):
        await cancel_reservation(deps, reservation_id, "other")
    cancelled = await cancel_reservation(deps, reservation_id, "owner")
    assert cancelled.status is ReservationStatus.CANCELLED
    assert await cancel_reservation(deps, reservation_id, "owner") == cancelled
    with pytest.raises(errors.ReservationNotFound):
        await cancel_reservation(deps, "00000000-0000-4000-8000-000000000000", "owner")
    stored = database.store.reservations[reservation_id]
    database.store.reservations[reservation_id] = replace(
        stored, status=ReservationStatus.CONFIRMED
    )
    with pytest.raises(errors.ReservationNotCancellable):
        await cancel_reservation(deps, reservation_id, "owner")


async def test_find_answers_the_latest_reservation_of_the_user_or_not_found(
    deps: Dependencies, database: FakeDatabase
) -> None:
    first = await start_paid_registration(deps, registration("user-1"))
    later(database, 601)
    second = await start_paid_registration(deps, registration("user-1"))
    assert first.reservation is not None
    assert second.reservation is not None
    assert await find_reservation(deps, EVENT, "user-1") == second.reservation
    with pytest.raises(errors.ReservationNotFound):
        await find_reservation(deps, EVENT, "nobody")
