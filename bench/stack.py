"""What the benchmarks run: Postgres, the payment service fake, the gRPC server and the shim.

Postgres is embedded (pgserver, in a temporary directory) unless `DATABASE_URL` is set; the
payment service is the fake of the dev stack and the tests, on a thread of this process; the
server and the shim are subprocesses. Everything listens on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from ticketing_service.entrypoints import event_loop
from ticketing_service.entrypoints.dev.payment_service import (
    create_payment_service_app,
    running_payment_service,
)

ROOT = Path(__file__).resolve().parent.parent
PAYMENT_TOKEN = "bench-payment-token"  # noqa: S105 - the loopback fake's, nothing real
START_SECONDS = 120.0
STOP_SECONDS = 30.0
# How often a starting process's log is read for the line that says it listens.
START_POLL_SECONDS = 0.05
# CPU groups named with this prefix are parts of the server's group (its workers).
SPLIT_MARK = "server/"
SERVER_LINE = re.compile(r"serving \S+ on [\d.]+:(\d+)")
SHIM_LINE = re.compile(r"webhook shim listening on [\d.]+:(\d+)")
RUN_WEBHOOK = (
    "import sys; from ticketing_service.entrypoints.webhook.serve import run_webhook; "
    "sys.exit(run_webhook(None))"
)


@contextmanager
def database() -> Iterator[str]:
    """`DATABASE_URL`, or an embedded Postgres in a temporary directory deleted afterwards."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with warnings.catch_warnings():  # pgserver warns about a runtime dir it never uses
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="ticketing-bench-") as scratch:
        server: Any = get_server(Path(scratch) / "pgdata", cleanup_mode="delete")
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()


class PaymentServiceThread:
    """The payment service fake (`running_payment_service`) on a thread with its own event
    loop, so that the callers' loop never waits for it."""

    def __init__(self, token: str = PAYMENT_TOKEN) -> None:
        self.url = ""
        self._token = token
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: event_loop.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        app = create_payment_service_app(token=self._token)
        async with running_payment_service(app) as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> PaymentServiceThread:
        self._thread.start()
        if not self._ready.wait(START_SECONDS):
            raise RuntimeError("The payment service fake did not start.")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(STOP_SECONDS)


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class PostgresCpu:
    """CPU of every Postgres process on the machine (backends, writers, the postmaster).

    A backend that exits takes its CPU time with it, so each process's last reading is kept.
    """

    def __init__(self) -> None:
        self._seen: dict[int, float] = {}

    def __call__(self) -> float:
        for process in psutil.process_iter(["name"]):
            if process.info["name"] == "postgres":
                try:
                    times = process.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                self._seen[process.pid] = times.user + times.system
        return sum(self._seen.values())


def driver_cpu_seconds() -> float:
    """CPU of this process: the callers, and the payment service stand-in's thread."""
    return _cpu([psutil.Process()])


@dataclass
class CpuMeter:
    """CPU seconds used so far by each group of processes, for CPU per call of a phase."""

    groups: dict[str, Callable[[], float]]

    def sample(self) -> dict[str, float]:
        return {name: seconds() for name, seconds in self.groups.items()}


@dataclass(frozen=True)
class Child:
    """A started subprocess: the port it logged, and its process."""

    port: int
    process: psutil.Process

    def cpu_seconds(self) -> float:
        """User plus system CPU of the process and its children (the server's workers)."""
        return _cpu([self.process, *self.process.children(recursive=True)])

    def workers(self) -> list[psutil.Process]:
        """The worker processes of `serve --workers N` (none when the server runs alone)."""
        found = []
        for child in self.process.children():
            try:
                if any("spawn_main" in part for part in child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
        return found


def worker_groups(server: Child) -> dict[str, Callable[[], float]]:
    """A CPU group per server worker, named `server/1`, `server/2`, ...: how evenly the kernel
    spread the connections (SO_REUSEPORT places each one by a hash of its addresses)."""

    def cpu_of(worker: psutil.Process) -> Callable[[], float]:
        return lambda: _cpu([worker])

    return {
        f"{SPLIT_MARK}{n}": cpu_of(worker) for n, worker in enumerate(server.workers(), start=1)
    }


def cpu_speed_ms() -> float:
    """Milliseconds a fixed CPU-bound loop takes here now, best of three.

    On a shared virtual machine the host may give this one less than its CPUs; every figure of
    a run then drops with it. Printed with the results so that runs can be compared.
    """
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - began)
    return best * 1000


def clean_environment() -> dict[str, str]:
    """This environment without the service's own settings, so nothing leaks into the run."""
    prefixes = ("TICKETING_", "TICKET_PAYMENT_", "DATABASE_URL")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@contextmanager
def child_process(
    argv: list[str], env: dict[str, str], ready: re.Pattern[str], what: str
) -> Iterator[Child]:
    """Run `argv` until it logs the port it listens on; SIGTERM it (and wait) afterwards.

    Its log goes to a temporary file, not a pipe: a pipe needs a reader, and a thread here
    reading each of the server's lines as it is written costs ~13 µs of CPU per line (in a
    loop), hundreds of lines a second on the two cores the server runs on. The file is read
    while the process starts, and its last lines are shown if it fails to.
    """
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter, our own arguments
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            port = logged_port(process, log, ready, what)
            yield Child(port, psutil.Process(process.pid))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def logged_port(
    process: subprocess.Popen[bytes], log: IO[str], ready: re.Pattern[str], what: str
) -> int:
    """The port in the line `ready` matches, once the process has logged it."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        log.seek(0)
        text = log.read()
        if match := ready.search(text):
            return int(match.group(1))
        if process.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(text.splitlines()[-200:])
            raise RuntimeError(f"The {what} did not start:\n{tail}")
        time.sleep(START_POLL_SECONDS)


@contextmanager
def ticketing_server(
    database_url: str, payment_url: str, payment_token: str, workers: int, pool_size: int
) -> Iterator[Child]:
    """`python -m ticketing_service serve` on a free port; it migrates the database first."""
    env = clean_environment() | {
        "DATABASE_URL": database_url,
        "TICKET_PAYMENT_SERVICE_URL": payment_url,
        "TICKET_PAYMENT_SERVICE_TOKEN": payment_token,
        "TICKETING_DB_POOL_SIZE": str(pool_size),
    }
    argv = [sys.executable, "-m", "ticketing_service", "serve", "--listen", "127.0.0.1:0"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    with child_process(argv, env, SERVER_LINE, "gRPC server") as child:
        yield child


@contextmanager
def webhook_shim(
    grpc_target: str, hmac_secret: str, standard_secret: str | None = None
) -> Iterator[Child]:
    """The webhook shim on a free port, forwarding to `grpc_target` (Standard Webhooks too
    when given its `whsec_` secret)."""
    env = clean_environment() | {
        "TICKETING_WEBHOOK_LISTEN": "127.0.0.1:0",
        "TICKETING_GRPC_TARGET": grpc_target,
        "TICKET_PAYMENT_CALLBACK_SECRET": hmac_secret,
    }
    if standard_secret is not None:
        env["TICKETING_STANDARD_WEBHOOK_SECRETS"] = standard_secret
    argv = [sys.executable, "-c", RUN_WEBHOOK]
    with child_process(argv, env, SHIM_LINE, "webhook shim") as child:
        yield child
