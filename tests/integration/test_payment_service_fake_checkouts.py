"""The payment service fake's checkouts, through the real client over real HTTP: every status
and every error the contract (SPEC §5) names, and the faults tests ask it to act out."""

from __future__ import annotations

import asyncio
import dataclasses
import tracemalloc
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.integration.payment_fake import REQUEST, Fake, running_fake
from ticketing_service.entrypoints.dev.payment_state import Fault
from ticketing_service.service_layer.checkouts import (
    CheckoutNotFound,
    CheckoutState,
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    async with running_fake() as fake:
        yield fake


async def status_of(fake: Fake, checkout_id: str) -> CheckoutState:
    return (await fake.client.get_checkout(checkout_id)).status


# --- opening ------------------------------------------------------------------------------------


async def test_a_new_reservation_opens_a_checkout_awaiting_payment(fake: Fake) -> None:
    checkout = await fake.client.create_checkout(REQUEST)
    assert checkout.status == "requires_payment"
    assert checkout.checkout_id.startswith("chk_")
    assert checkout.checkout_url == f"{fake.url}/checkout/{checkout.checkout_id}"
    assert fake.state.created_per_key == {"reservation:res-42": 1}


async def test_the_fake_receives_the_body_the_spec_describes(fake: Fake) -> None:
    await fake.client.create_checkout(REQUEST)
    [received] = fake.state.requests
    assert received.endpoint == "create_checkout"
    assert received.headers["idempotency-key"] == "reservation:res-42"
    assert isinstance(received.body, dict)
    assert received.body["amount"] == 55000
    assert received.body["customer"] == {"moimUserId": "user-1", "email": "kim@example.com"}
    assert received.body["expiresAt"] == "2030-05-01T03:10:00Z"


async def test_a_replay_returns_the_stored_checkout_with_200_and_creates_only_one(
    fake: Fake,
) -> None:
    first = await fake.client.create_checkout(REQUEST)
    second = await fake.client.create_checkout(REQUEST)
    assert second == first
    assert len(fake.state.requests) == 2
    assert fake.state.created_per_key == {"reservation:res-42": 1}


async def test_a_replay_reports_where_the_checkout_stands_now(fake: Fake) -> None:
    first = await fake.client.create_checkout(REQUEST)
    fake.state.mark_paid(first.checkout_id)
    assert (await fake.client.create_checkout(REQUEST)).status == "paid"


async def test_different_reservations_open_different_checkouts(fake: Fake) -> None:
    first = await fake.client.create_checkout(REQUEST)
    other = await fake.client.create_checkout(dataclasses.replace(REQUEST, reservation_id="r-2"))
    assert other.checkout_id != first.checkout_id
    assert sum(fake.state.created_per_key.values()) == 2


async def test_the_same_key_with_another_body_gets_the_stored_checkout_as_moim_payment_answers(
    fake: Fake,
) -> None:
    first = await fake.client.create_checkout(REQUEST)
    other_urls = dataclasses.replace(REQUEST, callback_url="https://elsewhere.example/callbacks")
    assert (await fake.client.create_checkout(other_urls)).checkout_id == first.checkout_id
    assert fake.state.created_per_key == {"reservation:res-42": 1}


async def test_a_client_that_sends_no_expiry_still_opens_a_checkout(fake: Fake) -> None:
    await fake.client.create_checkout(REQUEST)
    sent = fake.state.requests[0].body
    assert isinstance(sent, dict)
    body = {k: v for k, v in sent.items() if k != "expiresAt"}
    headers = fake.headers("reservation:res-43") | {"Content-Type": "application/json"}
    answer = await fake.http.post("/v1/ticket-checkouts", headers=headers, json=body)
    assert answer.status_code == 201
    checkout_id = answer.json()["checkoutId"]
    fake.clock.now += timedelta(days=365)
    assert fake.state.read_checkout(checkout_id).status == "requires_payment"


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic x"}, {}],
    ids=["wrong", "other-scheme", "missing"],
)
async def test_a_wrong_or_missing_token_is_401_and_creates_nothing(
    fake: Fake, headers: dict[str, str]
) -> None:
    answer = await fake.http.post(
        "/v1/ticket-checkouts", headers=headers | {"Idempotency-Key": "reservation:r"}, json={}
    )
    assert (answer.status_code, answer.json()["code"]) == (401, "unauthenticated")
    assert fake.state.checkouts == {}


async def test_a_request_without_an_idempotency_key_is_400(fake: Fake) -> None:
    answer = await fake.http.post("/v1/ticket-checkouts", headers=fake.headers(), json={})
    assert (answer.status_code, answer.json()["code"]) == (400, "idempotency_key_required")
    assert fake.state.checkouts == {}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"amount": 550.5}, id="float-amount"),
        pytest.param({"amount": "55000"}, id="string-amount"),
        pytest.param({"amount": True}, id="bool-amount"),
        pytest.param({"amount": 0}, id="zero-amount"),
        pytest.param({"currency": "XXX"}, id="unknown-currency"),
        pytest.param({"orderName": ""}, id="empty-order-name"),
        pytest.param({"callbackUrl": None}, id="no-callback-url"),
        pytest.param({"customer": {"name": "Kim"}}, id="no-moim-user"),
        pytest.param({"customer": {"moimUserId": "u", "email": 7}}, id="numeric-email"),
        pytest.param({"expiresAt": "tomorrow"}, id="unparsable-expiry"),
        pytest.param({"expiresAt": "2030-05-01T03:10:00"}, id="expiry-without-offset"),
    ],
)
async def test_a_body_that_breaks_the_contract_is_422(
    fake: Fake, change: dict[str, object]
) -> None:
    await fake.client.create_checkout(REQUEST)
    valid = fake.state.requests[0].body
    assert isinstance(valid, dict)
    answer = await fake.http.post(
        "/v1/ticket-checkouts", headers=fake.headers("reservation:r-9"), json=valid | change
    )
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request")
    assert fake.state.created_per_key == {"reservation:res-42": 1}


@pytest.mark.parametrize("body", [b"not json", b"[1]", b""])
async def test_a_body_that_is_not_a_json_object_is_422(fake: Fake, body: bytes) -> None:
    headers = fake.headers("reservation:r") | {"Content-Type": "application/json"}
    answer = await fake.http.post("/v1/ticket-checkouts", headers=headers, content=body)
    assert answer.status_code == 422


# --- reading ------------------------------------------------------------------------------------


async def test_a_new_checkout_reads_requires_payment_with_its_money(fake: Fake) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    status = await fake.client.get_checkout(opened.checkout_id)
    assert (status.reservation_id, status.status, status.amount, status.currency_code) == (
        "res-42",
        CheckoutState.REQUIRES_PAYMENT,
        55000,
        "KRW",
    )
    assert (status.payment_id, status.tx_id, status.paid_time) == (None, None, None)
    assert fake.state.requests[-1].endpoint == "get_checkout"


async def test_a_paid_checkout_reads_paid_with_the_payment(fake: Fake) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    paid_at = fake.clock.now + timedelta(minutes=3)
    fake.state.mark_paid(opened.checkout_id, "pay_7", "tx_7", paid_at)
    status = await fake.client.get_checkout(opened.checkout_id)
    assert (status.status, status.payment_id, status.tx_id, status.paid_time) == (
        CheckoutState.PAID,
        "pay_7",
        "tx_7",
        paid_at,
    )


async def test_a_payment_recorded_without_ids_gets_generated_ones(fake: Fake) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    fake.state.mark_paid(opened.checkout_id)
    status = await fake.client.get_checkout(opened.checkout_id)
    assert status.payment_id
    assert status.tx_id
    assert status.paid_time == fake.clock.now


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        ("mark_payment_pending", CheckoutState.PAYMENT_PENDING),
        ("mark_cancelled", CheckoutState.CANCELLED),
        ("mark_expired", CheckoutState.EXPIRED),
    ],
)
async def test_each_hook_sets_the_status_the_client_reads(
    fake: Fake, hook: str, expected: CheckoutState
) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    getattr(fake.state, hook)(opened.checkout_id)
    assert (await status_of(fake, opened.checkout_id)) is expected


async def test_an_unpaid_checkout_past_its_expiry_reads_expired(fake: Fake) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    fake.clock.now = REQUEST.expire_time - timedelta(microseconds=1)
    assert (
        await fake.client.get_checkout(opened.checkout_id)
    ).status is CheckoutState.REQUIRES_PAYMENT
    fake.clock.now = REQUEST.expire_time
    assert (await status_of(fake, opened.checkout_id)) is CheckoutState.EXPIRED
    fake.clock.now = REQUEST.expire_time - timedelta(minutes=1)  # expired stays expired
    assert (await status_of(fake, opened.checkout_id)) is CheckoutState.EXPIRED


async def test_a_payment_started_before_the_expiry_may_still_end_after_it(fake: Fake) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    fake.state.mark_payment_pending(opened.checkout_id)
    fake.clock.now = REQUEST.expire_time + timedelta(minutes=2)
    assert (
        await fake.client.get_checkout(opened.checkout_id)
    ).status is CheckoutState.PAYMENT_PENDING


async def test_an_unknown_checkout_is_checkout_not_found(fake: Fake) -> None:
    with pytest.raises(CheckoutNotFound):
        await fake.client.get_checkout("chk_unknown")
    answer = await fake.http.get("/v1/ticket-checkouts/chk_unknown", headers=fake.headers())
    assert (answer.status_code, answer.json()["code"]) == (404, "checkout_not_found")


async def test_reading_with_a_wrong_token_is_refused(fake: Fake) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    answer = await fake.http.get(
        f"/v1/ticket-checkouts/{opened.checkout_id}", headers=fake.headers(token="nope")
    )
    assert answer.status_code == 401


# --- faults -------------------------------------------------------------------------------------

TRANSIENT: list[Fault] = ["error_500", "error_503", "error_408", "error_425", "error_429"]
DEFINITIVE: list[Fault] = [
    "error_400",
    "garbage",
    "missing_fields",
    "huge",
    "nested",
    "compressed",
]


@pytest.mark.parametrize(
    ("fault", "error"),
    [(f, PaymentServiceUnreachable) for f in [*TRANSIENT, "error_409"]]
    + [(f, PaymentServiceRefused) for f in DEFINITIVE],
)
async def test_each_fault_on_opening_is_classified_as_the_spec_says(
    fake: Fake, fault: Fault, error: type[Exception]
) -> None:
    fake.state.faults["create_checkout"] = fault
    with pytest.raises(error):
        await fake.client.create_checkout(REQUEST)
    assert len(fake.state.requests) == 1
    assert fake.state.checkouts == {}


@pytest.mark.parametrize(
    ("fault", "error"),
    [(f, PaymentServiceUnreachable) for f in TRANSIENT]
    + [(f, PaymentServiceRefused) for f in [*DEFINITIVE, "error_409"]],
)
async def test_each_fault_on_reading_is_classified_as_the_spec_says(
    fake: Fake, fault: Fault, error: type[Exception]
) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    fake.state.faults["get_checkout"] = fault
    with pytest.raises(error):
        await fake.client.get_checkout(opened.checkout_id)
    fake.state.faults.clear()
    assert (
        await fake.client.get_checkout(opened.checkout_id)
    ).status is CheckoutState.REQUIRES_PAYMENT


async def test_an_answer_far_larger_than_the_contract_is_read_no_further_than_its_cap(
    fake: Fake,
) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    fake.state.faults["get_checkout"] = "huge"
    with pytest.raises(PaymentServiceRefused, match="malformed answer"):
        await fake.client.get_checkout(opened.checkout_id)
    # The client stopped after MAX_ANSWER_BYTES; what else the fake sent sat in socket buffers.
    assert fake.state.huge_bytes_sent < 32 * 1024 * 1024  # of 256 MiB


async def test_an_answer_compressed_unasked_is_never_decoded_into_memory(fake: Fake) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    fake.state.faults["get_checkout"] = "compressed"  # 32 KB that decode to 32 MiB
    tracemalloc.start()
    try:
        with pytest.raises(PaymentServiceRefused, match="malformed answer"):
            await fake.client.get_checkout(opened.checkout_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Decoded, one read became 32 MiB before the 1 MiB cap could stop it (a read of 64 KiB can
    # become 64 MiB: 16 such calls at once took a client to 1.1 GB); the client now asks for
    # answers as they are and reads them so.
    assert peak < 16 * 1024 * 1024
    assert fake.state.requests[-1].headers["accept-encoding"] == "identity"


async def test_the_compressed_answer_decodes_to_32_mib_of_json(fake: Fake) -> None:
    """What the client must not decode is a valid gzip answer: decoded, 32 MiB of JSON."""
    opened = await fake.client.create_checkout(REQUEST)
    fake.state.faults["get_checkout"] = "compressed"
    answer = await fake.http.get(
        f"/v1/ticket-checkouts/{opened.checkout_id}", headers=fake.headers()
    )  # httpx decodes it
    assert int(answer.headers["content-length"]) < 64 * 1024
    assert answer.json() == {"padding": "x" * 32 * 1024 * 1024}


async def test_a_fault_on_one_endpoint_leaves_the_others_alone(fake: Fake) -> None:
    fake.state.faults["get_checkout"] = "error_503"
    assert (await fake.client.create_checkout(REQUEST)).status == "requires_payment"


async def test_a_hung_fake_is_unreachable_within_the_client_timeout(fake: Fake) -> None:
    fake.state.faults["create_checkout"] = "hang"
    with pytest.raises(PaymentServiceUnreachable):
        await fake.client.create_checkout(REQUEST)
    assert len(fake.state.requests) == 1  # it reached the fake and hung there


async def test_a_held_request_is_answered_normally_once_released(fake: Fake) -> None:
    fake.state.faults["create_checkout"] = "held"
    opening = asyncio.create_task(
        fake.http.post(
            "/v1/ticket-checkouts", headers=fake.headers("reservation:held"), json=valid_body()
        )
    )
    async with asyncio.timeout(5):
        await fake.state.received.wait()
    assert fake.state.checkouts == {}  # still held: nothing created yet
    fake.state.release.set()
    assert (await opening).status_code == 201
    assert fake.state.created_per_key == {"reservation:held": 1}


def valid_body() -> dict[str, object]:
    return {
        "provider": "portone",
        "paymentMethodFamily": "easy_pay",
        "reservationId": "held",
        "eventId": "e",
        "tierId": "t",
        "orderName": "Launch - VIP",
        "amount": 100,
        "currency": "KRW",
        "customer": {"moimUserId": "u"},
        "successUrl": "https://moim.example/ok",
        "cancelUrl": "https://moim.example/no",
        "callbackUrl": "http://127.0.0.1:9/cb",
    }
