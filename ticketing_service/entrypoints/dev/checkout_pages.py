"""The payment service fake's pages: the checkout a payer sees, and Moim's return page.

"Pay" records the payment and sends the signed `ticket_payment.paid` callback, as a real
payment would; "Pay without callback" records it and sends nothing (a lost callback, for
reconciliation to find); "Start paying" leaves it `payment_pending`; "Cancel" gives up and
returns to the cancel URL. Refunds of the checkout are listed, and pending ones can be settled.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ticketing_service.domain.money import format_amount
from ticketing_service.entrypoints.dev.payment_state import (
    DEFAULT_FAILURE_CODE,
    FakeCheckout,
    PaymentServiceState,
    RefundSettlement,
    Refusal,
)

_PAYABLE = frozenset({"requires_payment", "payment_pending"})
_SETTLEMENTS: dict[str, RefundSettlement] = {
    "succeed": "succeed",
    "pending": "pending",
    "fail": "fail",
}
Action = Callable[[PaymentServiceState, Request], Awaitable[Response]]


def checkout_url(state: PaymentServiceState, checkout: FakeCheckout) -> str:
    """Where the payer pays for a checkout."""
    return f"{state.public_url or ''}/checkout/{checkout.checkout_id}"


def routes(state: PaymentServiceState) -> list[Route]:
    """The pages' routes, bound to the fake's state."""

    def bind(action: Action) -> Callable[[Request], Awaitable[Response]]:
        async def serve(request: Request) -> Response:
            try:
                return await action(state, request)
            except Refusal as refusal:
                message = f"<p>{html.escape(refusal.message)}</p>"
                return _page("Not possible", message, refusal.status)

        return serve

    page = "/checkout/{id}"
    return [
        Route(page, bind(_show), methods=["GET"]),
        Route(page + "/pay", bind(_pay), methods=["POST"]),
        Route(page + "/pay-without-callback", bind(_pay_silently), methods=["POST"]),
        Route(page + "/start", bind(_start), methods=["POST"]),
        Route(page + "/cancel", bind(_cancel), methods=["POST"]),
        Route(page + "/new-refunds/{settlement}", bind(_choose_settlement), methods=["POST"]),
        Route(page + "/refunds/{refund}/{outcome}", bind(_settle), methods=["POST"]),
        Route("/events/{event_id}/register", bind(_moim_return), methods=["GET"]),
    ]


def _checkout(state: PaymentServiceState, request: Request) -> FakeCheckout:
    try:
        return state.read_checkout(request.path_params["id"])
    except Refusal:
        raise Refusal(404, "checkout_not_found", "This fake does not know that checkout.") from None


def _payable(state: PaymentServiceState, request: Request) -> FakeCheckout:
    checkout = _checkout(state, request)
    if checkout.status not in _PAYABLE:
        raise Refusal(409, "not_payable", f"This checkout is {checkout.status}.")
    return checkout


async def _show(state: PaymentServiceState, request: Request) -> Response:
    checkout = _checkout(state, request)
    price = format_amount(checkout.amount, checkout.text("currency"))
    content = (
        f"<p>{html.escape(checkout.text('orderName'))}</p><p class=price>{html.escape(price)}</p>"
        f"{_payment_forms(checkout)}"
        f"<p class=note>Status: <b id=status>{checkout.status}</b>. Sandbox: no money moves.</p>"
        f"{_refunds(state, checkout)}"
    )
    return _page("Sandbox checkout", content)


def _payment_forms(checkout: FakeCheckout) -> str:
    if checkout.status not in _PAYABLE:
        return ""
    base = f"/checkout/{checkout.checkout_id}"
    # The Pay form comes first: what a browser (and the client tests) submit by default.
    forms = [
        f"<form method=post action='{base}/pay'><button type=submit id=pay>Pay</button></form>",
        _button(f"{base}/pay-without-callback", "pay-silently", "Pay without callback"),
    ]
    if checkout.status == "requires_payment":
        forms.append(_button(f"{base}/start", "start", "Start paying"))
    forms.append(_button(f"{base}/cancel", "cancel", "Cancel"))
    return "".join(forms)


def _refunds(state: PaymentServiceState, checkout: FakeCheckout) -> str:
    if checkout.status != "paid":
        return ""
    base = f"/checkout/{checkout.checkout_id}"
    rows = []
    for refund in (r for r in state.refunds.values() if r.checkout is checkout):
        amount = html.escape(format_amount(refund.amount, checkout.text("currency")))
        row = f"<li>{html.escape(refund.refund_id)}: {amount}, {refund.status}"
        if refund.status == "pending":
            row += _button(f"{base}/refunds/{refund.refund_id}/succeed", "", "Refund succeeds")
            row += _button(f"{base}/refunds/{refund.refund_id}/fail", "", "Refund fails")
        rows.append(row + "</li>")
    choices = "".join(_button(f"{base}/new-refunds/{name}", "", name) for name in _SETTLEMENTS)
    return (
        f"<h2>Refunds</h2><ul>{''.join(rows)}</ul>"
        f"<p class=note>New refunds {state.refund_settlement}; change to: {choices}</p>"
    )


def _button(action: str, identifier: str, label: str) -> str:
    button_id = f" id={identifier}" if identifier else ""
    return (
        f"<form method=post action='{html.escape(action)}' class=inline>"
        f"<button type=submit{button_id} class=secondary>{html.escape(label)}</button></form>"
    )


async def _pay(state: PaymentServiceState, request: Request) -> Response:
    checkout = state.mark_paid(_payable(state, request).checkout_id)
    sent = await state.send_callback(checkout.text("callbackUrl"), checkout.paid_event())
    if sent.status_code != 200:
        answer = "no answer" if sent.status_code is None else f"HTTP {sent.status_code}"
        detail = html.escape(f"{answer}: {sent.detail}")
        return _page("Callback failed", f"<p>Paid, but the callback got {detail}.</p>", 502)
    return RedirectResponse(checkout.text("successUrl"), status_code=303)


async def _pay_silently(state: PaymentServiceState, request: Request) -> Response:
    checkout = state.mark_paid(_payable(state, request).checkout_id)
    return RedirectResponse(checkout.text("successUrl"), status_code=303)


async def _start(state: PaymentServiceState, request: Request) -> Response:
    checkout = state.mark_payment_pending(_payable(state, request).checkout_id)
    return RedirectResponse(f"/checkout/{checkout.checkout_id}", status_code=303)


async def _cancel(state: PaymentServiceState, request: Request) -> Response:
    checkout = state.mark_cancelled(_payable(state, request).checkout_id)
    return RedirectResponse(checkout.text("cancelUrl"), status_code=303)


async def _choose_settlement(state: PaymentServiceState, request: Request) -> Response:
    checkout = _checkout(state, request)
    settlement = _SETTLEMENTS.get(request.path_params["settlement"])
    if settlement is None:
        raise Refusal(404, "unknown_settlement", "Refunds succeed, stay pending or fail.")
    state.refund_settlement = settlement
    return RedirectResponse(f"/checkout/{checkout.checkout_id}", status_code=303)


async def _settle(state: PaymentServiceState, request: Request) -> Response:
    checkout = _checkout(state, request)
    refund = state.read_refund(request.path_params["refund"])
    outcome = request.path_params["outcome"]
    if refund.checkout is not checkout or outcome not in {"succeed", "fail"}:
        raise Refusal(404, "refund_not_found", "This checkout has no such refund.")
    if refund.status != "pending":
        raise Refusal(409, "refund_settled", f"This refund is {refund.status} already.")
    state.settle_refund(refund.refund_id, DEFAULT_FAILURE_CODE if outcome == "fail" else None)
    return RedirectResponse(f"/checkout/{checkout.checkout_id}", status_code=303)


async def _moim_return(state: PaymentServiceState, request: Request) -> Response:
    outcome = request.query_params.get("payment", "")
    event_id = html.escape(request.path_params["event_id"])
    # What Moim does on its return page (docs/moim-integration.md): a payer who cancelled gets
    # their seat released at once, not held until the hold's end.
    then = (
        "<code>FindReservation</code>, then <code>CancelReservation</code> to release the seat"
        if outcome == "cancel"
        else "<code>FindReservation</code> to show the outcome"
    )
    return _page(
        "Back on Moim",
        f"<p>Event <b>{event_id}</b>: payment <b>{html.escape(outcome)}</b>.</p>"
        f"<p>Moim now calls {then}.</p>",
    )


def _page(title: str, content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
        ".price{font-size:2rem;font-weight:600}button{font-size:1.2rem;padding:.6rem 2.4rem;"
        "background:#0b6bcb;color:#fff;border:0;border-radius:.4rem;cursor:pointer;"
        "margin:.2rem 0}button.secondary{font-size:.9rem;padding:.3rem 1rem;background:#555}"
        ".inline{display:inline-block;margin-right:.4rem}"
        ".note{color:#666;font-size:.85rem}</style></head><body>"
        f"<h1>{title}</h1>{content}</body></html>",
        status_code=status,
    )
