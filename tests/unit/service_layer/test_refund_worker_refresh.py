"""RefreshRefund of a refund failed without the payment service's word on it (`outcome_unknown`):
asked again, and corrected by what it says, every branch, on fakes of the ports."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.fakes import FakeCheckouts, FakeDatabase
from tests.unit.service_layer.conftest import PRICE
from tests.unit.service_layer.test_payment_handlers import hold, paying
from tests.unit.service_layer.test_refund_handlers import refund
from tests.unit.service_layer.test_refund_worker import (
    attempts_used_up,
    later,
    owed,
    stored,
)
from ticketing_service.domain import errors
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.refunds import OUTCOME_UNKNOWN, Refund, RefundStatus
from ticketing_service.service_layer.checkouts import (
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.payment_handlers import confirm_payment
from ticketing_service.service_layer.refund_handlers import refund_reservation
from ticketing_service.service_layer.refund_worker import (
    AMOUNT_MISMATCH_CODE,
    MAX_ATTEMPTS_CODE,
    refresh_refund,
    send_due_refunds,
)
from ticketing_service.service_layer.refunds import RefundRefused, RefundState
from ticketing_service.service_layer.registration_handlers import get_reservation

SUCCEEDED = RegistrationEventType.REFUND_SUCCEEDED
FAILED = RegistrationEventType.REFUND_FAILED


async def failed_as_unknown(
    deps: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts, *, made: bool = True
) -> Refund:
    """A refund whose every send lost its answer (made by the first when `made`) while the
    payment service could not be read: failed as unknown. The outage is then over."""
    owing = await owed(deps, database)
    checkouts.takes_failed_sends = made
    checkouts.refund_error = PaymentServiceUnreachable("the answer was lost")
    checkouts.refund_read_error = PaymentServiceUnreachable("503")
    await attempts_used_up(deps, database)
    checkouts.refund_error = checkouts.refund_read_error = None
    failed = stored(database, owing.refund_id)
    assert (failed.status, failed.failure_code) == (RefundStatus.FAILED, OUTCOME_UNKNOWN)
    return failed


def announced(database: FakeDatabase) -> list[RegistrationEventType]:
    """The refund events on the feed, oldest first."""
    return [e.type for e in database.store.events if e.type in (SUCCEEDED, FAILED)]


async def test_a_refund_failed_as_unknown_that_the_payment_service_made_becomes_succeeded(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    failed = await failed_as_unknown(retrying, database, checkouts)

    refreshed = await refresh_refund(retrying, failed.refund_id)

    assert (refreshed.status, refreshed.failure_code) == (RefundStatus.SUCCEEDED, None)
    assert refreshed.attempts == failed.attempts + 1
    assert database.store.reservations[failed.reservation_id].refunded_amount == failed.amount
    assert announced(database) == [FAILED, SUCCEEDED]
    assert database.committed[-1].events == {SUCCEEDED: 1}  # counted as any success
    assert len(checkouts.refunds) == 1  # asked about, never sent again


async def test_once_corrected_nothing_is_left_to_refund_again(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    failed = await failed_as_unknown(retrying, database, checkouts)
    reservation = database.store.reservations[failed.reservation_id]
    await refresh_refund(retrying, failed.refund_id)

    with pytest.raises(errors.RefundExceedsPaid):
        await refund_reservation(retrying, refund(reservation, request_id="again"))


async def test_a_refund_failed_as_unknown_that_the_payment_service_failed_keeps_its_code(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    failed = await failed_as_unknown(retrying, database, checkouts)
    checkouts.refund_state = RefundState.FAILED

    refreshed = await refresh_refund(retrying, failed.refund_id)

    assert (refreshed.status, refreshed.failure_code) == (RefundStatus.FAILED, "refund_declined")
    assert refreshed.attempts == failed.attempts + 1
    assert announced(database) == [FAILED]  # failed once, announced once
    assert database.store.reservations[failed.reservation_id].refunded_amount == 0
    # Its code is now the payment service's word: it is not asked about again.
    checkouts.refund_read_error = RuntimeError("asked about a refund it said had failed")
    assert await refresh_refund(retrying, failed.refund_id) == refreshed


async def test_a_refund_failed_as_unknown_that_the_payment_service_is_moving_is_followed_again(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    failed = await failed_as_unknown(retrying, database, checkouts)
    checkouts.refund_state = RefundState.PENDING

    refreshed = await refresh_refund(retrying, failed.refund_id)
    checkouts.refund_state = RefundState.SUCCEEDED
    later(database, timedelta(hours=1))
    followed = await send_due_refunds(retrying)

    assert (refreshed.status, refreshed.failure_code) == (RefundStatus.PENDING, None)
    assert followed == 1
    assert stored(database, failed.refund_id).status is RefundStatus.SUCCEEDED
    assert database.store.reservations[failed.reservation_id].refunded_amount == failed.amount
    assert len(checkouts.refunds) == 1  # followed by reading it, never sent again


async def test_a_refund_pending_again_counts_against_the_payment(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    failed = await failed_as_unknown(retrying, database, checkouts)
    reservation = database.store.reservations[failed.reservation_id]
    checkouts.refund_state = RefundState.PENDING
    await refresh_refund(retrying, failed.refund_id)

    with pytest.raises(errors.RefundExceedsPaid):
        await refund_reservation(retrying, refund(reservation, request_id="again"))


async def test_a_refund_failed_as_unknown_answered_succeeded_for_another_amount_is_a_mismatch(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    failed = await failed_as_unknown(retrying, database, checkouts)
    checkouts.refunded_amount = 1

    refreshed = await refresh_refund(retrying, failed.refund_id)
    checkouts.refunded_amount = None  # its word now would be the right amount: never asked
    again = await refresh_refund(retrying, failed.refund_id)

    assert (refreshed.status, refreshed.failure_code) == (RefundStatus.FAILED, AMOUNT_MISMATCH_CODE)
    assert again == refreshed
    assert database.store.reservations[failed.reservation_id].refunded_amount == 0
    assert announced(database) == [FAILED]


@pytest.mark.parametrize(
    "unknown",
    [
        PaymentServiceUnreachable("still down"),
        PaymentServiceRefused("malformed answer"),
        RefundRefused("token rotated", "unauthorized"),
    ],
)
async def test_a_refund_failed_as_unknown_stays_so_while_the_payment_service_cannot_say(
    retrying: Dependencies,
    database: FakeDatabase,
    checkouts: FakeCheckouts,
    unknown: Exception,
) -> None:
    failed = await failed_as_unknown(retrying, database, checkouts)
    checkouts.refund_read_error = unknown

    refreshed = await refresh_refund(retrying, failed.refund_id)

    assert refreshed == failed == stored(database, failed.refund_id)


async def test_a_refund_failed_as_unknown_that_the_payment_service_never_took_stays_so(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    # Its 404 now is no proof the refund was never made (a send may not have landed yet).
    failed = await failed_as_unknown(retrying, database, checkouts, made=False)

    refreshed = await refresh_refund(retrying, failed.refund_id)

    assert refreshed == failed == stored(database, failed.refund_id)
    assert checkouts.refunds == []


async def test_two_refreshes_at_once_record_a_refund_failed_as_unknown_once(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    failed = await failed_as_unknown(retrying, database, checkouts)
    # While this refresh asks, a callback's RefreshRefund asks too and records it first.
    checkouts.refund_meanwhile.append(lambda: refresh_refund(retrying, failed.refund_id))

    refreshed = await refresh_refund(retrying, failed.refund_id)

    assert (refreshed.status, refreshed.attempts) == (RefundStatus.SUCCEEDED, failed.attempts + 1)
    assert announced(database) == [FAILED, SUCCEEDED]
    assert database.store.reservations[failed.reservation_id].refunded_amount == failed.amount


async def test_a_refund_failed_with_the_payment_service_s_refusal_is_never_asked_about(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = RefundRefused("no", "refund_exceeds_cancellable")
    await send_due_refunds(retrying)
    failed = stored(database, made.refund_id)
    checkouts.refund_read_error = RuntimeError("asked about a refund it refused")

    assert await refresh_refund(retrying, made.refund_id) == failed


async def test_a_refund_failed_after_the_payment_service_said_it_never_took_it_is_not_asked(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = PaymentServiceUnreachable("down")
    await attempts_used_up(retrying, database)
    failed = stored(database, made.refund_id)
    assert failed.failure_code == MAX_ATTEMPTS_CODE
    checkouts.refund_read_error = RuntimeError("asked about a refund it said it never took")

    assert await refresh_refund(retrying, made.refund_id) == failed


async def test_a_payment_whose_mismatch_refund_failed_as_unknown_never_gets_a_seat(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    # Reported first for PRICE - 1, its refund sent and failed as unknown (made, in fact), then
    # reported as it was: it got a seat, and the refresh then returned 29,999 of its money too.
    deps = retrying
    held = await hold(deps, database)
    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, amount=PRICE - 1, delivery=None))
    [first] = database.store.refunds.values()
    checkouts.takes_failed_sends = True
    checkouts.refund_error = PaymentServiceUnreachable("the answer was lost")
    checkouts.refund_read_error = PaymentServiceUnreachable("503")
    await attempts_used_up(deps, database)
    checkouts.refund_error = checkouts.refund_read_error = None
    assert stored(database, first.refund_id).failure_code == OUTCOME_UNKNOWN

    with pytest.raises(errors.PaymentMismatch):
        await confirm_payment(deps, paying(held, delivery=None))  # still owed back: no seat
    await refresh_refund(deps, first.refund_id)

    after = await get_reservation(deps, held.reservation_id)
    assert after.registration_id is None
    # Its refunds return all of it: the first, now succeeded, and the difference.
    assert sorted(r.amount for r in after.refunds) == [1, PRICE - 1]
