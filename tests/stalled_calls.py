"""Calls whose client holds back the request: the call's headers go out, its message never does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

T = TypeVar("T")


async def never_sent() -> AsyncIterator[bytes]:
    """A request stream that never yields its message (for a client-streaming call)."""
    await asyncio.Event().wait()
    yield b""


async def first_ended(calls: list[asyncio.Task[T]], count: int) -> list[asyncio.Task[T]]:
    """The first `count` of `calls` to end, once they have (bounded)."""
    done: set[asyncio.Task[T]] = set()
    pending = set(calls)
    async with asyncio.timeout(30):
        while len(done) < count:
            ended, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            done |= ended
    return list(done)
