"""LISTEN/NOTIFY: wakes this process's event watchers when any replica numbers new events."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from ticketing_service.adapters.db.events_repository import NEW_EVENTS_CHANNEL
from ticketing_service.adapters.db.pool import Database

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0


class PostgresEventSignal:
    """The EventSignal port on one dedicated LISTEN connection (asyncpg's `add_listener`),
    made as the pool makes its own and made again when it drops."""

    def __init__(self, database: Database, reconnect_seconds: float = RECONNECT_SECONDS) -> None:
        self._database = database
        self._reconnect_seconds = reconnect_seconds
        # Attempts to listen that failed since it last listened.
        self._failures = 0
        self._generation = 0
        # Set, and replaced by a fresh one, at every bump: a waiter holds the one of its time.
        self._bumped = asyncio.Event()
        self.listening = asyncio.Event()

    def generation(self) -> int:
        """A counter that grows on every notification (and on every reconnect)."""
        return self._generation

    async def wait_beyond(self, generation: int, timeout: float) -> None:  # noqa: ASYNC109  # a bounded wait is the contract
        """Return once a notification came after `generation`, or after `timeout` seconds."""
        if self._generation > generation:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._bumped.wait()
        except TimeoutError:
            pass

    async def run(self) -> None:
        """Listen until cancelled; after a lost connection, reconnect and wake everyone."""
        while True:
            try:
                await self._listen()
                log.warning("event listener lost its connection; it connects again")
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
                self._failures += 1
                # The 1st, 2nd, 4th, 8th… in a row: an outage is not a line every second.
                if self._failures & (self._failures - 1) == 0:
                    reason = type(error).__name__
                    log.warning(
                        "event listener could not listen (%s), %d in a row", reason, self._failures
                    )
            self.listening.clear()
            # Whatever was announced while we were away is found by the watchers' re-read.
            self._bump()
            await asyncio.sleep(self._reconnect_seconds)

    async def _listen(self) -> None:
        """Listen on one connection until it closes."""
        lost = asyncio.Event()
        connection = await self._database.connect()
        try:
            connection.add_termination_listener(lambda _: lost.set())
            await connection.add_listener(NEW_EVENTS_CHANNEL, self._notified)
            self.listening.set()
            if self._failures:
                log.info("event listener listens again, after %d failed attempts", self._failures)
                self._failures = 0
            self._bump()
            await lost.wait()
        finally:
            connection.terminate()

    def _notified(self, *_: Any) -> None:
        """asyncpg's listener callback: (connection, pid, channel, payload)."""
        self._bump()

    def _bump(self) -> None:
        self._generation += 1
        bumped, self._bumped = self._bumped, asyncio.Event()
        bumped.set()
