"""Which signals stop a long-running command: a hangup too, unless it was meant to be ignored."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from ticketing_service.entrypoints.event_loop import stop_signals


@pytest.fixture
def hangup_restored() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, previous)


@pytest.mark.usefixtures("hangup_restored")
def test_a_hangup_stops_a_command_started_from_a_terminal() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    assert stop_signals() == (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@pytest.mark.usefixtures("hangup_restored")
def test_a_command_started_under_nohup_keeps_ignoring_hangups() -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what `nohup` leaves its command
    assert stop_signals() == (signal.SIGTERM, signal.SIGINT)
