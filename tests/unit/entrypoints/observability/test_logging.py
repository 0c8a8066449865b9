"""Log lines: JSON off a terminal, a readable line on one, each with its request's fields."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest

from tests.unit.entrypoints.observability.scopes import request_scope
from ticketing_service.entrypoints.observability.logging import configure_logging
from ticketing_service.entrypoints.observability.request_context import (
    note_reservation,
)

log = logging.getLogger("ticketing_service.test")
SECRET = "tok-never-in-the-output"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_off_a_terminal_each_record_is_one_json_line(captured_logs: io.StringIO) -> None:
    log.info("hold %s created", "r-1")
    log.warning("second")
    first, second = lines(captured_logs)
    assert first["message"] == "hold r-1 created"
    assert (first["level"], first["logger"]) == ("INFO", "ticketing_service.test")
    assert str(first["time"]).endswith("+00:00")
    assert second["level"] == "WARNING"


def test_the_time_is_utc_to_the_millisecond_in_every_second(captured_logs: io.StringIO) -> None:
    # Two records in one second, then one in the next: the text kept for a second is only
    # reused within it.
    created = [1_769_850_307.042, 1_769_850_307.999, 1_769_850_307.9999996, 1_769_850_308.5]
    for when in created:
        record = log.makeRecord(log.name, logging.INFO, __file__, 1, "at %s", (when,), None)
        record.created = when
        log.handle(record)
    assert [entry["time"] for entry in lines(captured_logs)] == [
        "2026-01-31T09:05:07.042+00:00",
        "2026-01-31T09:05:07.999+00:00",
        "2026-01-31T09:05:08.000+00:00",  # rounded to the microsecond first, as datetime does
        "2026-01-31T09:05:08.500+00:00",
    ]
    assert [entry["time"] for entry in lines(captured_logs)] == [
        datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds") for when in created
    ]


def test_private_marks_on_a_record_are_not_written(captured_logs: io.StringIO) -> None:
    log.info("composed", extra={"_composed_by_service": True, "grpc_code": "OK"})
    [entry] = lines(captured_logs)
    assert entry["grpc_code"] == "OK"
    assert not [key for key in entry if key.startswith("_") or key == "composed_by_service"]


def test_uvicorns_coloured_copy_of_the_message_is_not_written(captured_logs: io.StringIO) -> None:
    # Through the test's own logger: other tests may have set uvicorn's loggers' levels.
    log.info("Started server process [%d]", 7, extra={"color_message": "Started \x1b[36m%d\x1b[0m"})
    [entry] = lines(captured_logs)
    assert entry["message"] == "Started server process [7]"
    assert "color_message" not in entry


def test_records_inside_a_request_carry_its_id_rpc_and_reservation(
    captured_logs: io.StringIO,
) -> None:
    with request_scope("req-1", rpc="ConfirmPayment"):
        log.info("before")
        note_reservation("6f1d3c2a-8f0e-4a51-9a5e-0c7b2d1e4f6a")
        log.info("after")
    log.info("outside")
    before, after, outside = lines(captured_logs)
    assert (before["request_id"], before["rpc"]) == ("req-1", "ConfirmPayment")
    assert "reservation_id" not in before
    assert after["reservation_id"] == "6f1d3c2a-8f0e-4a51-9a5e-0c7b2d1e4f6a"
    assert not {"request_id", "rpc", "reservation_id"} & outside.keys()


def test_extra_fields_are_included_and_secrets_are_not(captured_logs: io.StringIO) -> None:
    log.info("callback from Bearer %s", SECRET, extra={"duration_ms": 2.5, "authorization": SECRET})
    [entry] = lines(captured_logs)
    assert entry["duration_ms"] == 2.5
    assert entry["authorization"] == "[REDACTED]"
    assert SECRET not in captured_logs.getvalue()


def test_an_exception_is_one_field_of_the_line_with_secrets_masked(
    captured_logs: io.StringIO,
) -> None:
    try:
        raise RuntimeError(f"upstream said token={SECRET}")
    except RuntimeError:
        log.exception("forwarding failed")
    [entry] = lines(captured_logs)
    assert "RuntimeError" in str(entry["exception"])
    assert SECRET not in captured_logs.getvalue()


def test_a_terminal_gets_a_readable_line_with_the_request_fields() -> None:
    terminal = Terminal()
    handler = configure_logging(terminal)
    try:
        with request_scope("req-2", route="/healthz"):
            log.info("ok", extra={"http_status": 200})
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = terminal.getvalue().splitlines()
    assert " INFO    ticketing_service.test [request_id=req-2 route=/healthz] ok" in line
    assert line.endswith("http_status=200")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_configuring_again_replaces_the_handler_instead_of_adding_one() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(first)
    handler = configure_logging(second)
    try:
        log.info("once")
    finally:
        logging.getLogger().removeHandler(handler)
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


FORGED = "\n06:00:00.000 ERROR   ticketing_service.rpc forged\r\x1b[2K\x1b[1A\x85\x7f"


def test_a_terminal_line_escapes_control_characters_so_no_line_can_be_forged() -> None:
    terminal = Terminal()
    handler = configure_logging(terminal)
    try:
        with request_scope("req-3", route=f"/foo{FORGED}"):
            log.info("reservation %s", FORGED, extra={"detail": FORGED})
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = terminal.getvalue().splitlines()
    escaped = r"\n06:00:00.000 ERROR   ticketing_service.rpc forged\r\x1b[2K\x1b[1A\x85\x7f"
    assert f"route=/foo{escaped}]" in line
    assert f"reservation {escaped} detail={escaped}" in line
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line)


# Bidi controls: after U+202E `exe.txt` shows as `txt.exe`; U+2028 and U+2029 break lines in
# some viewers.
UNICODE_CONTROLS = (
    "\u202e\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c\u2028\u2029"
)


def test_a_terminal_line_escapes_bidi_controls_and_unicode_line_breaks() -> None:
    terminal = Terminal()
    handler = configure_logging(terminal)
    try:
        log.info("upload %s", f"invoice{UNICODE_CONTROLS}txt.exe")
    finally:
        logging.getLogger().removeHandler(handler)
    [line] = terminal.getvalue().splitlines()
    escaped = UNICODE_CONTROLS.encode("unicode_escape").decode()
    assert line.endswith(f" upload invoice{escaped}txt.exe")


def test_a_json_line_writes_them_and_del_and_c1_as_escapes_that_read_back_the_same(
    captured_logs: io.StringIO,
) -> None:
    text = f"invoice{UNICODE_CONTROLS}\x7f\x85\x9b[2Ktxt.exe 김"
    log.info("upload %s", text, extra={"detail": text})
    written = captured_logs.getvalue()
    assert not set(written) & set(f"{UNICODE_CONTROLS}\x7f\x85\x9b")
    [entry] = lines(captured_logs)
    assert (entry["message"], entry["detail"]) == (f"upload {text}", text)


def test_a_json_line_otherwise_plain_ascii_writes_del_as_an_escape(
    captured_logs: io.StringIO,
) -> None:
    log.info("path /a\x7fb")
    assert "\x7f" not in captured_logs.getvalue()
    assert [entry["message"] for entry in lines(captured_logs)] == ["path /a\x7fb"]


def test_a_terminal_traceback_keeps_its_lines_each_indented_with_controls_escaped() -> None:
    terminal = Terminal()
    handler = configure_logging(terminal)
    try:
        try:
            raise RuntimeError(f"upstream said{FORGED}")
        except RuntimeError:
            log.exception("refund failed")
    finally:
        logging.getLogger().removeHandler(handler)
    first, *rest = terminal.getvalue().splitlines()
    assert first.endswith(" ERROR   ticketing_service.test refund failed")
    assert rest[0] == "    Traceback (most recent call last):"
    assert all(line.startswith("    ") for line in rest)
    assert r"    06:00:00.000 ERROR   ticketing_service.rpc forged\r\x1b[2K\x1b[1A\x85\x7f" in rest
    assert "\x1b" not in terminal.getvalue()
