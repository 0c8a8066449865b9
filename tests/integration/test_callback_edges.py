"""Careless senders at the real shim: reused delivery ids and signed but impossible values.

A delivery id is scoped by its scheme and bound to its payment, so an id seen before for
another reservation or payment never answers with that other result (the payment it carries is
handled). A signed value the service can never take answers 400 naming it, never a 503 the
sender would retry forever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from moim.ticketing.v1 import reservation_pb2

from tests.integration.callbacks import (
    PENDING,
    encode,
    hmac_signed,
    hold_for_payment,
    paid_event,
    post,
    standard_signed,
    status_of,
)
from tests.integration.flows import sql

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

CONFIRMED = reservation_pb2.RESERVATION_STATUS_CONFIRMED


async def test_an_id_confirmed_with_one_scheme_confirms_another_payment_in_the_other_scheme(
    shim: httpx.AsyncClient, stub: Stub
) -> None:
    first = await hold_for_payment(stub, "user-1")
    second = await hold_for_payment(stub, "user-2")
    await post(shim, hmac_signed(encode(paid_event(first)), delivery_id="X"))

    answer = await post(shim, standard_signed(encode(paid_event(second)), msg_id="X"))

    assert answer.status_code == 200
    assert (answer.json()["outcome"], answer.json()["reservationId"]) == (
        "CONFIRMED",
        second.reservation_id,
    )
    assert (await status_of(stub, second.reservation_id)).status == CONFIRMED


async def test_an_id_one_sender_reuses_for_another_reservation_is_handled_as_new(
    shim: httpx.AsyncClient, stub: Stub, database_url: str
) -> None:
    first = await hold_for_payment(stub, "user-1")
    second = await hold_for_payment(stub, "user-2")
    await post(shim, hmac_signed(encode(paid_event(first)), delivery_id="X"))

    answer = await post(shim, hmac_signed(encode(paid_event(second)), delivery_id="X"))

    assert (answer.status_code, answer.json()["reservationId"]) == (200, second.reservation_id)
    assert (await status_of(stub, second.reservation_id)).status == CONFIRMED
    assert sql(database_url, "SELECT count(*) FROM registrations") == [(2,)]


async def test_an_id_reused_for_another_payment_of_the_same_reservation_is_a_mismatch(
    shim: httpx.AsyncClient, stub: Stub
) -> None:
    held = await hold_for_payment(stub, "user-1")
    await post(shim, hmac_signed(encode(paid_event(held, paymentId="pay_1")), delivery_id="X"))

    again = await post(shim, hmac_signed(encode(paid_event(held, paymentId="pay_2")), "X"))

    # Never 200 with nothing done: the second payment is money taken without a seat.
    assert (again.status_code, again.json()["error"]) == (409, "PAYMENT_MISMATCH")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("paidAt", "0001-01-01T00:00:00+01:00"),
        ("paidAt", "9999-12-31T23:59:59-01:00"),
        ("paidAt", "1969-12-31T23:59:59Z"),
        ("paidAt", "9999-12-31T23:59:59.5Z"),  # Postgres would keep it as infinity
        # A lone surrogate, which JSON can spell and no request can carry.
        ("paymentId", "pay_\ud800"),
        ("txId", "tx_\udfff"),
        ("amount", 2**53),
        ("amount", 30000.0),
        ("amount", -1),
    ],
)
async def test_a_signed_impossible_value_answers_400_naming_it_and_changes_nothing(
    shim: httpx.AsyncClient, stub: Stub, database_url: str, field: str, value: object
) -> None:
    held = await hold_for_payment(stub)

    answer = await post(shim, hmac_signed(encode(paid_event(held, **{field: value}))))

    assert answer.status_code == 400
    assert (answer.json()["error"], answer.json()["field"]) == ("invalid_payload", field)
    assert (await status_of(stub, held.reservation_id)).status == PENDING
    assert sql(database_url, "SELECT count(*) FROM webhook_deliveries") == [(0,)]


@pytest.mark.parametrize(
    ("field", "changes", "delivery_id"),
    [
        ("paymentId", {"paymentId": "p" * 129}, "delivery-1"),
        ("txId", {"txId": "t" * 129}, "delivery-1"),
        ("delivery id header", {}, "d" * 129),
    ],
)
async def test_a_signed_value_over_what_the_service_takes_answers_400_naming_it(
    shim: httpx.AsyncClient,
    stub: Stub,
    field: str,
    changes: dict[str, object],
    delivery_id: str,
) -> None:
    held = await hold_for_payment(stub)

    signed = hmac_signed(encode(paid_event(held, **changes)), delivery_id=delivery_id)
    answer = await post(shim, signed)

    # It was a bare 400 "INVALID_ARGUMENT": nothing said which of the values to look at.
    assert (answer.status_code, answer.json()) == (
        400,
        {"ok": False, "error": "invalid_payload", "field": field},
    )
    assert (await status_of(stub, held.reservation_id)).status == PENDING
