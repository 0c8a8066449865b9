"""LISTEN/NOTIFY: wakes this process's event watchers when any replica numbers new events."""

from __future__ import annotations

import asyncio
import logging

import psycopg

from ticketing_service.adapters.db.events_repository import NEW_EVENTS_CHANNEL

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0


class PostgresEventSignal:
    """The EventSignal port on one dedicated LISTEN connection, reconnecting when it drops."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._generation = 0
        self._changed = asyncio.Condition()
        self.listening = asyncio.Event()

    def generation(self) -> int:
        """A counter that grows on every notification (and on every reconnect)."""
        return self._generation

    async def wait_beyond(self, generation: int, timeout: float) -> None:  # noqa: ASYNC109  # a bounded wait is the contract
        """Return once a notification came after `generation`, or after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self._generation > generation)
        except TimeoutError:
            pass

    async def run(self) -> None:
        """Listen until cancelled; after a lost connection, reconnect and wake everyone."""
        while True:
            try:
                await self._listen()
            except (psycopg.Error, OSError) as error:
                log.warning("event listener lost its connection: %s", type(error).__name__)
            self.listening.clear()
            # Whatever was announced while we were away is found by the watchers' re-read.
            await self._bump()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _listen(self) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._database_url, autocommit=True, connect_timeout=5
        ) as conn:
            await conn.execute(f"LISTEN {NEW_EVENTS_CHANNEL}")
            self.listening.set()
            await self._bump()
            async for _ in conn.notifies():
                await self._bump()

    async def _bump(self) -> None:
        async with self._changed:
            self._generation += 1
            self._changed.notify_all()
