"""What the payment service fake holds, the rules of SPEC §5 it keeps, and the hooks tests use.

Checkouts and refunds live in memory. The HTTP side (`payment_service.py`) and the dev pages
(`checkout_pages.py`) call the rules here; tests call the same methods directly to play the
payment side (`mark_paid`, `settle_refund`, ...) and read what was received.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from ticketing_service.entrypoints.dev.payment_callbacks import SentCallback, deliver

Endpoint = Literal["create_checkout", "get_checkout", "create_refund", "get_refund"]
Fault = Literal[
    "hang",  # no answer until `release` is set (or a minute passes), then 503
    "held",  # the normal answer, but only once `release` is set
    "late",  # the request is carried out at once, its answer sent only once `release` is set
    "short_refund",  # the normal answer, but a succeeded refund says only 1 was refunded
    "error_400",
    "error_408",
    "error_409",
    "error_425",
    "error_429",
    "error_500",
    "error_503",
    "garbage",  # 200 with a body that is not JSON
    "missing_fields",  # 200 with JSON that lacks what the contract promises
    "huge",  # 200 with 256 MiB of JSON, streamed (it counts what it got to send)
    "nested",  # 200 with JSON arrays nested 100,000 deep (100 KB)
    "compressed",  # 200, gzip whatever was asked: 32 KB that decode to 32 MiB of JSON
]
# How a new refund settles: at once, not until `settle_refund`, or failed at once.
RefundSettlement = Literal["succeed", "pending", "fail"]
DEFAULT_FAILURE_CODE = "refund_declined"


def utc_now() -> datetime:
    """The fake's default clock."""
    return datetime.now(UTC)


class Refusal(Exception):
    """A request the payment service answers with an error `{code, message}`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One API request as the fake saw it: lower-cased headers and the parsed body (or None)."""

    endpoint: Endpoint
    headers: Mapping[str, str]
    body: object


@dataclass(slots=True)
class FakeCheckout:
    """A checkout: the body it was opened with, where it stands, and its payment once paid."""

    checkout_id: str
    body: dict[str, object]
    expires_at: datetime | None
    status: str = "requires_payment"
    payment_id: str | None = None
    tx_id: str | None = None
    paid_at: datetime | None = None

    def text(self, name: str) -> str:
        """A string field of the body it was opened with (validated when it was opened)."""
        return str(self.body[name])

    @property
    def amount(self) -> int:
        """What is to be paid, in minor units."""
        amount = self.body["amount"]
        assert isinstance(amount, int)
        return amount

    def paid_event(self) -> dict[str, object]:
        """The `ticket_payment.paid` callback body for this checkout's payment."""
        return {
            "type": "ticket_payment.paid",
            "reservationId": self.text("reservationId"),
            "checkoutId": self.checkout_id,
            "paymentId": self.payment_id,
            "txId": self.tx_id,
            "provider": self.text("provider"),
            "amount": self.amount,
            "currency": self.text("currency"),
            "paidAt": self.paid_at.isoformat() if self.paid_at else None,
        }


@dataclass(slots=True)
class FakeRefund:
    """A refund of a paid checkout and where it stands."""

    refund_id: str
    body: dict[str, object]
    checkout: FakeCheckout
    amount: int
    status: str = "pending"
    failure_code: str | None = None
    refunded_at: datetime | None = None

    def settled_event(self) -> dict[str, object]:
        """The `ticket_payment.refunded` / `refund_failed` callback body once settled."""
        common = {
            "refundId": self.refund_id,
            "reservationId": self.checkout.text("reservationId"),
            "checkoutId": self.checkout.checkout_id,
            "amount": self.amount,
            "currency": self.checkout.text("currency"),
        }
        if self.status == "failed":
            return {
                "type": "ticket_payment.refund_failed",
                **common,
                "failureCode": self.failure_code,
            }
        refunded_at = self.refunded_at.isoformat() if self.refunded_at else None
        return {"type": "ticket_payment.refunded", **common, "refundedAt": refunded_at}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass(slots=True)
class PaymentServiceState:
    """The fake's configuration, what it holds and received, and the faults it acts out."""

    token: str
    callback_secret: str
    # Where a browser reaches the checkout pages; None until the fake knows its own address.
    public_url: str | None = None
    # Send signed refund callbacks when a refund settles (polling alone must be enough); a
    # refund settled through a hook then needs a running event loop to send from.
    refund_callbacks: bool = False
    now: Callable[[], datetime] = utc_now
    faults: dict[Endpoint, Fault] = field(default_factory=dict)
    refund_settlement: RefundSettlement = "succeed"
    refund_failure_code: str = DEFAULT_FAILURE_CODE
    requests: list[ReceivedRequest] = field(default_factory=list)
    created_per_key: Counter[str] = field(default_factory=Counter)
    checkouts: dict[str, FakeCheckout] = field(default_factory=dict)
    refunds: dict[str, FakeRefund] = field(default_factory=dict)
    sent_callbacks: list[SentCallback] = field(default_factory=list)
    # Bytes of "huge" answers the caller took before it stopped reading.
    huge_bytes_sent: int = 0
    # Ends "hang" and "held" faults (and is set when the fake stops).
    release: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when a request arrives: a test can act while the caller waits for the answer.
    received: asyncio.Event = field(default_factory=asyncio.Event)
    _by_key: dict[str, FakeCheckout | FakeRefund] = field(default_factory=dict)
    _deliveries: set[asyncio.Task[SentCallback]] = field(default_factory=set)

    # --- the API's rules -------------------------------------------------------------------

    def open_checkout(
        self, key: str, body: dict[str, object], expires_at: datetime | None
    ) -> tuple[FakeCheckout, bool]:
        """The checkout for an idempotency key, and whether it was created just now. A replay
        gets the stored checkout even when its body differs, as moim-payment answers (the
        service's retry of a hold import-moim brought in sends other URLs than Moim did)."""
        stored = self._by_key.get(key)
        if stored is not None:
            assert isinstance(stored, FakeCheckout)
            return self.read_checkout(stored.checkout_id), False
        checkout = FakeCheckout(_new_id("chk"), body, expires_at)
        self.checkouts[checkout.checkout_id] = self._by_key[key] = checkout
        self.created_per_key[key] += 1
        return checkout, True

    def read_checkout(self, checkout_id: str) -> FakeCheckout:
        """A checkout as it stands now: an unstarted one past its `expiresAt` is expired."""
        checkout = self.checkouts.get(checkout_id)
        if checkout is None:
            raise Refusal(404, "checkout_not_found", "No checkout has this id.")
        # A payment already started (payment_pending) may still complete after the end:
        # `expiresAt` only stops new payments from starting.
        due = checkout.expires_at is not None and self.now() >= checkout.expires_at
        if checkout.status == "requires_payment" and due:
            checkout.status = "expired"
        return checkout

    def open_refund(self, key: str, body: dict[str, object]) -> tuple[FakeRefund, bool]:
        """The refund for an idempotency key, and whether it was created just now."""
        stored = self._replay(key, body)
        if stored is not None:
            assert isinstance(stored, FakeRefund)
            return stored, False
        checkout = self._refundable(body)
        refund = FakeRefund(str(body["refundId"]), body, checkout, int(str(body["amount"])))
        self.refunds[refund.refund_id] = self._by_key[key] = refund
        self.created_per_key[key] += 1
        if self.refund_settlement != "pending":
            failed = self.refund_settlement == "fail"
            self._settle(refund, self.refund_failure_code if failed else None)
        return refund, True

    def read_refund(self, refund_id: str) -> FakeRefund:
        """A refund as it stands now."""
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise Refusal(404, "refund_not_found", "No refund has this id.")
        return refund

    def _replay(self, key: str, body: dict[str, object]) -> FakeCheckout | FakeRefund | None:
        stored = self._by_key.get(key)
        if stored is not None and stored.body != body:
            raise Refusal(422, "idempotency_key_reused", "This key was used for another body.")
        return stored

    def _refundable(self, body: dict[str, object]) -> FakeCheckout:
        checkout = self.read_checkout(str(body["checkoutId"]))
        if checkout.status != "paid":
            raise Refusal(409, "checkout_not_paid", "Only a paid checkout can be refunded.")
        if (body["paymentId"], body["reservationId"], body["currency"]) != (
            checkout.payment_id,
            checkout.text("reservationId"),
            checkout.text("currency"),
        ):
            raise Refusal(422, "payment_mismatch", "The refund does not match the payment.")
        owed = sum(
            refund.amount
            for refund in self.refunds.values()
            if refund.checkout is checkout and refund.status != "failed"
        )
        if owed + int(str(body["amount"])) > checkout.amount:
            raise Refusal(
                409, "refund_exceeds_cancellable", "The refunds would exceed what was paid."
            )
        return checkout

    # --- hooks: play the payment side without HTTP ----------------------------------------

    def checkout_for(self, reservation_id: str) -> FakeCheckout:
        """The checkout opened for a reservation (KeyError when there is none)."""
        return self.read_checkout(self._checkout_id_for(reservation_id))

    def _checkout_id_for(self, reservation_id: str) -> str:
        stored = self._by_key[f"reservation:{reservation_id}"]
        assert isinstance(stored, FakeCheckout)
        return stored.checkout_id

    def mark_paid(
        self,
        checkout_id: str,
        payment_id: str | None = None,
        tx_id: str | None = None,
        paid_at: datetime | None = None,
    ) -> FakeCheckout:
        """Record a payment, whatever the checkout's status (as if it started in time)."""
        checkout = self.read_checkout(checkout_id)
        checkout.status = "paid"
        checkout.payment_id = payment_id or _new_id("pay")
        checkout.tx_id = tx_id or _new_id("tx")
        checkout.paid_at = paid_at or self.now()
        return checkout

    def mark_payment_pending(self, checkout_id: str) -> FakeCheckout:
        """The payer has started paying."""
        return self._mark(checkout_id, "payment_pending")

    def mark_cancelled(self, checkout_id: str) -> FakeCheckout:
        """The payer gave up on the checkout page."""
        return self._mark(checkout_id, "cancelled")

    def mark_expired(self, checkout_id: str) -> FakeCheckout:
        """The checkout ran out of time before it was paid."""
        return self._mark(checkout_id, "expired")

    def _mark(self, checkout_id: str, status: str) -> FakeCheckout:
        checkout = self.read_checkout(checkout_id)
        checkout.status = status
        return checkout

    def settle_refund(self, refund_id: str, failure_code: str | None = None) -> FakeRefund:
        """Settle a pending refund: succeeded, or failed with `failure_code`."""
        refund = self.read_refund(refund_id)
        if refund.status != "pending":
            raise ValueError(f"Refund {refund_id} is {refund.status}, not pending.")
        self._settle(refund, failure_code)
        return refund

    def _settle(self, refund: FakeRefund, failure_code: str | None) -> None:
        if failure_code is None:
            refund.status, refund.refunded_at = "succeeded", self.now()
        else:
            refund.status, refund.failure_code = "failed", failure_code
        if self.refund_callbacks:
            sending = self.send_callback(
                refund.checkout.text("callbackUrl"), refund.settled_event()
            )
            task = asyncio.get_running_loop().create_task(sending)
            self._deliveries.add(task)  # kept until done: the loop holds tasks only weakly
            task.add_done_callback(self._deliveries.discard)

    # --- callbacks --------------------------------------------------------------------------

    async def send_callback(self, url: str, payload: dict[str, object]) -> SentCallback:
        """Sign and send one callback now; it is also kept in `sent_callbacks`."""
        sent = await deliver(url, self.callback_secret, payload)
        self.sent_callbacks.append(sent)
        return sent

    async def drain_callbacks(self) -> None:
        """Wait for the refund callbacks still being sent (each is bounded by its timeout)."""
        await asyncio.gather(*self._deliveries, return_exceptions=True)
