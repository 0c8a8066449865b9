"""The gRPC server: TicketingService, health, reflection, the bearer token, graceful stop.

`serve --workers N` runs N server processes on one port (SO_REUSEPORT: the kernel spreads
incoming connections over them), each with its own event loop, database pool and background
loops; `serve_in_workers` starts them and forwards SIGTERM to them.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from moim.ticketing.v1 import ticketing_service_pb2, ticketing_service_pb2_grpc

from ticketing_service.config import DEFAULT_GRPC_MAX_CONCURRENT_RPCS, DEFAULT_MAX_WATCHERS
from ticketing_service.entrypoints.grpc.auth import BearerTokenInterceptor
from ticketing_service.entrypoints.grpc.servicer import TicketingServicer
from ticketing_service.service_layer.dependencies import Dependencies

log = logging.getLogger(__name__)

SERVICE_NAME = ticketing_service_pb2.DESCRIPTOR.services_by_name["TicketingService"].full_name
GRACE_SECONDS = 10.0
# The largest request a client may send. The biggest legitimate one (100 tiers, or 50 answers
# of 16 KiB in all) is far below it; a bigger one is refused before it is parsed.
MAX_REQUEST_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one server process takes on at once (TICKETING_GRPC_MAX_CONCURRENT_RPCS, ...)."""

    max_concurrent_rpcs: int = DEFAULT_GRPC_MAX_CONCURRENT_RPCS
    max_watchers: int = DEFAULT_MAX_WATCHERS


@dataclass(slots=True)
class RunningServer:
    """A started server, the port it bound, and its health status setter."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, then finish in-flight calls for up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(
    deps: Dependencies,
    listen: str,
    tokens: Sequence[str] = (),
    *,
    reuse_port: bool = False,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    credentials: grpc.ServerCredentials | None = None,
    limits: ServerLimits = ServerLimits(),
) -> RunningServer:
    """Bind `listen` (port 0 picks a free port), register every service and start serving.

    With `tokens`, every TicketingService call needs one of them as its bearer token.
    `reuse_port` lets several worker processes bind the same port; without it a port already
    in use is an error (gRPC would otherwise share it silently with whoever holds it).
    `interceptors` run before the token check (so refused calls are logged and counted too);
    with `credentials` the port speaks TLS (see tls.server_credentials).
    """
    chain = [*interceptors, *([BearerTokenInterceptor(tokens)] if tokens else [])]
    options = [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ]
    server = grpc.aio.server(
        interceptors=chain,
        options=options,
        maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
    )
    ticketing_service_pb2_grpc.add_TicketingServiceServicer_to_server(
        TicketingServicer(deps, limits.max_watchers), server
    )
    # The asyncio servicer: the thread-based one blocks an executor thread per Watch, and a
    # cancelled Watch could then hold process shutdown.
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials)
    except RuntimeError:  # raised instead of returning 0 when the address is taken
        port = 0
    if port == 0:
        raise OSError(f"Could not listen on {listen}; is the address free and valid?")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer)


async def serve_until_signalled(running: RunningServer) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight calls")
    await running.stop()


# How one worker process serves: given the address and a callback to report the bound port.
WorkerServe = Callable[[str, Callable[[int], None]], int]
WORKER_START_SECONDS = 60.0


def serve_in_workers(count: int, listen: str, serve: WorkerServe) -> int:
    """Run `count` worker processes serving `listen` until SIGTERM or SIGINT; 0 if all ended well.

    Workers are spawned (a fresh interpreter, never a fork: gRPC's threads and the event loop do
    not survive one). `serve` must be picklable (a module-level function or a partial of one).
    If a worker fails to start or dies, the others are stopped and the command fails, so a
    process manager restarts the whole set.
    """
    host, port = _host_port(listen)
    context = multiprocessing.get_context("spawn")
    with _reserved_port(host, port) as bound:
        address = f"{host}:{bound}"
        workers: list[multiprocessing.process.BaseProcess] = []
        ready: list[Connection] = []
        for index in range(count):
            receiver, sender = context.Pipe(duplex=False)
            worker = context.Process(
                target=_worker_main, args=(serve, address, sender), name=f"grpc-worker-{index}"
            )
            worker.start()
            sender.close()
            workers.append(worker)
            ready.append(receiver)
        return _supervise(workers, ready, address)


def _worker_main(serve: WorkerServe, address: str, ready: Connection) -> None:
    """The entry point of a spawned worker process."""
    raise SystemExit(serve(address, ready.send))


def _supervise(
    workers: list[multiprocessing.process.BaseProcess], ready: list[Connection], address: str
) -> int:
    stopping: list[int] = []

    def stop(signum: int, frame: object) -> None:
        stopping.append(signum)
        _signal_all(workers)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if _all_started(workers, ready):
            pids = ", ".join(str(w.pid) for w in workers)
            log.info(
                "serving %s on %s with %d workers (%s)", SERVICE_NAME, address, len(workers), pids
            )
            # Returns when any worker ends: on our signal all do; otherwise one died.
            wait([w.sentinel for w in workers])
        if not stopping:
            log.error("a worker process ended unexpectedly; stopping the others")
            _signal_all(workers)
        for worker in workers:
            worker.join(GRACE_SECONDS + 5)
            if worker.is_alive():
                worker.kill()
                worker.join(5)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    clean = all(w.exitcode == 0 for w in workers)
    return 0 if stopping and clean else 1


def _all_started(
    workers: list[multiprocessing.process.BaseProcess], ready: list[Connection]
) -> bool:
    """Wait until every worker reported its port; False if one ended first or took too long."""
    pending = list(ready)
    sentinels = [w.sentinel for w in workers]
    while pending:
        woke = wait([*pending, *sentinels], timeout=WORKER_START_SECONDS)
        if not woke or any(s in woke for s in sentinels):
            return False
        for receiver in [r for r in pending if r in woke]:
            try:
                receiver.recv()
            except EOFError:  # the worker ended without reporting its port
                return False
            pending.remove(receiver)
    return True


def _signal_all(workers: list[multiprocessing.process.BaseProcess]) -> None:
    for worker in workers:
        if worker.pid is not None and worker.is_alive():
            os.kill(worker.pid, signal.SIGTERM)


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        raise OSError(f"Could not listen on {listen}; give it as host:port.") from None


@contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """The port to give every worker: `port`, or for port 0 a free one held until the end.

    The holding socket is bound with SO_REUSEPORT but never listens, so it receives no
    connections; it only keeps the port from being taken between the workers' binds.
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
