"""Timed phases of calls at a fixed concurrency: what each call answered and cost.

A phase sends a list of calls with N concurrent callers and keeps each call's latency and
answer, and the CPU each group of processes spent meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from bench.callbacks import CallbackRefused

T = TypeVar("T")
# CPU seconds used so far, per group of processes (server, shim, postgres, driver).
CpuSampler = Callable[[], dict[str, float]]
CALL_SECONDS = 30.0


def quantiles_ms(latencies: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 in milliseconds (latencies in seconds)."""
    if len(latencies) < 2:
        only = latencies[0] * 1000 if latencies else 0.0
        return only, only, only
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return q[49] * 1000, q[94] * 1000, q[98] * 1000


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call, or its bare status code."""
    return reason_of_status(error.code().value[0], rpc_status.from_call(error))


def reason_of_status(code: int, status: status_pb2.Status | None) -> str:
    """The ErrorInfo reason among a failure's details, or the name of its status code."""
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status is not None else ():
        if detail.Is(info.DESCRIPTOR):
            detail.Unpack(info)
            return str(info.reason)
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), f"code {code}")


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    seconds: float = 0.0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def calls(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def cpu_ms_per_call(self, group: str) -> float:
        return self.cpu_seconds.get(group, 0.0) * 1000 / max(self.calls, 1)

    def cpu_busy(self) -> float:
        """The share of the machine's CPUs the measured processes kept busy."""
        used = sum(seconds for name, seconds in self.cpu_seconds.items() if "/" not in name)
        return used / (self.seconds * (os.cpu_count() or 1))

    def split(self, prefix: str) -> list[float]:
        """The shares of the groups named `prefix…` (parts of one group) in their sum."""
        parts = [seconds for name, seconds in self.cpu_seconds.items() if name.startswith(prefix)]
        total = sum(parts)
        return [part / total for part in parts] if total else []


async def run_phase(
    phase: Phase,
    count: int,
    call: Callable[[int], Awaitable[T]],
    concurrency: int,
    limit_seconds: float,
    cpu: CpuSampler,
) -> list[T | None]:
    """Make calls 0..count-1 with `concurrency` callers; the answers in call order.

    A failed call is counted under its error (the gRPC reason when there is one), never hidden.
    """
    answers: list[T | None] = [None] * count
    indexes = iter(range(count))

    async def caller() -> None:
        for i in indexes:
            began = time.perf_counter()
            try:
                answers[i] = await call(i)
            except grpc.aio.AioRpcError as error:
                phase.errors[reason_of(error)] += 1
            except (OSError, asyncio.IncompleteReadError, CallbackRefused) as error:
                phase.errors[str(error)[:80]] += 1
            phase.latencies.append(time.perf_counter() - began)

    began, cpu_began = time.perf_counter(), cpu()
    async with asyncio.timeout(limit_seconds):
        await asyncio.gather(*(caller() for _ in range(concurrency)))
    phase.seconds = time.perf_counter() - began
    phase.cpu_seconds = {name: used - cpu_began[name] for name, used in cpu().items()}
    return answers
