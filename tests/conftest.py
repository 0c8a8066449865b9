"""Fixtures every kind of test uses."""

from __future__ import annotations

import io
import logging
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
