"""A sandbox of Moim's payment service for `ticketing-service dev` (SPEC §5), never for production.

It opens checkouts exactly as the real service's contract says (bearer token, idempotency key,
`checkoutId`/`checkoutUrl`/`status`), serves a checkout page whose "Pay" button sends the
signed `ticket_payment.paid` callback a real payment would, and a "Cancel" link to the
registration's cancel URL. State lives in memory: restarting the sandbox forgets checkouts.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ticketing_service.domain.money import format_amount, is_known_currency

REQUIRED_FIELDS = ("reservationId", "eventId", "tierId", "orderName", "currency", "callbackUrl")


@dataclass(slots=True)
class SandboxCheckout:
    """A checkout the sandbox opened, with what its page and callback need."""

    checkout_id: str
    body: dict[str, object]
    status: str = "requires_payment"


@dataclass(slots=True)
class PaymentSandbox:
    """The sandbox's configuration and its checkouts, by id and by idempotency key."""

    token: str
    callback_secret: str
    public_url: str
    checkouts: dict[str, SandboxCheckout] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)

    def open(self, key: str, body: dict[str, object]) -> tuple[SandboxCheckout, bool]:
        """The checkout for an idempotency key, and whether it was created just now."""
        if key in self.by_key:
            return self.checkouts[self.by_key[key]], False
        checkout = SandboxCheckout(f"chk_{secrets.token_hex(12)}", body)
        self.checkouts[checkout.checkout_id] = checkout
        self.by_key[key] = checkout.checkout_id
        return checkout, True

    def answer(self, checkout: SandboxCheckout) -> dict[str, str]:
        """The JSON the payment service answers for a checkout."""
        return {
            "checkoutId": checkout.checkout_id,
            "checkoutUrl": f"{self.public_url}/checkout/{checkout.checkout_id}",
            "status": checkout.status,
        }


def sign(secret: str, body: bytes) -> str:
    """The moim-payment signature: lowercase hex HMAC-SHA256 of the exact body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def create_payment_sandbox_app(sandbox: PaymentSandbox) -> Starlette:
    """The sandbox's HTTP app: the checkout API, the checkout page, and the Moim return page."""

    async def create_checkout(request: Request) -> Response:
        return await _create_checkout(sandbox, request)

    async def checkout_page(request: Request) -> Response:
        return _checkout_page(sandbox, request.path_params["checkout_id"])

    async def pay(request: Request) -> Response:
        return await _pay(sandbox, request.path_params["checkout_id"])

    async def moim_return_page(request: Request) -> Response:
        outcome = request.query_params.get("payment", "")
        event_id = html.escape(request.path_params["event_id"])
        return _page(
            "Back on Moim",
            f"<p>Event <b>{event_id}</b>: payment <b>{html.escape(outcome)}</b>.</p>"
            "<p>Moim now calls <code>GetReservation</code> to show the outcome.</p>",
        )

    return Starlette(
        routes=[
            Route("/v1/ticket-checkouts", create_checkout, methods=["POST"]),
            Route("/checkout/{checkout_id}", checkout_page, methods=["GET"]),
            Route("/checkout/{checkout_id}/pay", pay, methods=["POST"]),
            Route("/events/{event_id}/register", moim_return_page, methods=["GET"]),
        ]
    )


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


async def _create_checkout(sandbox: PaymentSandbox, request: Request) -> Response:
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {sandbox.token}".encode()):
        return _error(401, "UNAUTHORIZED", "A valid bearer token is required.")
    key = request.headers.get("idempotency-key", "")
    if not key:
        return _error(400, "IDEMPOTENCY_KEY_REQUIRED", "Send an Idempotency-Key header.")
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _error(400, "INVALID_JSON", "The body must be JSON.")
    problem = _invalid(body)
    if problem:
        return _error(422, "INVALID_REQUEST", problem)
    checkout, created = sandbox.open(key, body)
    return JSONResponse(sandbox.answer(checkout), status_code=201 if created else 200)


def _invalid(body: object) -> str | None:
    if not isinstance(body, dict):
        return "The body must be a JSON object."
    missing = [name for name in REQUIRED_FIELDS if not isinstance(body.get(name), str)]
    if missing:
        return f"Missing or non-string fields: {', '.join(missing)}."
    amount = body.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        return "amount must be a non-negative integer in minor units."
    if not is_known_currency(str(body["currency"])):
        return "currency must be a supported ISO 4217 code."
    return None


def _checkout_page(sandbox: PaymentSandbox, checkout_id: str) -> Response:
    checkout = sandbox.checkouts.get(checkout_id)
    if checkout is None:
        return _page("Checkout not found", "<p>This sandbox does not know that checkout.</p>", 404)
    body = checkout.body
    price = format_amount(int(str(body["amount"])), str(body["currency"]))
    cancel_url = html.escape(str(body.get("cancelUrl", "")))
    content = (
        f"<p>{html.escape(str(body['orderName']))}</p><p class=price>{html.escape(price)}</p>"
        f"<form method=post action='/checkout/{checkout_id}/pay'>"
        "<button type=submit id=pay>Pay</button></form>"
        f"<p><a id=cancel href='{cancel_url}'>Cancel</a></p>"
        f"<p class=note>Status: {checkout.status}. Sandbox: no money moves.</p>"
    )
    return _page("Sandbox checkout", content)


async def _pay(sandbox: PaymentSandbox, checkout_id: str) -> Response:
    checkout = sandbox.checkouts.get(checkout_id)
    if checkout is None:
        return _page("Checkout not found", "<p>This sandbox does not know that checkout.</p>", 404)
    raw, delivery_id = _callback(checkout)
    headers = {
        "Content-Type": "application/json",
        "X-Ticket-Payment-Signature": sign(sandbox.callback_secret, raw),
        "X-Ticket-Payment-Event-Id": delivery_id,
    }
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(
                str(checkout.body["callbackUrl"]), content=raw, headers=headers
            )
    except httpx.HTTPError as error:
        return _page(
            "Callback failed",
            f"<p>The shim could not be reached ({type(error).__name__}).</p>",
            502,
        )
    if answer.status_code != 200:
        detail = html.escape(answer.text[:500])
        return _page(
            "Callback refused", f"<p>The shim answered {answer.status_code}: {detail}</p>", 502
        )
    checkout.status = "paid"
    return RedirectResponse(str(checkout.body.get("successUrl", "/")), status_code=303)


def _callback(checkout: SandboxCheckout) -> tuple[bytes, str]:
    body = checkout.body
    event = {
        "type": "ticket_payment.paid",
        "reservationId": body["reservationId"],
        "checkoutId": checkout.checkout_id,
        "paymentId": f"sandbox-pay-{uuid.uuid4().hex[:16]}",
        "txId": f"sandbox-tx-{uuid.uuid4().hex[:16]}",
        "provider": body.get("provider", "portone"),
        "amount": body["amount"],
        "currency": body["currency"],
        "paidAt": datetime.now(UTC).isoformat(),
    }
    return json.dumps(event, separators=(",", ":")).encode(), f"sandbox-{uuid.uuid4()}"


def _page(title: str, content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}"
        ".price{font-size:2rem;font-weight:600}button{font-size:1.2rem;padding:.6rem 2.4rem;"
        "background:#0b6bcb;color:#fff;border:0;border-radius:.4rem;cursor:pointer}"
        ".note{color:#666;font-size:.85rem}</style></head><body>"
        f"<h1>{title}</h1>{content}</body></html>",
        status_code=status,
    )
