"""BoundedConfirmer: past its limit of forwards in flight, a callback is refused at once."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.test_grpc_confirmer import CALLBACK
from ticketing_service.entrypoints.webhook.forwarding import (
    BoundedConfirmer,
    ConfirmRejected,
    ConfirmResult,
    PaidCallback,
)


class GatedConfirmer:
    """Holds every confirmation until the gate opens, counting those that arrived."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.arrived = 0

    async def confirm(self, payment: PaidCallback) -> ConfirmResult:
        self.arrived += 1
        await self.gate.wait()
        return ConfirmResult("CONFIRMED", payment.reservation_id, "registration-1")


async def test_past_the_limit_a_callback_is_refused_as_unavailable_without_waiting() -> None:
    inner = GatedConfirmer()
    bounded = BoundedConfirmer(inner, limit=2)
    held = [asyncio.create_task(bounded.confirm(CALLBACK)) for _ in range(2)]
    await asyncio.sleep(0)  # both reach the gate

    with pytest.raises(ConfirmRejected) as caught:
        await bounded.confirm(CALLBACK)

    assert (caught.value.kind, inner.arrived) == ("unavailable", 2)
    inner.gate.set()
    assert [r.outcome for r in await asyncio.gather(*held)] == ["CONFIRMED"] * 2


async def test_a_place_is_freed_when_a_forward_ends_even_by_failing() -> None:
    class Failing:
        async def confirm(self, payment: PaidCallback) -> ConfirmResult:
            raise ConfirmRejected("not_found", "RESERVATION_NOT_FOUND")

    bounded = BoundedConfirmer(Failing(), limit=1)
    for _ in range(3):
        with pytest.raises(ConfirmRejected) as caught:
            await bounded.confirm(CALLBACK)
        assert caught.value.kind == "not_found"  # never "unavailable": the place came back
