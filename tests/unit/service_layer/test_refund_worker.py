"""The refund sender and RefreshRefund, every branch, on fakes of the ports."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.fakes import FakeCheckouts, FakeDatabase
from tests.unit.service_layer.conftest import POLICY
from tests.unit.service_layer.test_refund_handlers import refund, seat
from ticketing_service.domain import errors
from ticketing_service.domain.events import RegistrationEventType
from ticketing_service.domain.refunds import (
    OUTCOME_UNKNOWN,
    Refund,
    RefundStatus,
)
from ticketing_service.service_layer.checkouts import (
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.refund_handlers import refund_reservation
from ticketing_service.service_layer.refund_worker import (
    AMOUNT_MISMATCH_CODE,
    MAX_ATTEMPTS_CODE,
    refresh_refund,
    send_due_refunds,
)
from ticketing_service.service_layer.refunds import RefundRefused, RefundState


async def owed(deps: Dependencies, database: FakeDatabase) -> Refund:
    """A refund of a whole payment, requested and due."""
    confirmed = await seat(deps, database)
    result = await refund_reservation(deps, refund(confirmed))
    assert result.refund is not None
    return result.refund


def stored(database: FakeDatabase, refund_id: str) -> Refund:
    return database.store.refunds[refund_id]


def later(database: FakeDatabase, delay: timedelta) -> None:
    database.store.now += delay


async def test_a_requested_refund_is_sent_and_its_success_recorded_and_announced(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)

    sent = await send_due_refunds(retrying)

    assert sent == 1
    assert [r.refund_id for r in checkouts.refunds] == [made.refund_id]
    assert stored(database, made.refund_id).status is RefundStatus.SUCCEEDED
    last = database.store.events[-1]
    assert (last.type, last.reservation.refunded_amount) == (
        RegistrationEventType.REFUND_SUCCEEDED,
        made.amount,
    )
    assert await send_due_refunds(retrying) == 0  # settled: never sent again


async def test_a_pending_refund_is_followed_after_its_back_off_until_it_settles(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.PENDING

    await send_due_refunds(retrying)
    too_soon = await send_due_refunds(retrying)
    later(database, timedelta(seconds=30))
    checkouts.refund_state = RefundState.SUCCEEDED
    followed = await send_due_refunds(retrying)

    assert too_soon == 0
    assert followed == 1
    assert len(checkouts.refunds) == 1  # followed by reading it, never sent twice
    assert stored(database, made.refund_id).status is RefundStatus.SUCCEEDED


async def test_a_refund_the_payment_service_refuses_is_failed_with_its_code(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = RefundRefused("no", "refund_exceeds_cancellable")

    await send_due_refunds(retrying)

    failed = stored(database, made.refund_id)
    assert (failed.status, failed.failure_code) == (
        RefundStatus.FAILED,
        "refund_exceeds_cancellable",
    )
    assert database.store.events[-1].type is RegistrationEventType.REFUND_FAILED


async def test_a_first_recorded_send_refused_records_the_refund_an_unrecorded_send_made(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    # The process died awaiting the answer of a send the payment service took; nothing was
    # recorded, and the resend after the lease is refused as still in flight.
    made = await owed(retrying, database)
    checkouts.refund_error = RefundRefused("in flight", "idempotent_request_in_flight")
    checkouts.takes_failed_sends = True

    await send_due_refunds(retrying)

    found = stored(database, made.refund_id)
    assert (found.status, found.failure_code) == (RefundStatus.SUCCEEDED, None)
    assert len(checkouts.refunds) == 1


async def test_a_resend_refused_after_a_lost_answer_records_the_refund_the_first_send_made(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = PaymentServiceUnreachable("the answer was lost")
    checkouts.takes_failed_sends = True
    await send_due_refunds(retrying)
    later(database, timedelta(seconds=30))
    checkouts.refund_error = RefundRefused("token rotated", "unauthorized")

    await send_due_refunds(retrying)

    found = stored(database, made.refund_id)
    assert (found.status, found.failure_code) == (RefundStatus.SUCCEEDED, None)


async def test_a_resend_refused_while_the_payment_service_cannot_tell_of_it_fails_as_unknown(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = PaymentServiceUnreachable("the answer was lost")
    await send_due_refunds(retrying)
    later(database, timedelta(seconds=30))
    checkouts.refund_error = checkouts.refund_read_error = RefundRefused("rotated", "unauthorized")

    await send_due_refunds(retrying)

    found = stored(database, made.refund_id)
    assert (found.status, found.failure_code, found.attempts) == (
        RefundStatus.FAILED,
        OUTCOME_UNKNOWN,
        2,
    )


async def test_a_refund_the_payment_service_settles_as_failed_is_failed(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.FAILED

    await send_due_refunds(retrying)

    assert stored(database, made.refund_id).failure_code == "refund_declined"


@pytest.mark.parametrize("failure", [PaymentServiceUnreachable, PaymentServiceRefused])
async def test_a_transient_failure_is_retried_after_a_growing_back_off(
    retrying: Dependencies,
    database: FakeDatabase,
    checkouts: FakeCheckouts,
    failure: type[Exception],
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = failure("down")

    await send_due_refunds(retrying)
    later(database, timedelta(seconds=30))
    await send_due_refunds(retrying)
    later(database, timedelta(seconds=59))
    not_yet = await send_due_refunds(retrying)

    assert not_yet == 0  # the second wait is 60 s
    assert (stored(database, made.refund_id).status, stored(database, made.refund_id).attempts) == (
        RefundStatus.REQUESTED,
        2,
    )


async def test_after_the_last_attempt_an_unsent_refund_is_failed_for_an_operator(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = PaymentServiceUnreachable("down")

    for _ in range(POLICY.max_attempts):
        await send_due_refunds(retrying)
        later(database, timedelta(hours=1))

    failed = stored(database, made.refund_id)
    assert (failed.status, failed.failure_code) == (RefundStatus.FAILED, MAX_ATTEMPTS_CODE)


async def attempts_used_up(deps: Dependencies, database: FakeDatabase) -> None:
    """Every attempt a refund has is tried (the payment service fails as set)."""
    for _ in range(POLICY.max_attempts):
        await send_due_refunds(deps)
        later(database, timedelta(hours=1))


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        (RefundState.PENDING, RefundStatus.PENDING, None),
        (RefundState.SUCCEEDED, RefundStatus.SUCCEEDED, None),
        (RefundState.FAILED, RefundStatus.FAILED, "refund_declined"),
    ],
)
@pytest.mark.parametrize("failure", [PaymentServiceUnreachable, PaymentServiceRefused])
async def test_after_the_last_attempt_a_refund_the_payment_service_took_is_recorded_as_it_says(
    retrying: Dependencies,
    database: FakeDatabase,
    checkouts: FakeCheckouts,
    failure: type[Exception],
    state: RefundState,
    status: RefundStatus,
    code: str | None,
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = failure("answer lost or malformed")
    checkouts.takes_failed_sends = True
    checkouts.refund_state = state

    await attempts_used_up(retrying, database)

    found = stored(database, made.refund_id)
    assert (found.status, found.failure_code, found.attempts) == (status, code, POLICY.max_attempts)
    assert len(checkouts.refunds) == 1


@pytest.mark.parametrize(
    "unknown",
    [
        PaymentServiceUnreachable("down"),
        PaymentServiceRefused("malformed answer"),
        RefundRefused("token rotated", "unauthorized"),
        RefundRefused("a 404 of another code", "not_found"),
    ],
)
async def test_after_the_last_attempt_a_refund_the_payment_service_cannot_tell_of_is_failed_unknown(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts, unknown: Exception
) -> None:
    # Left requested, it was sent for ever with nobody told; failed as unknown, the alert on
    # failed refunds fires and its code says to ask the payment team before refunding again.
    made = await owed(retrying, database)
    checkouts.refund_error = PaymentServiceUnreachable("down")
    checkouts.refund_read_error = unknown

    await attempts_used_up(retrying, database)

    found = stored(database, made.refund_id)
    assert (found.status, found.failure_code, found.attempts) == (
        RefundStatus.FAILED,
        OUTCOME_UNKNOWN,
        POLICY.max_attempts,
    )
    assert checkouts.refunds == []


async def test_after_the_last_attempt_a_succeeded_answer_of_another_amount_fails_it_for_a_look(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_error = PaymentServiceUnreachable("down")
    checkouts.takes_failed_sends = True
    checkouts.refunded_amount = 1

    await attempts_used_up(retrying, database)

    found = stored(database, made.refund_id)
    assert (found.status, found.failure_code) == (RefundStatus.FAILED, AMOUNT_MISMATCH_CODE)


async def test_a_pending_refund_is_never_given_up_while_the_payment_service_is_down(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.PENDING
    await send_due_refunds(retrying)
    checkouts.refund_read_error = PaymentServiceUnreachable("down")

    for _ in range(POLICY.max_attempts + 2):
        later(database, timedelta(hours=1))
        await send_due_refunds(retrying)

    assert stored(database, made.refund_id).status is RefundStatus.PENDING


@pytest.mark.parametrize(
    "error",
    [
        RefundRefused("token rotated", "unauthorized"),
        RefundRefused("forgot it", "refund_not_found"),
    ],
)
async def test_a_pending_refund_is_never_failed_by_an_answer_that_is_not_its_own_failed(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts, error: Exception
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.PENDING
    await send_due_refunds(retrying)
    checkouts.refund_read_error = error

    for _ in range(POLICY.max_attempts + 2):
        later(database, timedelta(hours=1))  # the longest back-off: it is asked every time
        assert await send_due_refunds(retrying) == 1

    followed = stored(database, made.refund_id)
    assert (followed.status, followed.attempts) == (RefundStatus.PENDING, POLICY.max_attempts + 3)
    assert all(e.type is not RegistrationEventType.REFUND_FAILED for e in database.store.events)
    # It still counts against the payment: the whole amount cannot be asked for again.
    with pytest.raises(errors.RefundExceedsPaid):
        await refund_reservation(
            retrying, refund(database.store.reservations[made.reservation_id], request_id="r-2")
        )


async def test_a_pending_refund_asked_in_vain_is_asked_again_after_its_back_off(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.PENDING
    await send_due_refunds(retrying)
    later(database, timedelta(seconds=30))
    checkouts.refund_read_error = RefundRefused("token rotated", "unauthorized")
    await send_due_refunds(retrying)

    later(database, timedelta(seconds=59))
    too_soon = await send_due_refunds(retrying)
    later(database, timedelta(seconds=1))
    checkouts.refund_read_error = None
    checkouts.refund_state = RefundState.FAILED
    await send_due_refunds(retrying)

    assert too_soon == 0  # the third wait is 60 s
    failed = stored(database, made.refund_id)
    assert (failed.status, failed.failure_code) == (RefundStatus.FAILED, "refund_declined")


async def test_a_sent_refund_answered_succeeded_for_another_amount_is_failed_not_made(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refunded_amount = 1

    await send_due_refunds(retrying)

    unsettled = stored(database, made.refund_id)
    assert (unsettled.status, unsettled.failure_code) == (
        RefundStatus.FAILED,
        AMOUNT_MISMATCH_CODE,
    )
    assert database.store.reservations[made.reservation_id].refunded_amount == 0
    assert all(e.type is not RegistrationEventType.REFUND_SUCCEEDED for e in database.store.events)


async def test_a_followed_refund_answered_succeeded_for_another_amount_is_failed_for_a_look(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.PENDING
    await send_due_refunds(retrying)
    checkouts.refund_state = RefundState.SUCCEEDED
    checkouts.refunded_amount = made.amount + 1
    later(database, timedelta(hours=1))

    await send_due_refunds(retrying)

    found = stored(database, made.refund_id)
    assert (found.status, found.failure_code) == (RefundStatus.FAILED, AMOUNT_MISMATCH_CODE)
    assert database.store.reservations[made.reservation_id].refunded_amount == 0


# --- a try recorded meanwhile ---


async def test_a_send_whose_refund_was_refreshed_meanwhile_never_overwrites_what_it_learnt(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.takes_failed_sends = True
    checkouts.refund_state = RefundState.PENDING
    checkouts.refund_error = RefundRefused("refused on a resend", "invalid_request")
    # While the send is in flight, a callback's RefreshRefund records the refund pending.
    checkouts.refund_meanwhile.append(lambda: refresh_refund(retrying, made.refund_id))

    await send_due_refunds(retrying)

    kept = stored(database, made.refund_id)
    assert (kept.status, kept.attempts) == (RefundStatus.PENDING, 1)
    assert all(e.type is not RegistrationEventType.REFUND_FAILED for e in database.store.events)


async def test_a_refresh_that_raced_the_sender_answers_the_refund_as_the_sender_recorded_it(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.PENDING
    await send_due_refunds(retrying)
    later(database, timedelta(seconds=30))
    checkouts.refund_state = RefundState.SUCCEEDED
    # While RefreshRefund asks, the sender follows the refund and records it succeeded.
    checkouts.refund_meanwhile.append(lambda: send_due_refunds(retrying))

    refreshed = await refresh_refund(retrying, made.refund_id)

    assert (refreshed.status, refreshed.attempts) == (RefundStatus.SUCCEEDED, 2)
    assert [e.type for e in database.store.events].count(
        RegistrationEventType.REFUND_SUCCEEDED
    ) == 1


# --- RefreshRefund ---


async def test_refreshing_a_refund_records_what_the_payment_service_says(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.PENDING
    await send_due_refunds(retrying)
    checkouts.refund_state = RefundState.SUCCEEDED

    refreshed = await refresh_refund(retrying, made.refund_id)

    assert refreshed.status is RefundStatus.SUCCEEDED


async def test_refreshing_a_settled_refund_answers_it_without_asking(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    await send_due_refunds(retrying)
    checkouts.refund_read_error = PaymentServiceUnreachable("would fail if asked")

    refreshed = await refresh_refund(retrying, made.refund_id)

    assert refreshed.status is RefundStatus.SUCCEEDED


async def test_refreshing_a_refund_the_payment_service_cannot_tell_about_leaves_it_as_is(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_read_error = PaymentServiceUnreachable("down")

    refreshed = await refresh_refund(retrying, made.refund_id)

    assert refreshed == made


async def test_refreshing_an_unknown_refund_is_not_found(retrying: Dependencies) -> None:
    with pytest.raises(errors.RefundNotFound):
        await refresh_refund(retrying, "6f1c8a52-4f7e-4a57-9d0f-4f1f9d3c2b11")


async def test_refreshing_a_refund_answered_succeeded_for_another_amount_fails_it_for_a_look(
    retrying: Dependencies, database: FakeDatabase, checkouts: FakeCheckouts
) -> None:
    made = await owed(retrying, database)
    checkouts.refund_state = RefundState.PENDING
    await send_due_refunds(retrying)
    checkouts.refund_state = RefundState.SUCCEEDED
    checkouts.refunded_amount = 1

    refreshed = await refresh_refund(retrying, made.refund_id)

    assert (refreshed.status, refreshed.failure_code) == (RefundStatus.FAILED, AMOUNT_MISMATCH_CODE)
    assert database.store.reservations[made.reservation_id].refunded_amount == 0
