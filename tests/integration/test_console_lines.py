"""On a terminal, the real shim writes caller text escaped: a request cannot forge a log line."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time

import httpx

from tests.integration.callbacks import refused_port
from tests.integration.test_webhook_shim import started_shim

# Decoded, the path gave the shim's line a field of another request, a newline, a carriage
# return and an ANSI "erase line", then what looks like a record of its own.
FORGING_PATH = "/foo]%20request_id=spoofed%0a06:00:00.000%20ERROR%20forged%0d%1b%5b2K"


def read_terminal(fd: int, until: re.Pattern[str] | None = None, timeout: float = 30) -> str:
    """What the process wrote to its terminal, up to a match of `until` or until it closes."""
    seen = ""
    deadline = time.monotonic() + timeout
    while until is None or not until.search(seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the terminal never showed {until}:\n{seen}"
        if not select.select([fd], [], [], remaining)[0]:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: every writer of the terminal has closed it
            break
        if not chunk:
            break
        seen += chunk.decode(errors="replace")
    return seen


def test_a_request_path_cannot_forge_or_erase_a_line_of_the_shims_console_log() -> None:
    controller, terminal = pty.openpty()
    with refused_port() as backend_port:
        process = started_shim(
            backend_port, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal
        )
        os.close(terminal)
        try:
            started = read_terminal(controller, re.compile(r"listening on 127\.0\.0\.1:(\d+)"))
            port = re.findall(r"listening on 127\.0\.0\.1:(\d+)", started)[0]
            answer = httpx.get(f"http://127.0.0.1:{port}{FORGING_PATH}", timeout=10)
            served = read_terminal(controller, re.compile(r"GET /foo.*\n"))
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
            written = started + served + read_terminal(controller)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(controller)
    assert answer.status_code == 404
    # Logged as it came, still encoded. A terminal ends each line with \r\n; any other \r,
    # or an escape, came from the caller.
    assert f"route={FORGING_PATH}] GET {FORGING_PATH} 404" in written
    assert " request_id=spoofed" not in written
    assert not [line for line in written.split("\r\n") if line.startswith("06:00:00.000")]
    assert re.search(r"\r(?!\n)", written) is None
    assert "\x1b" not in written
