"""Composed lines (one per call): ordinary records, marked safe so redaction skips them."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tests.unit.entrypoints.observability.scopes import request_scope
from ticketing_service.entrypoints.observability.logging import configure_logging, log_composed
from ticketing_service.entrypoints.observability.redaction import SAFE_RECORD_FLAG

log = logging.getLogger("ticketing_service.test.composed")
FIELDS = {"grpc_code": "OK", "reason": "", "duration_ms": 12.5}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_composed_line_is_one_json_line_with_its_fields_and_request(
    captured_logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    with request_scope("req-1", rpc="ConfirmPayment"):
        log_composed(log, logging.INFO, "ConfirmPayment OK in 12.5 ms", FIELDS)
    [entry] = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    assert entry["message"] == "ConfirmPayment OK in 12.5 ms"
    assert (entry["request_id"], entry["rpc"], entry["grpc_code"]) == (
        "req-1",
        "ConfirmPayment",
        "OK",
    )
    assert not [key for key in entry if key.startswith("_")]  # the safe mark stays private
    [record] = caplog.records  # every other handler gets the ordinary record too
    assert vars(record)[SAFE_RECORD_FLAG] is True


def test_a_composed_line_respects_the_level(captured_logs: io.StringIO) -> None:
    log_composed(log, logging.DEBUG, "Check OK in 0.1 ms", FIELDS)
    assert captured_logs.getvalue() == ""


def test_a_terminal_gets_its_readable_line() -> None:
    terminal = Terminal()
    handler = configure_logging(terminal)
    try:
        log_composed(log, logging.INFO, "ConfirmPayment OK in 12.5 ms", FIELDS)
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = terminal.getvalue().splitlines()
    assert line.endswith("ConfirmPayment OK in 12.5 ms grpc_code=OK reason= duration_ms=12.5")


def test_the_http_client_s_per_request_lines_are_kept_out_but_its_warnings_are_not(
    captured_logs: io.StringIO,
) -> None:
    http = logging.getLogger("httpx")

    http.info("HTTP Request: POST http://moim-payment/v1/ticket-checkouts")
    http.warning("a warning from the HTTP client")

    messages = [json.loads(line)["message"] for line in captured_logs.getvalue().splitlines()]
    assert messages == ["a warning from the HTTP client"]
