"""The expiry sweeper: overdue holds expire in batches, skipping rows locked elsewhere."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.flows import (
    configure_event,
    end_hold,
    hold,
    paid_tier,
    payment_for,
    sql,
    start,
)
from tests.integration.test_start_paid_registration import failure
from tests.postgres import open_transaction
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.expiry import expire_overdue_holds, fold_confirmed_seats

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )


def add_overdue_holds(database_url: str, count: int) -> None:
    sql(
        database_url,
        "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
        " currency_code, provider, success_url, cancel_url, expire_time)"
        " SELECT gen_random_uuid(), 'launch-party', 'vip', 'bulk-' || n, 'pending_payment', 1,"
        " 'KRW', 'portone', 's', 'c', now() - interval '1 minute' FROM generate_series(1, $1) n",
        count,
    )


async def test_overdue_holds_expire_in_batches_and_live_ones_stay(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip"))
    live = await hold(stub, "live")
    add_overdue_holds(database_url, 250)
    assert await expire_overdue_holds(deps, batch_size=100) == 250
    assert sql(
        database_url, "SELECT status, count(*) FROM reservations GROUP BY status ORDER BY status"
    ) == [("expired", 250), ("pending_payment", 1)]
    assert await expire_overdue_holds(deps, batch_size=100) == 0
    assert sql(
        database_url,
        "SELECT status FROM reservations WHERE reservation_id = $1",
        live.reservation_id,
    ) == [("pending_payment",)]


async def test_the_sweeper_skips_a_hold_another_transaction_has_locked(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip"))
    add_overdue_holds(database_url, 4)
    async with open_transaction(database_url) as other:
        await other.execute("SELECT 1 FROM reservations WHERE user_id = 'bulk-1' FOR UPDATE")
        assert await expire_overdue_holds(deps) == 3
    assert await expire_overdue_holds(deps) == 1


async def test_an_overdue_hold_with_a_checkout_is_left_to_reconciliation(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    # It may have been paid with the callback lost: reconciliation asks before it expires it.
    await configure_event(stub, paid_tier("vip"))
    with_checkout = await hold(stub, "payer")
    end_hold(database_url, with_checkout.reservation_id)
    assert await expire_overdue_holds(deps) == 0
    assert sql(database_url, "SELECT status FROM reservations") == [("pending_payment",)]


async def test_folding_moves_confirmed_seats_to_the_tier_without_changing_seat_counts(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=3))
    for user in ("a", "b"):
        await stub.ConfirmPayment(payment_for(await hold(stub, user)))
    assert sql(database_url, "SELECT accepted_count FROM tiers") == [(0,)]
    assert await fold_confirmed_seats(deps) == 2
    assert await fold_confirmed_seats(deps) == 0
    assert sql(database_url, "SELECT accepted_count FROM tiers") == [(2,)]
    settings = await stub.GetTicketingSettings(
        pb.GetTicketingSettingsRequest(event_id="launch-party")
    )
    assert settings.settings.tiers[0].accepted_count == 2
    await hold(stub, "c")

    assert (await failure(start(stub, "d")))[1] == "SOLD_OUT"


async def test_one_sweeper_folds_at_a_time_and_the_others_skip_instead_of_waiting(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    # A fold updates every tier its batch touches, in no set order: two folding at once could
    # deadlock on two tiers (and draw a StartPaidRegistration queued for one into the cycle).
    await configure_event(stub, paid_tier("vip", capacity=5), paid_tier("std", capacity=5))
    for user, tier in (("a", "vip"), ("b", "std"), ("c", "vip")):
        await stub.ConfirmPayment(payment_for(await hold(stub, user, tier)))
    async with deps.uow() as first:
        assert await first.sweeps.fold_confirmed_seats(1) == 1  # and holds its tier
        # Without the lock, this one would fold the others: blocking on the first one's tier,
        # or taking a second tier while the first one is still going.
        async with asyncio.timeout(5):
            assert await fold_confirmed_seats(deps) == 0
        await first.commit()
    assert await fold_confirmed_seats(deps) == 2
    assert sql(database_url, "SELECT sum(accepted_count) FROM tiers") == [(3,)]
