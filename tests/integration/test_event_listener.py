"""The LISTEN connection through an outage: it tries again every second, and says so in a few
lines rather than one a second."""

from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import urlsplit

import pytest

from tests.postgres import run
from ticketing_service.adapters.db.event_listener import PostgresEventSignal
from ticketing_service.adapters.db.pool import Database, PoolSettings

GUARD_SECONDS = 30
FAILURES_BEFORE_IT_EXISTS = 20


async def test_an_outage_is_logged_at_the_first_second_fourth_failure_and_so_on_then_its_end(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A database that does not exist yet: every attempt fails at once, until it is created.
    missing = f"listener_{uuid.uuid4().hex[:8]}"
    url = urlsplit(database_url)._replace(path=f"/{missing}").geturl()
    signal = PostgresEventSignal(Database(url, PoolSettings()), reconnect_seconds=0)
    with caplog.at_level(logging.INFO, logger="ticketing_service.adapters.db.event_listener"):
        listener = asyncio.create_task(signal.run())
        try:
            async with asyncio.timeout(GUARD_SECONDS):
                # Each failed attempt wakes the watchers once (a bump).
                while signal.generation() < FAILURES_BEFORE_IT_EXISTS:  # noqa: ASYNC110 - its attempts: no event reports them
                    await asyncio.sleep(0.01)
                await run(database_url, f'CREATE DATABASE "{missing}"')
                await signal.listening.wait()
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await run(database_url, f'DROP DATABASE IF EXISTS "{missing}" WITH (FORCE)')
    messages = [record.getMessage() for record in caplog.records]
    *outage, recovery = messages
    failures = int(recovery.split("after ")[1].split()[0])
    assert failures >= FAILURES_BEFORE_IT_EXISTS
    assert recovery == f"event listener listens again, after {failures} failed attempts"
    logged = [2**k for k in range(failures.bit_length())]  # 1, 2, 4, … up to `failures`
    assert outage == [
        f"event listener could not listen (InvalidCatalogNameError), {n} in a row" for n in logged
    ]
