"""Reconciliation on real Postgres, the real server and the payment service fake over HTTP:
a lost callback never loses a paid seat (SPEC §9)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.end_to_end.serving import our_line, run_command
from tests.integration.conftest import PaymentService, service_config, serving
from tests.integration.flows import (
    configure_event,
    end_hold,
    hold,
    paid_tier,
    payment_for,
    sql,
    start,
    status_becomes,
    status_of,
)
from tests.rich_errors import rich_error
from ticketing_service.config import Config
from ticketing_service.domain.reconciliation import CheckoutAnswer, Step
from ticketing_service.domain.reservations import ConfirmOutcome
from ticketing_service.entrypoints import maintenance
from ticketing_service.entrypoints.dev.payment_state import Fault
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.reconciliation import reconcile_due

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub


async def reconcile(stub: Stub, reservation_id: str) -> pb.ReconcileReservationResponse:
    request = pb.ReconcileReservationRequest(reservation_id=reservation_id)
    return await stub.ReconcileReservation(request)


def follow_up_now(database_url: str, reservation_id: str) -> None:
    """Bring a follow-up's time to now, as if its back-off had passed (none: nothing is due)."""
    sql(
        database_url,
        "UPDATE reservations SET next_reconcile_time = now() WHERE reservation_id = $1"
        " AND next_reconcile_time IS NOT NULL",
        reservation_id,
    )


async def test_a_payment_first_reported_for_less_is_refunded_all_it_was_once_asked_about(
    stub: Stub, payment_service: PaymentService
) -> None:
    # A signed callback said 1 for a payment of the full price. Its refund returned 1, and the
    # payment service's own answer (paid, the full price) was refused as owed back: the rest
    # stayed with no seat and no refund.
    await configure_event(stub)
    held = await hold(stub, "payer")
    payment_service.state.mark_paid(held.checkout_id, payment_id="pay-misreported")
    misreported = payment_for(held, payment_id="pay-misreported", amount=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ConfirmPayment(misreported)
    assert rich_error(caught.value).reason == "PAYMENT_MISMATCH"

    for _ in range(2):  # asked twice: owed once
        await reconcile(stub, held.reservation_id)

    request = pb.GetReservationRequest(reservation_id=held.reservation_id)
    after = (await stub.GetReservation(request)).reservation
    assert sorted((r.amount, r.payment_id) for r in after.refunds) == [
        (1, "pay-misreported"),
        (held.amount - 1, "pay-misreported"),
    ]
    assert after.status != reservation_pb2.RESERVATION_STATUS_CONFIRMED


async def sold_out(stub: Stub, user_id: str) -> bool:
    try:
        await start(stub, user_id)
    except grpc.aio.AioRpcError as error:
        return rich_error(error).reason == "SOLD_OUT"
    return False


async def test_a_paid_checkout_whose_callback_was_lost_is_confirmed_when_asked(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    payment_service.state.mark_paid(held.checkout_id, payment_id="pay-lost-callback")

    found = await reconcile(stub, held.reservation_id)

    assert found.checkout_status == pb.CHECKOUT_STATUS_PAID
    assert found.outcome == pb.CONFIRM_PAYMENT_OUTCOME_CONFIRMED
    assert found.reservation.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
    assert found.reservation.payment_id == "pay-lost-callback"
    assert found.reservation.registration_id


async def test_a_hold_whose_payment_is_under_way_outlives_its_end_and_keeps_its_seat(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    held = await hold(stub, "payer")
    payment_service.state.mark_payment_pending(held.checkout_id)
    end_hold(database_url, held.reservation_id)

    [kept] = await reconcile_due(deps)

    assert (kept.answer, kept.step) == (CheckoutAnswer.PAYMENT_PENDING, Step.KEEP_HOLD)
    assert status_of(database_url, held.reservation_id) == "pending_payment"
    assert await sold_out(stub, "another-buyer")
    payment_service.state.mark_paid(held.checkout_id)
    found = await reconcile(stub, held.reservation_id)
    assert found.outcome == pb.CONFIRM_PAYMENT_OUTCOME_CONFIRMED


async def test_a_payment_under_way_keeps_no_hold_whose_seat_was_sold_after_its_end(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    first = await hold(stub, "first-payer")
    end_hold(database_url, first.reservation_id)
    second = await hold(stub, "second-payer")  # the seat, free from the first hold's end
    payment_service.state.mark_payment_pending(first.checkout_id)

    [ended] = await reconcile_due(deps)

    assert (ended.answer, ended.step) == (CheckoutAnswer.PAYMENT_PENDING, Step.EXPIRE_AND_FOLLOW_UP)
    assert status_of(database_url, first.reservation_id) == "expired"
    for held in (first, second):
        payment_service.state.mark_paid(held.checkout_id, payment_id=f"pay-{held.user_id}")
        await reconcile(stub, held.reservation_id)
    assert status_of(database_url, first.reservation_id) == "paid_unfulfilled"
    assert status_of(database_url, second.reservation_id) == "confirmed"


@pytest.mark.parametrize("payment_id", ["pay\x00", "p" * 129], ids=["nul", "too-long"])
async def test_a_payment_the_service_could_not_keep_ends_the_hold_as_an_outage_would(
    stub: Stub, database_url: str, payment_service: PaymentService, payment_id: str
) -> None:
    # Postgres refused the NUL: ReconcileReservation answered INTERNAL, and the reconciler failed
    # its pass with a traceback at every lease while the hold stayed past its end.
    await configure_event(stub)
    held = await hold(stub, "payer")
    payment_service.state.mark_paid(held.checkout_id, payment_id=payment_id)
    end_hold(database_url, held.reservation_id)

    found = await reconcile(stub, held.reservation_id)

    assert found.checkout_status == pb.CHECKOUT_STATUS_UNREACHABLE
    assert found.reservation.status == reservation_pb2.RESERVATION_STATUS_EXPIRED


async def test_a_hold_paid_in_another_amount_ends_at_its_end_and_is_asked_about_once(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    # It stayed pending past its end, leased and asked about again at every pass.
    await configure_event(stub)
    held = await hold(stub, "payer")
    short = held.amount - 1
    payment_service.state.read_checkout(held.checkout_id).body["amount"] = short
    payment_service.state.mark_paid(held.checkout_id)
    end_hold(database_url, held.reservation_id)

    [ended] = await reconcile_due(deps)

    assert (ended.answer, ended.step) == (CheckoutAnswer.PAID, Step.EXPIRE)
    assert status_of(database_url, held.reservation_id) == "expired"
    assert await reconcile_due(deps) == []
    assert sql(database_url, "SELECT amount, reason FROM refunds") == [(short, "mismatch")]


async def test_an_unpaid_checkout_at_its_hold_end_expires_and_frees_its_seat(
    stub: Stub, deps: Dependencies, database_url: str
) -> None:
    await configure_event(stub, paid_tier("vip", capacity=1))
    held = await hold(stub, "payer")
    end_hold(database_url, held.reservation_id)

    [ended] = await reconcile_due(deps)

    answer, step = CheckoutAnswer.REQUIRES_PAYMENT, Step.EXPIRE_AND_FOLLOW_UP
    assert (ended.answer, ended.step) == (answer, step)
    assert status_of(database_url, held.reservation_id) == "expired"
    assert (
        await hold(stub, "next-buyer")
    ).status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT


async def test_a_payment_made_just_after_the_hold_end_is_found_though_its_callback_was_lost(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    # Asked at its end the checkout was not paid yet, so the hold was expired and never asked
    # about again: the payment that followed, its callback lost, was money without a seat.
    await configure_event(stub)
    held = await hold(stub, "payer")
    end_hold(database_url, held.reservation_id)
    [ended] = await reconcile_due(deps)
    assert ended.answer is CheckoutAnswer.REQUIRES_PAYMENT
    payment_service.state.mark_paid(held.checkout_id, payment_id="pay-at-the-last-moment")
    follow_up_now(database_url, held.reservation_id)

    [found] = await reconcile_due(deps)

    assert (found.step, found.outcome) == (Step.CONFIRM, ConfirmOutcome.CONFIRMED)
    assert status_of(database_url, held.reservation_id) == "confirmed"


async def test_a_payment_found_after_an_outage_is_confirmed_late(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    end_hold(database_url, held.reservation_id)
    payment_service.state.faults["get_checkout"] = "error_503"

    [ended] = await reconcile_due(deps)

    assert (ended.answer, ended.step) == (CheckoutAnswer.UNREACHABLE, Step.EXPIRE_AND_FOLLOW_UP)
    assert status_of(database_url, held.reservation_id) == "expired"
    payment_service.state.faults.clear()
    payment_service.state.mark_paid(held.checkout_id)
    assert await reconcile_due(deps) == []  # backing off
    follow_up_now(database_url, held.reservation_id)
    [found] = await reconcile_due(deps)
    assert (found.step, found.reservation.status.value) == (Step.CONFIRM, "confirmed")
    assert sql(database_url, "SELECT count(*) FROM registrations") == [(1,)]


# "nested": parsing it raised RecursionError, which nothing expected. Every reconciler pass
# failed on the hold, which kept its seat, and after three such passes each replica (each
# reconciles) reported NOT_SERVING.
@pytest.mark.parametrize("fault", ["hang", "nested"])
async def test_a_hanging_or_absurd_payment_service_cannot_keep_a_hold_from_ending(
    stub: Stub,
    deps: Dependencies,
    database_url: str,
    payment_service: PaymentService,
    fault: Fault,
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    end_hold(database_url, held.reservation_id)
    payment_service.state.faults["get_checkout"] = fault

    # The client's timeout (3 s here) bounds a hanging question; this bound only keeps a broken
    # run from hanging the suite.
    async with asyncio.timeout(30):
        [ended] = await reconcile_due(deps)

    assert (ended.answer, ended.step) == (CheckoutAnswer.UNREACHABLE, Step.EXPIRE_AND_FOLLOW_UP)
    assert status_of(database_url, held.reservation_id) == "expired"


async def test_a_cancelled_hold_is_followed_up_and_a_payment_made_before_is_confirmed(
    stub: Stub, deps: Dependencies, database_url: str, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    held = await hold(stub, "payer")
    payment_service.state.mark_paid(held.checkout_id)  # paid in another tab, then cancelled
    await stub.CancelReservation(
        pb.CancelReservationRequest(reservation_id=held.reservation_id, user_id="payer")
    )

    [found] = await reconcile_due(deps)

    assert (found.step, found.reservation.status.value) == (Step.CONFIRM, "confirmed")


async def test_reconciling_a_reservation_without_a_checkout_asks_nothing(
    stub: Stub, payment_service: PaymentService
) -> None:
    await configure_event(stub)
    payment_service.state.faults["create_checkout"] = "error_503"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await start(stub, "payer")
    assert rich_error(caught.value).reason == "PAYMENT_SERVICE_UNAVAILABLE"
    reservation_id = payment_service.state.requests[0].body["reservationId"]  # type: ignore[index]  # a JSON object

    found = await reconcile(stub, reservation_id)

    assert found.checkout_status == pb.CHECKOUT_STATUS_UNSPECIFIED
    assert found.reservation.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT


@asynccontextmanager
async def asking_service(
    database_url: str, payment_url: str
) -> AsyncIterator[TicketingServiceAsyncStub]:
    """The service as `serve` runs it, asking early and often: a live hold after a second,
    every 0.2 s (the client's timeout is 3 s)."""
    config = service_config(
        database_url,
        payment_url,
        TICKETING_RECONCILE_AFTER_SECONDS="1",
        TICKETING_SWEEP_INTERVAL_SECONDS="0.2",
    )
    async with serving(config) as (stub, _):
        yield stub


async def test_a_lost_callback_s_payment_is_confirmed_by_the_running_service_within_seconds(
    database_url: str, payment_service: PaymentService
) -> None:
    async with asking_service(database_url, payment_service.url) as stub:
        await configure_event(stub)
        held = await hold(stub, "payer")
        payment_service.state.mark_paid(held.checkout_id)  # paid; the callback never comes

        waited = await status_becomes(
            stub, held.reservation_id, reservation_pb2.RESERVATION_STATUS_CONFIRMED
        )

    print(f"confirmed {waited:.2f} s after the payment, with no callback")  # for the report


async def test_a_hanging_payment_service_cannot_keep_the_running_service_from_ending_holds(
    database_url: str, payment_service: PaymentService
) -> None:
    async with asking_service(database_url, payment_service.url) as stub:
        await configure_event(stub)
        held = await hold(stub, "payer")
        payment_service.state.faults["get_checkout"] = "hang"
        end_hold(database_url, held.reservation_id)

        waited = await status_becomes(
            stub, held.reservation_id, reservation_pb2.RESERVATION_STATUS_EXPIRED
        )

    print(f"expired {waited:.2f} s after its end with the payment service hanging")


async def test_the_reconcile_command_settles_what_it_finds_and_says_so(
    stub: Stub,
    config: Config,
    payment_service: PaymentService,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await configure_event(stub)
    paid, unpaid = await hold(stub, "payer"), await hold(stub, "browser")
    payment_service.state.mark_paid(paid.checkout_id)

    assert await maintenance.reconcile(config, None, timedelta(hours=1)) == 0

    printed = capsys.readouterr().out
    assert f"{paid.reservation_id}  confirmed" in printed
    assert f"{unpaid.reservation_id}  pending_payment" in printed
    assert printed.splitlines()[-1] == (
        "asked about 2 reservations (1 paid, 1 requires_payment); 1 settled"
    )
    assert await maintenance.reconcile(config, paid.reservation_id, None) == 0
    assert "payment service: paid -> CONFIRMED" in capsys.readouterr().out


async def test_the_reconcile_command_fails_when_the_payment_service_could_not_be_asked(
    stub: Stub, database_url: str, tmp_path: Path
) -> None:
    # It exited 0 with every check "unreachable": the restore runbook's `reconcile --since`
    # step passed with nothing asked.
    await configure_event(stub)
    first, second = await hold(stub, "payer"), await hold(stub, "browser")

    # Nothing listens at the payment service's address (run_command's default).
    result = await asyncio.to_thread(
        run_command, tmp_path, "reconcile", "--since", "1h", DATABASE_URL=database_url
    )

    assert result.returncode == maintenance.UNASKED_EXIT_CODE == 3
    assert our_line(result) == (
        "ticketing-service: the payment service could not be asked about 2 of 2 checkouts"
        " (unreachable, above): run reconcile again."
    )
    lines = result.stdout.splitlines()
    for held in (first, second):
        [line] = [line for line in lines if line.startswith(held.reservation_id)]
        assert line.endswith("payment service: unreachable")
    assert result.stdout.splitlines()[-1] == "asked about 2 reservations (2 unreachable); 0 settled"
