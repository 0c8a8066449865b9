"""`serve --workers N`: N server processes on one port, kept running by their parent.

Each worker is a spawned interpreter (never a fork: gRPC's threads and the event loop do not
survive one) with its own event loop, database pool and background loops; the kernel spreads
incoming connections over them (SO_REUSEPORT). A worker that dies is started again after a
back-off, so one crash costs a moment of one worker, not the set. A worker that keeps dying
soon after starting is a crash loop: then every worker is stopped and the command exits 1 for
the process manager to act on. Workers die with their parent (Linux's parent-death signal), so
a killed parent never leaves orphans serving old code.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from ticketing_service.entrypoints.event_loop import stop_signals
from ticketing_service.entrypoints.grpc.server import GRACE_SECONDS, SERVICE_NAME

log = logging.getLogger(__name__)

# How one worker process serves: given the address and a callback to report the bound port.
WorkerServe = Callable[[str, Callable[[int], None]], int]
WORKER_START_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When a dead worker is started again, and when the set gives up (a crash loop)."""

    first_backoff_seconds: float = 0.5
    max_backoff_seconds: float = 8.0
    # A worker that ran this long before dying was healthy: its next crash starts a new count.
    stable_seconds: float = 30.0
    # Deaths in a row, each sooner than stable_seconds after starting, that end the command.
    max_quick_deaths: int = 5

    def backoff(self, quick_deaths: int) -> float:
        """The wait before starting a worker again after its `quick_deaths`-th quick death."""
        doubled = self.first_backoff_seconds * 2 ** max(quick_deaths - 1, 0)
        return float(min(doubled, self.max_backoff_seconds))


@dataclass(slots=True)
class _Worker:
    index: int
    process: BaseProcess
    ready: Connection
    started: float
    quick_deaths: int = 0
    reported: bool = False  # it sent the port it serves


def serve_in_workers(
    count: int, listen: str, serve: WorkerServe, policy: RestartPolicy = RestartPolicy()
) -> int:
    """Run `count` workers serving `listen` until a stop signal; 0 if they all ended well.

    `serve` must be picklable (a module-level function or a partial of one). If a worker fails
    to start at all, the others are stopped and the command fails (1).
    """
    host, port = _host_port(listen)
    with _reserved_port(host, port) as bound:
        return _Supervisor(count, f"{host}:{bound}", serve, policy).run()


def _worker_main(serve: WorkerServe, address: str, ready: Connection, parent: int) -> None:
    """The entry point of a spawned worker process."""
    _die_with_parent(parent)
    raise SystemExit(serve(address, ready.send))


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM (a graceful stop) to this process when its parent dies."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("could not ask to die with the parent: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # the parent died before the request above took effect
        raise SystemExit(1)


class _Supervisor:
    """Starts the workers, restarts those that die, and stops them all on a signal."""

    def __init__(self, count: int, address: str, serve: WorkerServe, policy: RestartPolicy) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._count = count
        self._address = address
        self._serve = serve
        self._policy = policy
        self._workers: list[_Worker] = []
        self._stopping = False

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._stop) for sig in stop_signals()}
        try:
            self._workers = [self._start(index) for index in range(self._count)]
            healthy = self._all_started() and self._keep_running()
            if not self._stopping:
                self._signal_all()
            self._join_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        clean = all(w.process.exitcode == 0 for w in self._workers)
        return 0 if healthy and self._stopping and clean else 1

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True
        self._signal_all()

    def _start(self, index: int, quick_deaths: int = 0) -> _Worker:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(self._serve, self._address, sender, os.getpid()),
            name=f"grpc-worker-{index}",
        )
        process.start()
        sender.close()
        return _Worker(index, process, receiver, time.monotonic(), quick_deaths)

    def _all_started(self) -> bool:
        """Wait until every worker reported its port; False if one ended first or took too long."""
        pending = list(self._workers)
        while pending and not self._stopping:
            woke = wait(
                [w.ready for w in pending] + [w.process.sentinel for w in pending],
                timeout=WORKER_START_SECONDS,
            )
            for worker in [w for w in pending if w.ready in woke and _received(w.ready)]:
                worker.reported = True
            pending = [w for w in pending if not w.reported]
            if not woke or any(w.process.sentinel in woke for w in pending):
                log.error("a worker process failed to start; stopping the others")
                return False
        pids = ", ".join(str(w.process.pid) for w in self._workers)
        log.info(
            "serving %s on %s with %d workers (%s)", SERVICE_NAME, self._address, self._count, pids
        )
        return True

    def _keep_running(self) -> bool:
        """Restart workers as they die until a signal (True) or a crash loop (False)."""
        while not self._stopping:
            starting = [w for w in self._workers if not w.reported]
            woke = wait([w.process.sentinel for w in self._workers] + [w.ready for w in starting])
            for worker in [w for w in starting if w.ready in woke and _received(w.ready)]:
                worker.reported = True
                log.info("worker %d serving again as pid %s", worker.index, worker.process.pid)
            for dead in [w for w in self._workers if not w.process.is_alive()]:
                if self._stopping:
                    break
                if not self._replace(dead):
                    return False
        return True

    def _replace(self, dead: _Worker) -> bool:
        """Start a worker in place of `dead` after a back-off; False when it is a crash loop."""
        dead.process.join()
        dead.ready.close()
        lived = time.monotonic() - dead.started
        quick_deaths = dead.quick_deaths + 1 if lived < self._policy.stable_seconds else 1
        if quick_deaths >= self._policy.max_quick_deaths:
            log.error(
                "worker %d died %d times in a row within %g s of starting (exit code %s): a crash"
                " loop; stopping every worker",
                dead.index,
                quick_deaths,
                self._policy.stable_seconds,
                dead.process.exitcode,
            )
            return False
        backoff = self._policy.backoff(quick_deaths)
        log.error(
            "worker %d (pid %s) died with exit code %s after %.1f s; starting it again in %g s",
            dead.index,
            dead.process.pid,
            dead.process.exitcode,
            lived,
            backoff,
        )
        self._pause(backoff)
        if not self._stopping:
            worker = self._start(dead.index, quick_deaths)
            self._workers[self._workers.index(dead)] = worker
            log.info("worker %d started again as pid %s", worker.index, worker.process.pid)
        return True

    def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if a signal asks everyone to stop (it ends a worker)."""
        alive = [w.process.sentinel for w in self._workers if w.process.is_alive()]
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            if alive:
                wait(alive, timeout=left)
                alive = [w.process.sentinel for w in self._workers if w.process.is_alive()]
            else:
                time.sleep(left)

    def _signal_all(self) -> None:
        for worker in self._workers:
            if worker.process.pid is not None and worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)

    def _join_all(self) -> None:
        for worker in self._workers:
            worker.process.join(GRACE_SECONDS + 5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)


def _received(ready: Connection) -> bool:
    """Whether the worker sent its port (False: it ended without reporting one)."""
    try:
        ready.recv()
    except EOFError:
        return False
    return True


def _host_port(listen: str) -> tuple[str, int]:
    """HOST (IPv6 kept in brackets, as gRPC takes it) and PORT, checked at start."""
    host, _, port = listen.rpartition(":")
    return host, int(port)


@contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """The port to give every worker: `port`, or for port 0 a free one held until the end.

    The holding socket is bound with SO_REUSEPORT but never listens, so it receives no
    connections; it only keeps the port from being taken between the workers' binds (and
    their restarts).
    """
    if port != 0:
        yield port
        return
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]") or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(address)
        yield int(holder.getsockname()[1])
