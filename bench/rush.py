"""The ticket rush: many buyers race for few seats through the real gRPC API, then pay.

Every buyer asks for a seat at once (`--concurrency` at a time); the holds granted are then paid
(through the webhook shim when it runs, else ConfirmPayment). The database is checked
afterwards: no tier holds more accepted registrations and live holds than its capacity, and
every reservation with a paid payment has exactly one registration.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import grpc
from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from bench.channels import Stubs
from bench.phases import CpuSampler, Phase, reason_of, run_phase

CALL_SECONDS = 30.0
PRICE = 50000


@dataclass
class Rush:
    """What the rush did and what the database says afterwards."""

    buyers: int
    seats: int
    seconds: float = 0.0
    start: Phase = field(default_factory=lambda: Phase("rush StartPaidRegistration"))
    pay: Phase = field(default_factory=lambda: Phase("rush payment"))
    answers: Counter[str] = field(default_factory=Counter)
    paid: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    registered: int = 0
    live_holds: int = 0
    paid_reservations: int = 0


Pay = Callable[[reservation_pb2.Reservation, int], Awaitable[str]]


async def ticket_rush(
    stubs: Stubs,
    pay: Pay,
    database_url: str,
    rush: Rush,
    concurrency: int,
    cpu: CpuSampler,
) -> Rush:
    """Run the rush and verify it in the database."""
    event_id = f"rush-{uuid.uuid4()}"
    tier = settings_pb2.TierInput(
        tier_id="rush", name="Rush", price_amount=PRICE, capacity=rush.seats
    )
    await stubs.next().UpdateTicketingSettings(
        pb.UpdateTicketingSettingsRequest(event_id=event_id, event_title="Rush", tiers=[tier]),
        timeout=CALL_SECONDS,
    )

    async def buy(i: int) -> reservation_pb2.Reservation | None:
        request = pb.StartPaidRegistrationRequest(
            event_id=event_id, tier_id="rush", user_id=f"buyer-{i}"
        )
        try:
            answer = await stubs.next().StartPaidRegistration(request, timeout=CALL_SECONDS)
        except grpc.aio.AioRpcError as error:
            rush.answers[reason_of(error)] += 1
            return None
        rush.answers["HELD"] += 1
        reservation: reservation_pb2.Reservation = answer.reservation
        return reservation

    began = time.perf_counter()
    held = await run_phase(rush.start, rush.buyers, buy, concurrency, 240, cpu)
    holds = [h for h in held if h is not None]

    async def settle(i: int) -> str:
        outcome = await pay(holds[i], i)
        rush.paid[outcome] += 1
        return outcome

    await run_phase(rush.pay, len(holds), settle, concurrency, 240, cpu)
    rush.seconds = time.perf_counter() - began
    await verify(database_url, event_id, rush)
    return rush


async def verify(database_url: str, event_id: str, rush: Rush) -> None:
    """Check in the database that nothing was oversold and every payment got one seat."""
    conn = await asyncpg.connect(database_url)
    try:
        tiers = await conn.fetch(
            "SELECT t.tier_id, t.capacity,"
            " (SELECT count(*) FROM registrations g"
            "   WHERE g.event_id = t.event_id AND g.tier_id = t.tier_id) AS registered,"
            " (SELECT count(*) FROM reservations r WHERE r.event_id = t.event_id"
            "   AND r.tier_id = t.tier_id AND r.status = 'pending_payment'"
            "   AND r.expire_time > now()) AS live_holds"
            " FROM tiers t WHERE t.event_id = $1",
            event_id,
        )
        for tier_id, capacity, registered, live_holds in tiers:
            rush.registered += registered
            rush.live_holds += live_holds
            if capacity is not None and registered + live_holds > capacity:
                rush.problems.append(
                    f"tier {tier_id} oversold: {registered} registered + {live_holds} held"
                    f" > {capacity} seats"
                )
        paid = await conn.fetch(
            "SELECT r.reservation_id, r.status, count(DISTINCT g.registration_id)"
            " FROM reservations r"
            " JOIN payments p ON p.reservation_id = r.reservation_id AND p.status = 'paid'"
            " LEFT JOIN registrations g ON g.reservation_id = r.reservation_id"
            " WHERE r.event_id = $1 GROUP BY 1, 2",
            event_id,
        )
    finally:
        await conn.close()
    rush.paid_reservations = len(paid)
    wrong = [(rid, status, n) for rid, status, n in paid if n != 1]
    if wrong:
        rush.problems.append(
            f"{len(wrong)} paid reservations without exactly one registration,"
            f" e.g. {wrong[0][0]} ({wrong[0][1]}, {wrong[0][2]} registrations)"
        )
    if rush.paid_reservations != rush.answers["HELD"]:
        rush.problems.append(
            f"{rush.answers['HELD']} holds granted but {rush.paid_reservations} paid"
        )
