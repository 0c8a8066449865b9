"""The database restored from a backup, as docs/operations.md tells an operator to go on.

The backup is a copy of the test database made while no service runs on it (`CREATE DATABASE
… TEMPLATE`), so the test needs no client tools of a matching Postgres version.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import grpc
import pytest
from moim.ticketing.v1 import reservation_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.end_to_end.serving import run_command
from tests.integration.conftest import (
    PAYMENT_TOKEN,
    PaymentService,
    service_config,
    serving,
)
from tests.integration.flows import configure_event, hold, paid_tier, payment_for
from tests.postgres import database_on
from tests.rich_errors import rich_error
from ticketing_service.service_layer.events_handlers import sequence_events

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

CONFIRMED = reservation_pb2.RESERVATION_STATUS_CONFIRMED


def backup_of(database_url: str) -> str:
    """A copy of the database as it is now; nothing may be connected to it."""
    source = urlsplit(database_url).path.lstrip("/")
    maintenance = urlsplit(database_url)._replace(path="/postgres").geturl()
    return database_on(maintenance, "ticketing_backup", template=source)


async def pay(
    stub: Stub, payment_service: PaymentService, held: reservation_pb2.Reservation
) -> None:
    """The payer pays, and the payment service's callback confirms the reservation."""
    paid = payment_for(held)
    payment_service.state.mark_paid(held.checkout_id, payment_id=paid.payment_id)
    await stub.ConfirmPayment(paid)


async def test_after_a_restore_reconcile_settles_the_payments_made_since_and_the_feed_says_so(
    database_url: str, payment_service: PaymentService, tmp_path: Path
) -> None:
    async with serving(service_config(database_url, payment_service.url)) as (stub, service):
        await configure_event(stub, paid_tier("vip", capacity=5))
        paid_after = await hold(stub, "paid-after-the-backup")
        await sequence_events(service.deps)
    backup_url = backup_of(database_url)
    async with serving(service_config(database_url, payment_service.url)) as (stub, service):
        await pay(stub, payment_service, paid_after)
        made_after = await hold(stub, "made-after-the-backup")
        await pay(stub, payment_service, made_after)
        await sequence_events(service.deps)
        # Where a consumer that followed the feed stands (1 event then, 4 now).
        feed = pb.ListRegistrationEventsRequest(after_sequence=0, page_size=1000)
        consumer_cursor = (await stub.ListRegistrationEvents(feed)).next_sequence
    assert consumer_cursor == 4

    # The database is restored from the backup, then the operator asks the payment service
    # about the checkouts of the last hours, before the service takes traffic again.
    # In a thread: the payment service fake answers on this test's event loop.
    reconciled = await asyncio.to_thread(
        run_command,
        tmp_path,
        "reconcile",
        "--since",
        "2h",
        DATABASE_URL=backup_url,
        TICKET_PAYMENT_SERVICE_URL=payment_service.url,
        TICKET_PAYMENT_SERVICE_TOKEN=PAYMENT_TOKEN,
    )
    assert reconciled.returncode == 0, reconciled.stderr
    assert "asked about 1 reservation (1 paid); 1 settled" in reconciled.stdout

    async with serving(service_config(backup_url, payment_service.url)) as (stub, service):
        # Paid after the backup for a hold the backup has: settled again, with its seat.
        found = await stub.GetReservation(
            pb.GetReservationRequest(reservation_id=paid_after.reservation_id)
        )
        assert found.reservation.status == CONFIRMED
        assert found.reservation.payment_id == f"pay-{paid_after.reservation_id}"
        # Made after the backup: unknown here; its payment is for the operator to refund.
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.ConfirmPayment(payment_for(made_after))
        assert rich_error(unknown.value).reason == "RESERVATION_NOT_FOUND"
        # A consumer that followed the feed before the restore is told, not left to skip.
        await sequence_events(service.deps)  # the backup's event 1, and reconcile's confirmation
        with pytest.raises(grpc.aio.AioRpcError) as ahead:
            await stub.ListRegistrationEvents(
                pb.ListRegistrationEventsRequest(after_sequence=consumer_cursor)
            )
        error = rich_error(ahead.value)
        assert (error.reason, error.metadata) == ("SEQUENCE_AHEAD_OF_FEED", {"lastSequence": "2"})
