"""The faults the chaos run injects, on a timeline relative to the rush's length.

Each fault is logged with when it began and how long the system took to be back (a replica
serving again, Postgres accepting connections again).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.processes import Replica, RestartablePostgres
from bench.hostile import hostile
from ticketing_service.entrypoints.dev.payment_state import Endpoint, Fault, PaymentServiceState

HOSTILE_SOCKETS = 140
# The shim cuts an idle connection after its read timeout (10 s by default); a round of
# hostile sockets is closed by us after this long if the shim has not cut them all.
HOSTILE_ROUND_SECONDS = 15.0
POSTGRES_DOWN_SECONDS = 3.0
PAYMENT_ENDPOINTS: tuple[Endpoint, ...] = ("create_checkout", "get_checkout")


@dataclass
class FaultLog:
    """What was injected, one line each, timed from the start of the rush."""

    began: float = field(default_factory=time.monotonic)
    lines: list[str] = field(default_factory=list)
    hostile_opened: int = 0
    hostile_cut: int = 0

    def note(self, at: float, what: str) -> None:
        self.lines.append(f"t={at - self.began:5.1f} s  {what}")
        print(f"chaos: {self.lines[-1]}", flush=True)


class Faults:
    """Injects the faults of one run over `seconds`, in a fixed order."""

    def __init__(
        self,
        seconds: float,
        replicas: list[Replica],
        postgres: RestartablePostgres,
        payments: PaymentServiceState,
        log: FaultLog,
    ) -> None:
        self._seconds = seconds
        self._replicas = replicas
        self._postgres = postgres
        self._payments = payments
        self.log = log

    async def run(self) -> None:
        """The whole timeline; returns once the last fault is over."""
        d = self._seconds
        steps: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (0.15 * d, lambda: self._kill_and_restart(self._replicas[0], 0.10 * d)),
            (0.35 * d, lambda: self._payment_outage(0.12 * d, 0.12 * d)),
            (0.65 * d, self._restart_postgres),
            (0.80 * d, lambda: self._kill_and_restart(self._replicas[1], 0.08 * d)),
            (0.92 * d, lambda: self._redeploy(self._replicas[0])),
        ]
        for at, step in steps:
            await asyncio.sleep(max(0.0, self.log.began + at - time.monotonic()))
            await step()

    async def _kill_and_restart(self, replica: Replica, down_seconds: float) -> None:
        began = time.monotonic()
        await asyncio.to_thread(replica.kill)
        self.log.note(began, f"SIGKILL replica {replica.name} (port {replica.port})")
        await asyncio.sleep(down_seconds)
        restarted = time.monotonic()
        await asyncio.to_thread(replica.start, migrate=False)
        took = time.monotonic() - restarted
        self.log.note(restarted, f"restarted replica {replica.name}: serving again in {took:.1f} s")

    async def _redeploy(self, replica: Replica) -> None:
        """What a deploy does to a replica: SIGTERM (a graceful stop), then a new process."""
        began = time.monotonic()
        await asyncio.to_thread(replica.stop)
        took = time.monotonic() - began
        self.log.note(began, f"SIGTERM replica {replica.name} (a deploy): stopped in {took:.1f} s")
        restarted = time.monotonic()
        await asyncio.to_thread(replica.start, migrate=False)
        took = time.monotonic() - restarted
        self.log.note(restarted, f"restarted replica {replica.name}: serving again in {took:.1f} s")

    async def _payment_outage(self, hang_seconds: float, error_seconds: float) -> None:
        faults = self._payments.faults
        began = time.monotonic()
        self._set(faults, "hang")
        self.log.note(began, f"payment service hangs ({hang_seconds:.0f} s)")
        await asyncio.sleep(hang_seconds)
        erring = time.monotonic()
        self._set(faults, "error_500")
        self._payments.release.set()  # the hung requests answer now (503)
        self.log.note(erring, f"payment service answers 500 ({error_seconds:.0f} s)")
        await asyncio.sleep(error_seconds)
        for endpoint in PAYMENT_ENDPOINTS:
            faults.pop(endpoint, None)
        self.log.note(time.monotonic(), "payment service answers normally again")

    @staticmethod
    def _set(faults: dict[Endpoint, Fault], fault: Fault) -> None:
        for endpoint in PAYMENT_ENDPOINTS:
            faults[endpoint] = fault

    async def _restart_postgres(self) -> None:
        began = time.monotonic()
        await asyncio.to_thread(self._postgres.stop)
        self.log.note(began, "Postgres stopped (fast shutdown: sessions cut)")
        await asyncio.sleep(POSTGRES_DOWN_SECONDS)
        started = time.monotonic()
        await asyncio.to_thread(self._postgres.start)
        took = time.monotonic() - started
        self.log.note(started, f"Postgres started again on the same data and socket ({took:.1f} s)")


async def hostile_sockets(port: int, stop: asyncio.Event, log: FaultLog) -> None:
    """Keep ~140 hostile connections on the shim (silent, half headers, no body, a dripping
    body), opening a new round once the shim has cut the last one, until `stop`."""
    while not stop.is_set():
        async with hostile(port, HOSTILE_SOCKETS) as sockets:
            if not log.hostile_opened:
                log.note(time.monotonic(), f"{len(sockets)} hostile sockets open on the shim")
            log.hostile_opened += len(sockets)
            cut = asyncio.ensure_future(_all_cut(sockets))
            stopping = asyncio.ensure_future(stop.wait())
            either: list[asyncio.Future[Any]] = [cut, stopping]
            await asyncio.wait(
                either, timeout=HOSTILE_ROUND_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in either:
                waiter.cancel()
            await asyncio.gather(*either, return_exceptions=True)
            log.hostile_cut += sum(s.at_eof() for s in sockets)


async def _all_cut(sockets: list[asyncio.StreamReader]) -> None:
    """Return once the shim has closed every one of `sockets`."""
    await asyncio.gather(*(s.read() for s in sockets), return_exceptions=True)
