"""The gRPC server: TicketingService, health, reflection, the bearer token, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from moim.ticketing.v1 import ticketing_service_pb2, ticketing_service_pb2_grpc

from ticketing_service.entrypoints.grpc.auth import BearerTokenInterceptor
from ticketing_service.entrypoints.grpc.servicer import TicketingServicer
from ticketing_service.service_layer.dependencies import Dependencies

log = logging.getLogger(__name__)

SERVICE_NAME = ticketing_service_pb2.DESCRIPTOR.services_by_name["TicketingService"].full_name
GRACE_SECONDS = 10.0


@dataclass(slots=True)
class RunningServer:
    """A started server, the port it bound, and its health status setter."""

    server: grpc.aio.Server
    port: int
    health: health.HealthServicer

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING, then finish in-flight calls for up to `grace` seconds."""
        self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


async def start_server(deps: Dependencies, listen: str, token: str | None) -> RunningServer:
    """Bind `listen` (port 0 picks a free port), register every service and start serving."""
    interceptors = [BearerTokenInterceptor(token)] if token else []
    server = grpc.aio.server(interceptors=interceptors)
    ticketing_service_pb2_grpc.add_TicketingServiceServicer_to_server(
        TicketingServicer(deps), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"Could not listen on {listen}; is the address free and valid?")
    await server.start()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
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
