"""`python -m ticketing_service serve` as a subprocess, as the end-to-end tests run it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

START_TIMEOUT_SECONDS = 60
# Port 9 (discard) has no listener on a test machine: a checkout there fails fast.
REFUSED_URL = "http://127.0.0.1:9"
# A payment service for a command that needs one and never reaches it.
REFUSED_PAYMENT_SERVICE = {
    "TICKET_PAYMENT_SERVICE_URL": REFUSED_URL,
    "TICKET_PAYMENT_SERVICE_TOKEN": "payment-token",
}


@contextmanager
def serve_process(data_dir: Path, *args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """The real command on a free port, its embedded Postgres in `data_dir`; SIGTERM afterwards.

    `DATABASE_URL` is removed from the environment, so the command starts its own Postgres
    (unless `env` gives one). The payment service is a refused port unless `env` names one.
    """
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment |= {
        "TICKETING_DATA_DIR": str(data_dir),
        **REFUSED_PAYMENT_SERVICE,
        **env,
    }
    command = ["serve", "--listen", "127.0.0.1:0", *args]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "ticketing_service", *command],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=START_TIMEOUT_SECONDS)
        assert process.stderr is not None
        process.stderr.close()


def wait_for_line(process: subprocess.Popen[str], pattern: re.Pattern[str]) -> re.Match[str]:
    """The first line the process logs that matches `pattern`; fails if it exits first."""
    assert process.stderr is not None
    seen: list[str] = []
    for line in process.stderr:  # ends when the process exits: never waits forever
        seen.append(line)
        if match := pattern.search(line):
            return match
    raise AssertionError("the server exited before serving:\n" + "".join(seen))


def run_command(tmp_path: Path, *argv: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """A command run to its end: its exit code and output (its Postgres, if any, in `tmp_path`).

    The settings are the test's environment without the service's own (`TICKET…`,
    `DATABASE_URL`), then `env`; None in `env` unsets a setting ("" sets it empty).
    """
    ours = ("TICKET", "DATABASE_URL")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    environment |= {
        "TICKETING_DATA_DIR": str(tmp_path),
        **REFUSED_PAYMENT_SERVICE,
        "TICKET_PAYMENT_CALLBACK_SECRET": "webhook-secret",  # what `webhook` needs to start
    }
    environment |= {k: v for k, v in env.items() if v is not None}
    for unset in (k for k, v in env.items() if v is None):
        environment.pop(unset, None)
    return subprocess.run(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "ticketing_service", *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )


def our_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a command that refused printed, with no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("ticketing-service:")]
    assert len(ours) == 1, result.stderr
    return ours[0]


def wait_until(condition: Callable[[], bool], seconds: float, every: float = 0.1) -> bool:
    """Whether `condition` held within `seconds`, asked every `every` seconds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True
