"""Log configuration: JSON lines for collectors, a readable line on a terminal, never a secret.

Every record carries the request it belongs to (`request_id`, `rpc` or `route`,
`reservation_id`) and passes the redaction filter before any formatter sees it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

from ticketing_service.entrypoints.observability.redaction import (
    SAFE_RECORD_FLAG,
    STANDARD_RECORD_ATTRIBUTES,
    RedactionFilter,
    redact_text,
)
from ticketing_service.entrypoints.observability.request_context import current_request
from ticketing_service.entrypoints.observability.sampling import CallerNoiseFilter

CONTEXT_FIELDS = ("request_id", "rpc", "route", "reservation_id")
# Held at WARNING (their warnings and errors pass). At INFO, httpx logs each request to the
# payment service (2.4 % of a server's CPU opening checkouts, measured), pgserver each step of
# starting the embedded Postgres with initdb's whole output (some 50 lines), and Alembic each of
# its plugins as it is imported (seven lines that say nothing of the migrations).
QUIET_LIBRARY_LOGGERS = ("httpx", "pgserver", "alembic.runtime.plugins")
_HANDLER_MARK = "_ticketing_handler"


class RequestContextFilter(logging.Filter):
    """Stamps the current request's fields on each record (an empty string outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add `request_id`, `rpc`, `route` and `reservation_id`, unless a caller set them."""
        context = current_request()
        fields = record.__dict__  # every record passes here: plain dict access is the cheapest
        for name in CONTEXT_FIELDS:
            if not fields.get(name):
                fields[name] = getattr(context, name)
        return True


# Not extras: the record's own attributes, the request fields, private marks (`_...`), and
# uvicorn's `color_message`, its message again with terminal colour codes.
_NOT_EXTRAS = STANDARD_RECORD_ATTRIBUTES | set(CONTEXT_FIELDS) | {"color_message"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _NOT_EXTRAS and key[:1] != "_"
    }


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    if not (record.exc_info or record.stack_info):
        return ""
    parts = []
    if record.exc_info:
        parts.append(formatter.formatException(record.exc_info))
    if record.stack_info:
        parts.append(formatter.formatStack(record.stack_info))
    # Exception messages are written by libraries too: they get the same text net.
    return redact_text("\n".join(parts))


# Unicode's bidi controls (after U+202E, the rest of a line shows reversed) and its line and
# paragraph separators (some viewers break a line on them): neither format writes them raw.
_UNICODE_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x2028, 0x202F), *range(0x2066, 0x206A))
# JSON escapes C0 controls itself, but with ensure_ascii=False it writes DEL, C1 and those raw,
# for a terminal showing the line (`kubectl logs`) to act on. As `\u` escapes they read back as
# the same text.
_RAW_IN_JSON = re.compile(f"[{''.join(map(chr, (*range(0x7F, 0xA0), *_UNICODE_CONTROLS)))}]")


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request fields, extras."""

    def __init__(self) -> None:
        super().__init__()
        # Made once: `json.dumps` with options builds a new encoder for every line.
        self._encoder = json.JSONEncoder(ensure_ascii=False, default=str)

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a single line of JSON, its time in UTC to the millisecond."""
        fields = record.__dict__
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry |= {name: value for name in CONTEXT_FIELDS if (value := fields.get(name))}
        entry |= _extras(record)
        if exception := _exception_text(self, record):
            entry["exception"] = exception
        line = self._encoder.encode(entry)
        plain = line.isascii() and "\x7f" not in line  # DEL is ASCII
        return line if plain else _RAW_IN_JSON.sub(_json_escape, line)


# Control characters (C0, DEL, C1) and the Unicode ones as Python writes them in a literal (`\n`,
# `\x1b`, `\u202e`). Raw, a caller's text (a request path, an upstream message) could start a
# forged line, rewrite one with `\r`, erase lines with ANSI escapes or hide a part of one; a
# traceback's lines are indented for the same reason.
_CONTROL_ESCAPES = {
    c: repr(chr(c))[1:-1] for c in (*range(0x20), *range(0x7F, 0xA0), *_UNICODE_CONTROLS)
}


class ConsoleFormatter(logging.Formatter):
    """A line for people at a terminal: time, level, logger, [request], message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as `HH:MM:SS.mmm LEVEL logger [request_id rpc] message k=v`."""
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        context = " ".join(
            f"{name}={value}" for name in CONTEXT_FIELDS if (value := getattr(record, name, ""))
        )
        line = f"{when} {record.levelname:<7} {record.name}"
        if context:
            line += f" [{context}]"
        line += f" {record.getMessage()}"
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        if extras:
            line += f" {extras}"
        line = line.translate(_CONTROL_ESCAPES)
        if exception := _exception_text(self, record):
            for text in exception.split("\n"):
                line += "\n    " + text.translate(_CONTROL_ESCAPES)
        return line


def configure_logging(stream: TextIO, level: int = logging.INFO) -> logging.Handler:
    """Send every log record to `stream`: JSON lines, or the console format on a terminal.

    Replaces the handler an earlier call installed (and nothing else), so it is safe to call
    once per process entry and again in tests.
    """
    # Neither format shows the caller's file and line, thread or process: not collecting them
    # saves a stack walk and three lookups per record. `_srcfile` is the switch the logging
    # documentation names for this (its "Optimization" section).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler: logging.StreamHandler[TextIO] = logging.StreamHandler(stream)
    formatter = ConsoleFormatter() if _is_terminal(stream) else JsonFormatter()
    handler.setFormatter(formatter)
    # On the handler, not a logger: records propagated from any library logger pass here too.
    # Caller noise first: a record it holds back costs nothing more.
    handler.addFilter(CallerNoiseFilter())
    handler.addFilter(RequestContextFilter())
    handler.addFilter(RedactionFilter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return handler


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def log_composed(
    logger: logging.Logger,
    level: int,
    message: str,
    fields: Mapping[str, object],
    *args: object,
) -> None:
    """Log a line the service composed entirely itself: `message` % `args`, `fields` as its
    extras (a private mark among them, such as CALLER_NOISE_FLAG, is passed on, not shown).

    Nothing in `message`, `args` or `fields` may come from a caller: the record is marked with
    SAFE_RECORD_FLAG, so the redaction filter does not scan it (a server writes one such line
    per call, and scanning it cost about 7 % of the server's CPU under load).
    """
    logger.log(level, message, *args, extra={**fields, SAFE_RECORD_FLAG: True})
