"""Runs the webhook shim: its settings, the verifier, its gRPC channels, the app, and uvicorn."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import FrameType

import grpc
import uvicorn
from moim.ticketing.client import TicketingClient, keepalive_options, reconnect_options
from starlette.types import ASGIApp

from ticketing_service.config import ConfigError, ListenError, parse_host_port
from ticketing_service.entrypoints import event_loop
from ticketing_service.entrypoints.grpc.tls import channel_credentials
from ticketing_service.entrypoints.listening import bind_socket, http_connection_cap
from ticketing_service.entrypoints.metrics_endpoint import start_metrics_server
from ticketing_service.entrypoints.observability.logging import configure_logging
from ticketing_service.entrypoints.observability.metrics import MeteredVerifier, TicketingMetrics
from ticketing_service.entrypoints.observability.request_logging import RequestContextMiddleware
from ticketing_service.entrypoints.webhook.app import create_webhook_app
from ticketing_service.entrypoints.webhook.forwarding import BoundedConfirmer
from ticketing_service.entrypoints.webhook.grpc_confirmer import (
    GrpcPaymentConfirmer,
    RequestIdPropagation,
)
from ticketing_service.entrypoints.webhook.read_deadline import with_read_deadline
from ticketing_service.entrypoints.webhook.signatures import (
    MoimHmacVerifier,
    StandardWebhookVerifier,
    WebhookVerifier,
)
from ticketing_service.webhook_config import LISTEN_SETTING, WebhookConfig

# Past this many callbacks being forwarded the shim answers 503 at once, which the sender
# retries, instead of queueing callbacks behind a gRPC backend and database pool that are
# already saturated. Only requests whose whole body arrived count: uvicorn's own
# `limit_concurrency` also counts idle connections, so idle sockets could lock callbacks out.
MAX_CONCURRENT_CALLBACKS = 128
# The deadline of a callback's call to the server, its retries included: under the 10 s a sender
# waits for an answer (our sandbox's; SPEC gives none), so a callback the server could not take
# in time is answered 503 while the sender still listens. At 10 s, a lock conflict (5 s) and its
# retry ran past it, and the answer came after the sender had given up.
CONFIRM_DEADLINE_SECONDS = 8.0
# In-flight callbacks finish within that deadline; this bounds the wait for them.
GRACEFUL_SHUTDOWN_SECONDS = 15

logger = logging.getLogger(__name__)


class ShimServer(uvicorn.Server):
    """A uvicorn server that logs the port it really listens on and says when it is ready."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self.port = 0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        logger.info("webhook shim listening on %s:%d", shown, port)
        self.listening.set()


def build_verifier(config: WebhookConfig) -> WebhookVerifier:
    """The verifier of every enabled scheme; a malformed secret is a ConfigError naming it."""
    try:
        return WebhookVerifier(
            moim_hmac=MoimHmacVerifier(config.hmac_secrets) if config.hmac_secrets else None,
            standard_webhooks=(
                StandardWebhookVerifier(config.standard_secrets, config.tolerance_seconds)
                if config.standard_secrets
                else None
            ),
        )
    except ValueError as error:  # the messages name the setting, never the secret
        raise ConfigError(str(error)) from None


def uvicorn_config(app: ASGIApp, read_timeout_seconds: float) -> uvicorn.Config:
    """How uvicorn runs the shim: no access log, no proxy headers, a deadline on each request,
    and at most half the files the process may open taken by connections.

    No `limit_concurrency`: it counts open connections, idle ones included, and refuses new
    ones past it (BoundedConfirmer bounds the work instead). Past the cap, a new connection
    closes the one that has waited longest without a complete request, so idle sockets never
    lock a prompt callback out; the other half of the files stays for the gRPC channels, the
    metrics port and the connections being accepted.
    """
    max_connections = http_connection_cap(2)
    return uvicorn.Config(
        app,
        http=with_read_deadline(read_timeout_seconds, max_connections),
        lifespan="off",
        ws="none",
        log_config=None,  # log through the root logger, formatted like the rest of the service
        log_level="info",
        access_log=False,  # the app logs one line per callback, without its body
        proxy_headers=False,  # nothing here trusts X-Forwarded-*; no decision depends on the peer
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


# Without a subchannel pool of its own, every channel to one target shares one connection.
_OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def backend_credentials(config: WebhookConfig) -> grpc.ChannelCredentials | None:
    """TLS to the gRPC backend when configured; ConfigError naming a file that is not PEM."""
    if config.tls_ca is None:
        return None
    return channel_credentials(config.tls_ca, config.tls_client_cert, config.tls_client_key)


def backend_channel(config: WebhookConfig) -> grpc.aio.Channel:
    """A channel to the gRPC backend on a connection of its own: TLS when configured.

    While calls are open its connection is pinged, and dropped when a ping goes unanswered: a
    backend whose machine died without a reset held every call on it to its deadline until
    TCP gave up (about 15 minutes), each callback answered 503. The channel then connects
    again, to a live replica behind the same address, at most 2 s after the last attempt
    (gRPC's own back-off grows to 120 s: callbacks were refused for a minute after a backend
    restart). Every call on it sends the id of the callback it serves (RequestIdPropagation).
    """
    options = [
        *_OWN_CONNECTION,
        *keepalive_options(config.grpc_keepalive_seconds),
        *reconnect_options(),
    ]
    interceptors = [RequestIdPropagation()]
    credentials = backend_credentials(config)
    if credentials is None:
        return grpc.aio.insecure_channel(
            config.grpc_target, options=options, interceptors=interceptors
        )
    return grpc.aio.secure_channel(
        config.grpc_target, credentials, options=options, interceptors=interceptors
    )


@asynccontextmanager
async def webhook_server(
    config: WebhookConfig, verifier: WebhookVerifier, metrics: TicketingMetrics | None = None
) -> AsyncIterator[ShimServer]:
    """The shim as a uvicorn server over shared gRPC channels, closed when the block exits."""
    metrics = metrics or TicketingMetrics(process_collectors=False)
    async with AsyncExitStack() as clients:
        confirmer = GrpcPaymentConfirmer(
            [
                await clients.enter_async_context(
                    TicketingClient(
                        backend_channel(config),
                        token=config.grpc_token,
                        timeout=CONFIRM_DEADLINE_SECONDS,
                    )
                )
                for _ in range(config.grpc_channels)
            ]
        )
        app = create_webhook_app(
            MeteredVerifier(verifier, metrics),
            BoundedConfirmer(confirmer, MAX_CONCURRENT_CALLBACKS),
            confirmer.health,
            # Not bounded like payments: a refund's callback is rare, and the look-up it asks
            # for is one bounded GET at most (none once the refund settled).
            confirmer,
        )
        middleware = RequestContextMiddleware(app, metrics)
        yield ShimServer(uvicorn_config(middleware, config.read_timeout_seconds))


def run_webhook(listen: str | None) -> int:
    """`ticketing-service webhook`: serve until a stop signal; 2 on a configuration error."""
    configure_logging(sys.stderr)
    try:
        config = WebhookConfig.from_env()
        host, port = parse_host_port(
            listen or config.listen, "--listen" if listen else LISTEN_SETTING
        )
        verifier = build_verifier(config)
        backend_credentials(config)  # its files read now, not in a traceback once serving
    except ConfigError as error:
        print(f"ticketing-service: {error}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(host, port)
    except ListenError as error:
        print(f"ticketing-service: {error}", file=sys.stderr)
        return 1
    with sock:
        try:
            event_loop.run(_serve_until_signalled(config, verifier, sock))
        except ListenError as error:  # the metrics port
            print(f"ticketing-service: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
    return 0


async def _serve_until_signalled(
    config: WebhookConfig, verifier: WebhookVerifier, sock: socket.socket
) -> None:
    metrics = TicketingMetrics()
    endpoint = None
    if config.metrics_listen:
        endpoint = start_metrics_server(
            config.metrics_listen, metrics.registry, config.read_timeout_seconds
        )
        logger.info("metrics on %s:%d", config.metrics_listen.rsplit(":", 1)[0], endpoint.port)
    try:
        await _serve_with(config, verifier, sock, metrics)
    finally:
        if endpoint is not None:
            endpoint.close()


async def _serve_with(
    config: WebhookConfig, verifier: WebhookVerifier, sock: socket.socket, metrics: TicketingMetrics
) -> None:
    async with webhook_server(config, verifier, metrics) as server:

        def stop(signum: int, frame: FrameType | None) -> None:
            server.should_exit = True

        # uvicorn stops gracefully on these signals, then raises them again to the handler it
        # found. That handler only asks it to stop, so the channel still closes and we exit 0.
        previous = {sig: signal.signal(sig, stop) for sig in event_loop.stop_signals()}
        try:
            await server.serve(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
