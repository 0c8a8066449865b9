"""The gRPC server: TicketingService, health, reflection, the bearer token, graceful stop.

`serve --workers N` runs N of these in as many processes on one port (see workers.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from moim.ticketing.v1 import ticketing_service_pb2, ticketing_service_pb2_grpc

from ticketing_service.config import (
    DEFAULT_GRPC_CONNECTION_IDLE_SECONDS,
    DEFAULT_GRPC_MAX_CONCURRENT_RPCS,
    DEFAULT_GRPC_MAX_CONNECTIONS,
    DEFAULT_MAX_WATCHERS,
    Config,
    ListenError,
)
from ticketing_service.entrypoints.event_loop import stop_signals
from ticketing_service.entrypoints.grpc.arrival import (
    REQUEST_ARRIVAL_SECONDS,
    RequestArrival,
    waiting_per_address,
)
from ticketing_service.entrypoints.grpc.auth import BearerToken
from ticketing_service.entrypoints.grpc.call_limit import CallLimiter, streams_per_connection
from ticketing_service.entrypoints.grpc.decoding import RequestDecoding
from ticketing_service.entrypoints.grpc.health_service import HealthServicer
from ticketing_service.entrypoints.grpc.servicer import TicketingServicer
from ticketing_service.service_layer.dependencies import Dependencies

log = logging.getLogger(__name__)

SERVICE_NAME = ticketing_service_pb2.DESCRIPTOR.services_by_name["TicketingService"].full_name
GRACE_SECONDS = 10.0
# How often a connection with calls is pinged, and how long its client has to answer.
KEEPALIVE_SECONDS = 60
KEEPALIVE_TIMEOUT_SECONDS = 20
# The largest request a client may send. The biggest legitimate one (100 tiers, or 50 answers
# of 16 KiB in all) is far below it; a bigger one is refused before it is parsed.
MAX_REQUEST_BYTES = 1024 * 1024
# The largest header block (metadata) of a call, counted as HTTP/2 counts it (32 bytes more per
# header). gRPC's own headers and a client's user agent take about 520 bytes, a bearer token and
# a request id 200 more; a bigger block is refused before the call is seen.
MAX_METADATA_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one server process takes on at once (TICKETING_GRPC_MAX_CONCURRENT_RPCS, ...), how
    long it keeps a connection that carries no call, and waits for a call's request."""

    max_concurrent_rpcs: int = DEFAULT_GRPC_MAX_CONCURRENT_RPCS
    max_watchers: int = DEFAULT_MAX_WATCHERS
    max_connections: int = DEFAULT_GRPC_MAX_CONNECTIONS
    connection_idle_seconds: int = DEFAULT_GRPC_CONNECTION_IDLE_SECONDS
    keepalive_seconds: int = KEEPALIVE_SECONDS
    keepalive_timeout_seconds: int = KEEPALIVE_TIMEOUT_SECONDS
    request_arrival_seconds: float = REQUEST_ARRIVAL_SECONDS

    @classmethod
    def of(cls, config: Config) -> ServerLimits:
        """The limits `config` sets."""
        return cls(
            config.grpc_max_concurrent_rpcs,
            config.max_watchers,
            config.grpc_max_connections,
            config.grpc_connection_idle_seconds,
        )

    def connection_options(self) -> list[tuple[str, int]]:
        """gRPC's options that bound a port's connections, for each server of the process.

        Past `max_connections` (all client hosts together) a new connection is closed at once,
        so that a flood of them cannot take the files and memory the process needs for its
        database and the payment service; connections already open keep being served. One
        without a call for `connection_idle_seconds` is closed (an HTTP/2 GOAWAY; its client
        reconnects at its next call), so that connections left behind by clients do not fill
        that bound for good. A call without the token, or whose request does not come, is
        refused soon (arrival.py), so it does not keep its connection from being idle.

        One that carries calls is pinged every `keepalive_seconds`, and closed if its client
        does not answer within `keepalive_timeout_seconds`: a client whose machine died, or
        whose network dropped without a reset, kept its calls (a watch, and its place among
        the watchers) open for hours otherwise. Every HTTP/2 client answers pings by itself.
        A client may ping as often as it likes, to learn the same of this server (the shim
        does): gRPC's ping policy is off. With it, past a few pings sooner than it allowed, the
        connection was told "too_many_pings" yet kept reading and answering a flood of them, at
        half a core per connection; answers cost next to nothing without it (1%), and a client
        that does not read them is no longer read either.

        A call whose metadata exceeds MAX_METADATA_BYTES is refused `RESOURCE_EXHAUSTED`, its
        connection kept. Both of gRPC's bounds are that one: between its defaults (8 and 16
        KiB) a call was refused at random, the more often the bigger its headers.
        """
        return [
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.max_connection_idle_ms", self.connection_idle_seconds * 1000),
            ("grpc.keepalive_time_ms", self.keepalive_seconds * 1000),
            ("grpc.keepalive_timeout_ms", self.keepalive_timeout_seconds * 1000),
            # What this gRPC's transport enforces instead of the keepalive timeout (its 60 s
            # default held a dead client's calls three times as long): the same bound.
            ("grpc.http2.ping_timeout_ms", self.keepalive_timeout_seconds * 1000),
            ("grpc.http2.max_ping_strikes", 0),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ]


@dataclass(slots=True)
class RunningServer:
    """A started server, the port it bound, and its health status setter."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    servicer: TicketingServicer
    arrival: RequestArrival

    async def stop(self, grace: float = GRACE_SECONDS) -> None:
        """Report NOT_SERVING; end the feed's watches, reflection's streams and the calls still
        waiting for their request; refuse new calls until they stop coming (arrival.py); then
        finish in-flight calls for up to `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        self.servicer.end_watches()
        self.arrival.end_waits()
        await self.arrival.drain()
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
    The token is checked first, before the request is waited for (arrival.py).
    `interceptors` run once the request is read, or the call refused unread, before the call
    limit and the request's decoding (so refused calls are logged and counted too); with
    `credentials` the port speaks TLS (see tls.server_credentials).
    """
    calls_per_connection = streams_per_connection(limits.max_concurrent_rpcs)
    arrival = RequestArrival(
        waiting_per_address(calls_per_connection),
        limits.request_arrival_seconds,
        BearerToken(tokens) if tokens else None,
    )
    chain = [
        arrival,
        *interceptors,
        CallLimiter(limits.max_concurrent_rpcs),  # not gRPC's own: see call_limit.py
        RequestDecoding(),
    ]
    options = [
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_concurrent_streams", calls_per_connection),
        *limits.connection_options(),
    ]
    server = grpc.aio.server(interceptors=chain, options=options)
    servicer = TicketingServicer(deps, limits.max_watchers)
    ticketing_service_pb2_grpc.add_TicketingServiceServicer_to_server(servicer, server)
    # The asyncio servicer: the thread-based one blocks an executor thread per Watch, and a
    # cancelled Watch could then hold process shutdown.
    health_servicer = HealthServicer()
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
        raise ListenError(f"Could not listen on {listen}; is the address free and valid?")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, port, health_servicer, servicer, arrival)


async def serve_until_signalled(running: RunningServer, ready: Callable[[], None]) -> None:
    """Serve until SIGTERM, SIGINT or SIGHUP, then stop gracefully.

    `ready` (which says the process serves) is called once a stop signal is handled: a SIGTERM
    sent as soon as the process said so used to kill it outright.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals():
        loop.add_signal_handler(sig, stop.set)
    ready()
    await stop.wait()
    log.info("stopping: finishing in-flight calls")
    await running.stop()
