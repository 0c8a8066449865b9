"""The chaos run's ticket rush: buyers arrive at a steady rate, hold a seat, and most pay.

Events open one after another during the run, each with two small paid tiers, so seats are
still being fought over when each fault strikes. A buyer who gets a hold pays through the
payment service fake (as its checkout page would) and the fake's signed callback goes through
the shim; some pay and their callback is lost (reconciliation must find the payment), some
never pay (the sweeper must free the seat), and some who got a seat try for a second one at
the same event (the service must refuse it).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass

from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from bench.chaos.clients import GaveUp, Refused, Replicas, Tally, send_callback
from ticketing_service.entrypoints.dev.payment_state import PaymentServiceState

PRICE = 30000
TIERS = ("floor", "balcony")
# Shares of the buyers who get a hold: never pay, pay but their callback is lost.
ABANDON_SHARE = 0.15
LOST_CALLBACK_SHARE = 0.10
# Share of the buyers with a seat who then try for one in the other tier.
SECOND_TRY_SHARE = 0.2
THINK_SECONDS = 3.0
# The answers a buyer may get that are not a fault of the service.
EXPECTED_REFUSALS = frozenset({"SOLD_OUT"})


@dataclass(frozen=True)
class RushPlan:
    """How many buyers arrive, how fast, and how many events and seats there are."""

    seconds: float
    buyers_per_second: float
    events: int
    seats_per_tier: int


class Rush:
    """Opens the events on schedule and sends the buyers in."""

    def __init__(
        self,
        plan: RushPlan,
        replicas: Replicas,
        payments: PaymentServiceState,
        callback_url: str,
        tally: Tally,
        rng: random.Random,
    ) -> None:
        self.plan = plan
        self.events: list[str] = []
        self._replicas = replicas
        self._payments = payments
        self._callback_url = callback_url
        self._tally = tally
        self._rng = rng
        self._run = uuid.uuid4().hex[:8]

    async def run(self) -> int:
        """Every buyer's story, to its end; the number of buyers."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        buyers: list[asyncio.Task[None]] = []
        total = int(self.plan.seconds * self.plan.buyers_per_second)
        opened = 0
        for n in range(total):
            at = n / self.plan.buyers_per_second
            due = int(at * self.plan.events / self.plan.seconds) + 1
            while opened < min(due, self.plan.events):
                await self._open_event(opened)
                opened += 1
            await asyncio.sleep(max(0.0, began + at - loop.time()))
            buyers.append(asyncio.create_task(self._buyer(n)))
        await asyncio.gather(*buyers)
        return total

    async def _open_event(self, number: int) -> None:
        event_id = f"chaos-{self._run}-{number}"
        tiers = [
            settings_pb2.TierInput(
                tier_id=tier, name=tier.title(), price_amount=PRICE,
                capacity=self.plan.seats_per_tier,
            )
            for tier in TIERS
        ]  # fmt: skip
        request = pb.UpdateTicketingSettingsRequest(
            event_id=event_id, event_title=f"Chaos {number}", tiers=tiers
        )
        try:
            await self._replicas.call("UpdateTicketingSettings", request)
        except (Refused, GaveUp) as error:
            self._tally.unexpected[f"opening an event: {error!r}"] += 1
            return
        self.events.append(event_id)

    async def _buyer(self, n: int) -> None:
        if not self.events:
            self._tally.stories["no event open"] += 1
            return
        event_id = self._rng.choice(self.events)
        tier = self._rng.choice(TIERS)
        user = f"user-{n}"
        held = await self._hold(event_id, tier, user)
        if held is None:
            return
        choice = self._rng.random()
        if choice < ABANDON_SHARE:
            self._tally.stories["held, never paid"] += 1
            return
        await asyncio.sleep(self._rng.uniform(0, THINK_SECONDS))
        checkout = self._payments.mark_paid(held.checkout_id)
        if choice < ABANDON_SHARE + LOST_CALLBACK_SHARE:
            self._tally.stories["paid, callback lost"] += 1
            return
        try:
            outcome = await send_callback(
                self._payments, self._callback_url, checkout.paid_event(), self._tally, self._rng
            )
        except (Refused, GaveUp) as error:
            self._tally.unexpected[f"callback: {error!r}"] += 1
            return
        self._tally.stories[f"paid, callback answered {outcome}"] += 1
        if outcome == "CONFIRMED" and self._rng.random() < SECOND_TRY_SHARE:
            await self._second_try(event_id, tier, user)

    async def _hold(
        self, event_id: str, tier: str, user: str
    ) -> reservation_pb2.Reservation | None:
        request = pb.StartPaidRegistrationRequest(event_id=event_id, tier_id=tier, user_id=user)
        try:
            answer = await self._replicas.call("StartPaidRegistration", request)
        except Refused as refused:
            if refused.reason in EXPECTED_REFUSALS:
                self._tally.stories[f"refused {refused.reason}"] += 1
            else:
                self._tally.unexpected[f"StartPaidRegistration {refused.reason}"] += 1
            return None
        except GaveUp:
            self._tally.unexpected["StartPaidRegistration: gave up retrying"] += 1
            return None
        reservation: reservation_pb2.Reservation = answer.reservation
        return reservation

    async def _second_try(self, event_id: str, tier: str, user: str) -> None:
        other = next(t for t in TIERS if t != tier)
        request = pb.StartPaidRegistrationRequest(event_id=event_id, tier_id=other, user_id=user)
        try:
            await self._replicas.call("StartPaidRegistration", request)
        except Refused as refused:
            self._tally.stories[f"second seat refused {refused.reason}"] += 1
            if refused.reason != "ALREADY_REGISTERED":
                self._tally.unexpected[f"second seat refused {refused.reason}"] += 1
            return
        except GaveUp:
            self._tally.unexpected["second seat: gave up retrying"] += 1
            return
        self._tally.unexpected["a registered user was given a second hold"] += 1
