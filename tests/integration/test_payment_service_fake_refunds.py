"""The payment service fake's refunds, through the real client over real HTTP: how they settle,
the contract's refusals (SPEC §5), faults, and the signed callbacks it may send."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.payment_fake import (
    REQUEST,
    Fake,
    Receiver,
    callback_receiver,
    running_fake,
)
from ticketing_service.entrypoints.dev.payment_state import Endpoint, FakeCheckout, Fault
from ticketing_service.service_layer.checkouts import (
    PaymentServiceRefused,
    PaymentServiceUnreachable,
)
from ticketing_service.service_layer.refunds import (
    REFUND_EXCEEDS_CANCELLABLE,
    RefundRefused,
    RefundRequest,
    RefundState,
    RefundStatus,
)


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    async with running_fake() as fake:
        yield fake


async def paid_checkout(fake: Fake, callback_url: str | None = None) -> FakeCheckout:
    """A checkout opened through the client and paid 55000 KRW."""
    request = (
        REQUEST if callback_url is None else dataclasses.replace(REQUEST, callback_url=callback_url)
    )
    opened = await fake.client.create_checkout(request)
    return fake.state.mark_paid(opened.checkout_id, payment_id="pay_1")


def refund_of(checkout: FakeCheckout, amount: int, refund_id: str = "ref-1") -> RefundRequest:
    return RefundRequest(
        refund_id=refund_id,
        checkout_id=checkout.checkout_id,
        payment_id="pay_1",
        reservation_id="res-42",
        amount=amount,
        currency_code="KRW",
        reason="organizer",
    )


# --- settling -----------------------------------------------------------------------------------


async def test_a_refund_succeeds_at_once_by_default(fake: Fake) -> None:
    checkout = await paid_checkout(fake)
    refund = await fake.client.create_refund(refund_of(checkout, 38500))
    assert refund == RefundStatus("ref-1", RefundState.SUCCEEDED, 38500, None)
    assert await fake.client.get_refund("ref-1") == refund
    assert fake.state.requests[-2].headers["idempotency-key"] == "refund:ref-1"


async def test_a_replayed_refund_returns_the_stored_one_and_refunds_once(fake: Fake) -> None:
    checkout = await paid_checkout(fake)
    first = await fake.client.create_refund(refund_of(checkout, 55000))
    assert await fake.client.create_refund(refund_of(checkout, 55000)) == first
    assert fake.state.created_per_key["refund:ref-1"] == 1


async def test_a_pending_refund_settles_when_told(fake: Fake) -> None:
    fake.state.refund_settlement = "pending"
    checkout = await paid_checkout(fake)
    pending = await fake.client.create_refund(refund_of(checkout, 1000))
    assert pending == RefundStatus("ref-1", RefundState.PENDING, 0, None)
    fake.state.settle_refund("ref-1")
    assert await fake.client.get_refund("ref-1") == RefundStatus(
        "ref-1", RefundState.SUCCEEDED, 1000, None
    )


async def test_a_pending_refund_can_fail_with_a_code(fake: Fake) -> None:
    fake.state.refund_settlement = "pending"
    checkout = await paid_checkout(fake)
    await fake.client.create_refund(refund_of(checkout, 1000))
    fake.state.settle_refund("ref-1", failure_code="card_closed")
    assert await fake.client.get_refund("ref-1") == RefundStatus(
        "ref-1", RefundState.FAILED, 0, "card_closed"
    )
    with pytest.raises(ValueError, match="failed, not pending"):
        fake.state.settle_refund("ref-1")


async def test_refunds_can_be_told_to_fail_at_once(fake: Fake) -> None:
    fake.state.refund_settlement = "fail"
    fake.state.refund_failure_code = "insufficient_balance"
    checkout = await paid_checkout(fake)
    refund = await fake.client.create_refund(refund_of(checkout, 1000))
    assert refund == RefundStatus("ref-1", RefundState.FAILED, 0, "insufficient_balance")


# --- what may be refunded -----------------------------------------------------------------------


async def test_partial_refunds_may_add_up_to_what_was_paid_but_never_more(fake: Fake) -> None:
    checkout = await paid_checkout(fake)
    await fake.client.create_refund(refund_of(checkout, 30000, "ref-1"))
    await fake.client.create_refund(refund_of(checkout, 25000, "ref-2"))
    with pytest.raises(RefundRefused) as refused:
        await fake.client.create_refund(refund_of(checkout, 1, "ref-3"))
    assert refused.value.code == REFUND_EXCEEDS_CANCELLABLE
    assert "ref-3" not in fake.state.refunds


async def test_a_failed_refund_no_longer_counts_against_the_payment(fake: Fake) -> None:
    fake.state.refund_settlement = "pending"
    checkout = await paid_checkout(fake)
    await fake.client.create_refund(refund_of(checkout, 55000, "ref-1"))
    with pytest.raises(RefundRefused, match=REFUND_EXCEEDS_CANCELLABLE):
        await fake.client.create_refund(refund_of(checkout, 55000, "ref-2"))
    fake.state.settle_refund("ref-1", failure_code="declined")
    assert (await fake.client.create_refund(refund_of(checkout, 55000, "ref-2"))).status is (
        RefundState.PENDING
    )


@pytest.mark.parametrize(
    "status_hook", ["mark_payment_pending", "mark_cancelled", "mark_expired", None]
)
async def test_an_unpaid_checkout_cannot_be_refunded(fake: Fake, status_hook: str | None) -> None:
    opened = await fake.client.create_checkout(REQUEST)
    if status_hook is not None:
        getattr(fake.state, status_hook)(opened.checkout_id)
    unpaid = fake.state.read_checkout(opened.checkout_id)
    with pytest.raises(RefundRefused) as refused:
        await fake.client.create_refund(refund_of(unpaid, 100))
    assert refused.value.code == "checkout_not_paid"


async def test_a_refund_of_an_unknown_checkout_is_refused(fake: Fake) -> None:
    refund = dataclasses.replace(refund_of(await paid_checkout(fake), 100), checkout_id="chk_x")
    with pytest.raises(RefundRefused) as refused:
        await fake.client.create_refund(refund)
    assert refused.value.code == "checkout_not_found"


@pytest.mark.parametrize(
    "change",
    [{"payment_id": "pay_other"}, {"reservation_id": "res-other"}, {"currency_code": "USD"}],
)
async def test_a_refund_that_does_not_match_the_payment_is_refused(
    fake: Fake, change: dict[str, Any]
) -> None:
    refund = dataclasses.replace(refund_of(await paid_checkout(fake), 100), **change)
    with pytest.raises(RefundRefused) as refused:
        await fake.client.create_refund(refund)
    assert refused.value.code == "payment_mismatch"


async def test_an_unknown_refund_is_refused_with_its_code(fake: Fake) -> None:
    with pytest.raises(RefundRefused) as refused:
        await fake.client.get_refund("ref-unknown")
    assert refused.value.code == "refund_not_found"


@pytest.mark.parametrize(
    ("key", "change", "code"),
    [
        ("refund:ref-2", {}, "invalid_request"),
        ("refund:ref-1", {"amount": 0}, "invalid_request"),
        ("refund:ref-1", {"amount": 10.5}, "invalid_request"),
        ("refund:ref-1", {"reason": ""}, "invalid_request"),
    ],
    ids=["key-names-another-refund", "zero", "float", "no-reason"],
)
async def test_a_refund_body_that_breaks_the_contract_is_422(
    fake: Fake, key: str, change: dict[str, object], code: str
) -> None:
    checkout = await paid_checkout(fake)
    body = {
        "refundId": "ref-1",
        "checkoutId": checkout.checkout_id,
        "paymentId": "pay_1",
        "reservationId": "res-42",
        "amount": 100,
        "currency": "KRW",
        "reason": "organizer",
    }
    answer = await fake.http.post(
        "/v1/ticket-refunds", headers=fake.headers(key), json=body | change
    )
    assert (answer.status_code, answer.json()["code"]) == (422, code)
    assert fake.state.refunds == {}


async def test_the_same_refund_key_with_another_body_is_refused(fake: Fake) -> None:
    checkout = await paid_checkout(fake)
    await fake.client.create_refund(refund_of(checkout, 100))
    with pytest.raises(RefundRefused) as refused:
        await fake.client.create_refund(refund_of(checkout, 200))
    assert refused.value.code == "idempotency_key_reused"


# --- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("error_500", PaymentServiceUnreachable),
        ("error_503", PaymentServiceUnreachable),
        ("error_429", PaymentServiceUnreachable),
        ("error_408", PaymentServiceUnreachable),
        ("hang", PaymentServiceUnreachable),
        ("error_409", RefundRefused),
        ("error_400", RefundRefused),
        ("garbage", PaymentServiceRefused),
        ("missing_fields", PaymentServiceRefused),
    ],
)
@pytest.mark.parametrize("endpoint", ["create_refund", "get_refund"])
async def test_each_fault_on_refunds_is_classified_as_the_spec_says(
    fake: Fake, fault: Fault, error: type[Exception], endpoint: Endpoint
) -> None:
    checkout = await paid_checkout(fake)
    if endpoint == "get_refund":
        await fake.client.create_refund(refund_of(checkout, 100))
    fake.state.faults[endpoint] = fault
    call = (
        fake.client.create_refund(refund_of(checkout, 100))
        if endpoint == "create_refund"
        else fake.client.get_refund("ref-1")
    )
    with pytest.raises(error):
        await call
    # After a transient fault the same call succeeds, and the refund exists exactly once.
    fake.state.faults.clear()
    assert (
        await fake.client.create_refund(refund_of(checkout, 100))
    ).status is RefundState.SUCCEEDED
    assert fake.state.created_per_key["refund:ref-1"] == 1


async def test_a_late_refund_is_made_at_once_and_answered_only_once_released(fake: Fake) -> None:
    checkout = await paid_checkout(fake)
    fake.state.faults["create_refund"] = "late"
    fake.state.received.clear()

    sending = asyncio.ensure_future(fake.client.create_refund(refund_of(checkout, 100)))
    async with asyncio.timeout(5):
        await fake.state.received.wait()  # the refund is made before the fake next yields
    made = fake.state.refunds["ref-1"].status
    unanswered = not sending.done()
    fake.state.release.set()
    answer = await sending

    assert (made, unanswered, answer.status) == ("succeeded", True, RefundState.SUCCEEDED)


@pytest.mark.parametrize("endpoint", ["create_refund", "get_refund"])
async def test_a_short_refund_fault_answers_a_succeeded_refund_as_refunding_one(
    fake: Fake, endpoint: Endpoint
) -> None:
    checkout = await paid_checkout(fake)
    fake.state.faults[endpoint] = "short_refund"

    created = await fake.client.create_refund(refund_of(checkout, 100))
    read = await fake.client.get_refund("ref-1")

    short = created if endpoint == "create_refund" else read
    whole = read if endpoint == "create_refund" else created
    assert (short.status, short.refunded_amount) == (RefundState.SUCCEEDED, 1)
    assert whole.refunded_amount == 100


# --- callbacks ----------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with callback_receiver() as receiver:
        yield receiver


async def test_settled_refunds_send_signed_callbacks_when_switched_on(
    receiver: Receiver,
) -> None:
    url, accepted = receiver.url, receiver.accepted
    async with running_fake(refund_callbacks=True) as fake:
        fake.state.refund_settlement = "pending"
        checkout = await paid_checkout(fake, callback_url=url)
        await fake.client.create_refund(refund_of(checkout, 1000, "ref-1"))
        await fake.client.create_refund(refund_of(checkout, 2000, "ref-2"))
        assert fake.state.sent_callbacks == []  # nothing settled yet
        fake.state.settle_refund("ref-1")
        fake.state.settle_refund("ref-2", failure_code="card_closed")
        async with asyncio.timeout(10):
            await fake.state.drain_callbacks()
    assert [c.status_code for c in fake.state.sent_callbacks] == [200, 200]
    by_refund = {callback["refundId"]: callback for callback in accepted}
    assert by_refund["ref-1"] == {
        "type": "ticket_payment.refunded",
        "refundId": "ref-1",
        "reservationId": "res-42",
        "checkoutId": checkout.checkout_id,
        "amount": 1000,
        "currency": "KRW",
        "refundedAt": fake.clock.now.isoformat(),
    }
    assert by_refund["ref-2"]["type"] == "ticket_payment.refund_failed"
    assert by_refund["ref-2"]["failureCode"] == "card_closed"


async def test_refund_callbacks_stay_off_unless_asked_for(fake: Fake, receiver: Receiver) -> None:
    url, accepted = receiver.url, receiver.accepted
    await fake.client.create_refund(refund_of(await paid_checkout(fake, callback_url=url), 100))
    await fake.state.drain_callbacks()
    assert (fake.state.sent_callbacks, accepted) == ([], [])
