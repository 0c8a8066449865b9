"""Composed lines (one per call): written directly when only our JSON handler would see them,
as the same JSON a record gives; an ordinary record in every other setup."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ticketing_service.entrypoints.observability.logging import (
    JsonFormatter,
    configure_logging,
    log_composed,
)
from ticketing_service.entrypoints.observability.request_context import request_scope

log = logging.getLogger("ticketing_service.test.composed")
FIELDS = {"grpc_code": "OK", "reason": "", "duration_ms": 12.5}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Failing(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("the pipe is closed")


@pytest.fixture
def formatted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The messages of the records the JSON formatter rendered (a direct line makes none)."""
    seen: list[str] = []
    original = JsonFormatter.format

    def spy(self: JsonFormatter, record: logging.LogRecord) -> str:
        seen.append(record.getMessage())
        return original(self, record)

    monkeypatch.setattr(JsonFormatter, "format", spy)
    return seen


@contextmanager
def served_by(stream: io.StringIO) -> Iterator[io.StringIO]:
    """The root logger with `configure_logging(stream)`'s handler as its only one, the way a
    server process has it. Inside the test itself: pytest adds its capturing handlers to the
    root when the test starts, after the fixtures."""
    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers = [configure_logging(stream)]
    try:
        yield stream
    finally:
        root.handlers = kept


def entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_direct_line_is_the_json_a_record_would_give(formatted: list[str]) -> None:
    server_stream = io.StringIO()
    with (
        served_by(server_stream),
        request_scope("req-1", rpc="ConfirmPayment", reservation_id="r-1"),
    ):
        log_composed(log, logging.INFO, "ConfirmPayment OK in 12.5 ms", FIELDS)
        assert formatted == []  # written directly: no record was made and formatted
        log.addFilter(lambda record: True)  # any logger filter: the line becomes a record
        try:
            log_composed(log, logging.INFO, "ConfirmPayment OK in 12.5 ms", FIELDS)
        finally:
            log.filters.clear()
    assert formatted == ["ConfirmPayment OK in 12.5 ms"]
    direct, through_record = entries(server_stream)
    for entry in (direct, through_record):
        assert str(entry.pop("time")).endswith("+00:00")
    assert direct == through_record
    assert direct == {
        "level": "INFO",
        "logger": "ticketing_service.test.composed",
        "message": "ConfirmPayment OK in 12.5 ms",
        "request_id": "req-1",
        "rpc": "ConfirmPayment",
        "reservation_id": "r-1",
        "grpc_code": "OK",
        "reason": "",
        "duration_ms": 12.5,
    }
    # The same order of keys too: a collector reading the text sees one shape.
    assert list(json.loads(server_stream.getvalue().splitlines()[0])) == [
        "time",
        *through_record,
    ]


def test_a_direct_line_respects_the_level(formatted: list[str]) -> None:
    server_stream = io.StringIO()
    with served_by(server_stream):
        log_composed(log, logging.DEBUG, "health OK", FIELDS)
        assert server_stream.getvalue() == ""
        log_composed(log, logging.WARNING, "ConfirmPayment UNAVAILABLE in 5.0 ms", FIELDS)
    [entry] = entries(server_stream)
    assert entry["level"] == "WARNING"
    assert formatted == []


def test_with_another_handler_on_the_root_every_handler_gets_a_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server_stream = io.StringIO()
    with served_by(server_stream):
        logging.getLogger().addHandler(caplog.handler)
        log_composed(log, logging.INFO, "ConfirmPayment OK in 12.5 ms", FIELDS)
    [record] = caplog.records
    assert record.getMessage() == "ConfirmPayment OK in 12.5 ms"
    assert vars(record)["grpc_code"] == "OK"
    [entry] = entries(server_stream)
    assert entry["grpc_code"] == "OK"
    assert not [key for key in entry if key.startswith("_")]  # the safe mark stays private


def test_a_terminal_gets_its_readable_line() -> None:
    terminal = Terminal()
    with served_by(terminal):
        log_composed(log, logging.INFO, "ConfirmPayment OK in 12.5 ms", FIELDS)
    [line] = terminal.getvalue().splitlines()
    assert line.endswith("ConfirmPayment OK in 12.5 ms grpc_code=OK reason= duration_ms=12.5")


def test_a_failed_write_is_reported_like_any_handler_failure_and_serving_goes_on(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with served_by(Failing()):
        log_composed(log, logging.INFO, "ConfirmPayment OK in 12.5 ms", FIELDS)
    assert "OSError: the pipe is closed" in capsys.readouterr().err
