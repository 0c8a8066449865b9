"""The payment service fake's pages over real HTTP: paying (with and without the callback),
starting to pay, cancelling, an expired checkout, settling refunds, and Moim's return page."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from tests.integration.callbacks import refused_port
from tests.integration.payment_fake import (
    REQUEST,
    Fake,
    Receiver,
    callback_receiver,
    running_fake,
)
from ticketing_service.service_layer.checkouts import Checkout, CheckoutState
from ticketing_service.service_layer.refunds import RefundRequest, RefundState

FORM = re.compile(r"<form method=post action='([^']+)'")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with callback_receiver() as receiver:
        yield receiver


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    async with running_fake() as fake:
        yield fake


async def open_checkout(fake: Fake, callback_url: str = REQUEST.callback_url) -> Checkout:
    return await fake.client.create_checkout(
        dataclasses.replace(REQUEST, callback_url=callback_url)
    )


async def page(fake: Fake, checkout: Checkout) -> str:
    answer = await fake.http.get(checkout.checkout_url)
    assert answer.status_code == 200, answer.text
    return answer.text


async def status_of(fake: Fake, checkout: Checkout) -> CheckoutState:
    return (await fake.client.get_checkout(checkout.checkout_id)).status


async def test_the_page_offers_pay_first_then_the_other_choices(fake: Fake) -> None:
    checkout = await open_checkout(fake)
    text = await page(fake, checkout)
    base = f"/checkout/{checkout.checkout_id}"
    assert FORM.findall(text) == [
        f"{base}/pay",
        f"{base}/pay-without-callback",
        f"{base}/start",
        f"{base}/cancel",
    ]
    assert "<button type=submit id=pay>Pay</button>" in text
    assert "Jazz Night - VIP" in text
    assert "55000 KRW" in text
    assert "<b id=status>requires_payment</b>" in text


async def test_pay_records_the_payment_and_sends_the_signed_paid_callback(
    fake: Fake, receiver: Receiver
) -> None:
    checkout = await open_checkout(fake, receiver.url)
    answer = await fake.http.post(f"{checkout.checkout_url}/pay")
    assert (answer.status_code, answer.headers["location"]) == (303, REQUEST.success_url)
    paid = await fake.client.get_checkout(checkout.checkout_id)
    assert paid.status is CheckoutState.PAID
    assert receiver.accepted == [
        {
            "type": "ticket_payment.paid",
            "reservationId": "res-42",
            "checkoutId": checkout.checkout_id,
            "paymentId": paid.payment_id,
            "txId": paid.tx_id,
            "provider": "portone",
            "amount": 55000,
            "currency": "KRW",
            "paidAt": fake.clock.now.isoformat(),
        }
    ]
    paid_page = await page(fake, checkout)
    assert "id=pay>" not in paid_page  # paid: nothing more to pay, only refunds to follow
    assert "<h2>Refunds</h2>" in paid_page


async def test_pay_without_callback_records_the_payment_and_sends_nothing(
    fake: Fake, receiver: Receiver
) -> None:
    checkout = await open_checkout(fake, receiver.url)
    answer = await fake.http.post(f"{checkout.checkout_url}/pay-without-callback")
    assert (answer.status_code, answer.headers["location"]) == (303, REQUEST.success_url)
    assert await status_of(fake, checkout) is CheckoutState.PAID
    assert (receiver.accepted, fake.state.sent_callbacks) == ([], [])


async def test_a_callback_that_finds_no_shim_shows_an_error_and_the_payment_stays(
    fake: Fake,
) -> None:
    with refused_port() as port:
        checkout = await open_checkout(fake, f"http://127.0.0.1:{port}/cb")
        answer = await fake.http.post(f"{checkout.checkout_url}/pay")
    assert answer.status_code == 502
    assert "Callback failed" in answer.text
    assert await status_of(fake, checkout) is CheckoutState.PAID  # money taken; reconcile it
    [sent] = fake.state.sent_callbacks
    assert sent.status_code is None


async def test_a_callback_the_shim_refuses_shows_its_answer(fake: Fake, receiver: Receiver) -> None:
    fake.state.callback_secret = "not-the-receivers-secret"
    checkout = await open_checkout(fake, receiver.url)
    answer = await fake.http.post(f"{checkout.checkout_url}/pay")
    assert answer.status_code == 502
    assert "HTTP 401" in answer.text
    assert receiver.accepted == []


async def test_start_paying_leaves_the_checkout_payment_pending_and_still_payable(
    fake: Fake,
) -> None:
    checkout = await open_checkout(fake)
    started = await fake.http.post(f"{checkout.checkout_url}/start")
    assert (started.status_code, started.headers["location"]) == (
        303,
        f"/checkout/{checkout.checkout_id}",
    )
    assert await status_of(fake, checkout) is CheckoutState.PAYMENT_PENDING
    forms = FORM.findall(await page(fake, checkout))
    assert [form.rsplit("/", 1)[1] for form in forms] == ["pay", "pay-without-callback", "cancel"]
    await fake.http.post(f"{checkout.checkout_url}/pay-without-callback")
    assert await status_of(fake, checkout) is CheckoutState.PAID


async def test_cancel_returns_to_the_cancel_url_and_the_checkout_cannot_be_paid(
    fake: Fake,
) -> None:
    checkout = await open_checkout(fake)
    cancelled = await fake.http.post(f"{checkout.checkout_url}/cancel")
    assert (cancelled.status_code, cancelled.headers["location"]) == (303, REQUEST.cancel_url)
    assert await status_of(fake, checkout) is CheckoutState.CANCELLED
    refused = await fake.http.post(f"{checkout.checkout_url}/pay")
    assert refused.status_code == 409
    assert await status_of(fake, checkout) is CheckoutState.CANCELLED


async def test_an_expired_checkout_cannot_be_paid_any_more(fake: Fake) -> None:
    checkout = await open_checkout(fake)
    fake.clock.now = REQUEST.expire_time + timedelta(seconds=1)
    text = await page(fake, checkout)
    assert "<b id=status>expired</b>" in text
    assert FORM.findall(text) == []
    for action in ("pay", "pay-without-callback", "start"):
        assert (await fake.http.post(f"{checkout.checkout_url}/{action}")).status_code == 409
    assert await status_of(fake, checkout) is CheckoutState.EXPIRED


async def test_an_unknown_checkout_page_is_404(fake: Fake) -> None:
    assert (await fake.http.get("/checkout/chk_unknown")).status_code == 404
    assert (await fake.http.post("/checkout/chk_unknown/pay")).status_code == 404


async def test_a_pending_refund_is_settled_from_the_page(fake: Fake) -> None:
    checkout = await open_checkout(fake)
    choose = await fake.http.post(f"{checkout.checkout_url}/new-refunds/pending")
    assert choose.status_code == 303
    fake.state.mark_paid(checkout.checkout_id, payment_id="pay_1")
    for refund_id in ("ref-1", "ref-2"):
        await fake.client.create_refund(
            RefundRequest(
                refund_id, checkout.checkout_id, "pay_1", "res-42", 100, "KRW", "goodwill"
            )
        )
    text = await page(fake, checkout)
    assert f"{checkout.checkout_id}/refunds/ref-1/succeed" in text
    await fake.http.post(f"{checkout.checkout_url}/refunds/ref-1/succeed")
    await fake.http.post(f"{checkout.checkout_url}/refunds/ref-2/fail")
    assert [(await fake.client.get_refund(r)).status for r in ("ref-1", "ref-2")] == [
        RefundState.SUCCEEDED,
        RefundState.FAILED,
    ]
    again = await fake.http.post(f"{checkout.checkout_url}/refunds/ref-1/fail")
    assert again.status_code == 409
    assert (await fake.client.get_refund("ref-1")).status is RefundState.SUCCEEDED


async def test_an_unknown_settlement_choice_changes_nothing(fake: Fake) -> None:
    checkout = await open_checkout(fake)
    answer = await fake.http.post(f"{checkout.checkout_url}/new-refunds/maybe")
    assert answer.status_code == 404
    assert fake.state.refund_settlement == "succeed"


async def test_the_return_page_says_what_moim_will_show(fake: Fake) -> None:
    answer = await fake.http.get("/events/launch-party/register", params={"payment": "success"})
    assert answer.status_code == 200
    assert "Event <b>launch-party</b>: payment <b>success</b>." in answer.text
