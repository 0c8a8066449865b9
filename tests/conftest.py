"""Fixtures every kind of test uses."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from ticketing_service.entrypoints.observability.logging import configure_logging


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line of the test, as the service writes them off a terminal (JSON lines)."""
    stream = io.StringIO()
    handler = configure_logging(stream)
    yield stream
    logging.getLogger().removeHandler(handler)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the embedded Postgres servers this process started, while its session still runs.

    pgserver stops them in an exit hook, but pytest-xdist kills a worker that takes over 10 s
    to exit, and stopping two on a loaded machine (one at a time: pgserver's lock is shared by
    every process of the user) took longer: they ran on after the test run.
    """
    postgres_server = sys.modules.get("pgserver.postgres_server")
    if postgres_server is not None:
        for server in list(postgres_server.PostgresServer._instances.values()):
            server.cleanup()
