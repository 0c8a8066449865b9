"""A plaintext port that serves only the health service, for probes that cannot speak TLS.

Kubernetes' gRPC probes connect without TLS and without a client certificate, so once the main
port requires them the kubelet can no longer ask it. This second server shares the main
server's HealthServicer (so it reports NOT_SERVING as soon as a graceful stop begins) and
registers nothing else: no TicketingService call, token or certificate ever crosses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2_grpc

from ticketing_service.config import ListenError
from ticketing_service.entrypoints.grpc.arrival import RequestArrival, waiting_per_address
from ticketing_service.entrypoints.grpc.decoding import RequestDecoding
from ticketing_service.entrypoints.grpc.server import ServerLimits

HEALTH_LISTEN_SETTING = "TICKETING_HEALTH_LISTEN"
MAX_CALLS_PER_CONNECTION = 16


@dataclass(slots=True)
class HealthPort:
    """The health-only server and the port it bound."""

    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float | None = None) -> None:
        """Stop answering probes."""
        await self.server.stop(grace)


async def start_health_port(
    listen: str,
    servicer: health_pb2_grpc.HealthServicer,
    *,
    reuse_port: bool = False,
    limits: ServerLimits = ServerLimits(),
) -> HealthPort:
    """Serve `servicer` alone, in plaintext, on `listen` (port 0 picks a free port).

    `servicer` is the main server's: `health.HealthServicer` or `health.aio.HealthServicer`.

    `reuse_port` lets the worker processes of `serve --workers N` share the port, as they share
    the main one; without it a port already in use is an error. Its connections are bounded
    by `limits` as the main port's are.
    """
    options = [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # A probe makes one call at a time: a connection may not pile up open calls (watches, or
        # calls that never send their request), which would cost the whole process memory.
        ("grpc.max_concurrent_streams", MAX_CALLS_PER_CONNECTION),
        *limits.connection_options(),
    ]
    interceptors = [
        RequestArrival(
            waiting_per_address(MAX_CALLS_PER_CONNECTION), limits.request_arrival_seconds
        ),
        RequestDecoding(),
    ]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError:  # grpc's "Failed to bind"; older versions returned 0 instead
        port = 0
    if port == 0:
        raise ListenError(f"Could not listen on {listen} for health probes; is it free and valid?")
    await server.start()
    return HealthPort(server, port)
