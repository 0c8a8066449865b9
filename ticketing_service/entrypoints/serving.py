"""A running service answering gRPC: what `serve`, `dev` and the tests run.

The health of `moim.ticketing.v1.TicketingService` follows the service's background tasks: while
one of them keeps failing (the database away or read-only, a schema a rolling migration broke),
it reports NOT_SERVING so the process leaves the load balancer (readiness), and SERVING again
once the task does its work. The server as a whole (the empty name, which liveness asks for)
stays SERVING while the process answers: a database outage restarted every replica at once when
it followed the tasks too, and a restart mends nothing the tasks' own retries do not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
from grpc_health.v1 import health_pb2

from ticketing_service.bootstrap import Service
from ticketing_service.config import Config
from ticketing_service.entrypoints.grpc.server import (
    SERVICE_NAME,
    RunningServer,
    ServerLimits,
    start_server,
)
from ticketing_service.entrypoints.grpc.tls import server_credentials


@asynccontextmanager
async def served(
    service: Service,
    config: Config,
    listen: str,
    *,
    reuse_port: bool = False,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> AsyncIterator[RunningServer]:
    """`service` answering on `listen` (port 0: a free one) until the block ends, then stopped
    gracefully."""
    tls = config.tls
    running = await start_server(
        service.deps,
        listen,
        config.grpc_tokens,
        reuse_port=reuse_port,
        interceptors=interceptors,
        credentials=None if tls is None else server_credentials(tls.cert, tls.key, tls.client_ca),
        limits=ServerLimits.of(config),
    )
    reports: set[asyncio.Task[None]] = set()

    def follow(healthy: bool) -> None:
        report = asyncio.create_task(_report(running, healthy))
        reports.add(report)
        report.add_done_callback(reports.discard)

    service.health.follow(follow)
    try:
        yield running
    finally:
        await running.stop()
        await asyncio.gather(*reports, return_exceptions=True)


async def _report(running: RunningServer, healthy: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if healthy
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    await running.health.set(SERVICE_NAME, status)  # ignored once the server is shutting down
