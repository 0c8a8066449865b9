"""The HTTP endpoint that serves a process's Prometheus metrics, for the server and the shim.

An HTTP server of its own, like the shim: uvicorn with the shim's read deadline, so that idle
or slow connections from anywhere that reaches the port cost neither a thread each nor memory
for good.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Receive, Scope, Send

from ticketing_service.config import parse_host_port
from ticketing_service.entrypoints.listening import bind_socket, http_connection_cap
from ticketing_service.entrypoints.webhook.read_deadline import with_read_deadline
from ticketing_service.webhook_config import DEFAULT_READ_TIMEOUT_SECONDS, METRICS_LISTEN_SETTING


@dataclass(slots=True)
class MetricsServer:
    """The metrics endpoint, served from a thread of its own; `close()` stops it."""

    port: int
    _server: uvicorn.Server
    _thread: threading.Thread

    def close(self) -> None:
        """Stop serving and wait for the thread to end."""
        self._server.should_exit = True
        self._thread.join()


def start_metrics_server(
    listen: str,
    registry: CollectorRegistry,
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS,
) -> MetricsServer:
    """Serve `registry` at `http://<listen>/metrics` (port 0 picks a free port).

    uvicorn serves it on an event loop in a thread of its own, so a busy service loop does not
    delay a scrape, and with the shim's read deadline: a connection that has not sent a whole
    request within `read_timeout_seconds` is closed. Idle sockets cost a few kilobytes each
    for that long, never a thread (the standard library's server gave each one a thread, for
    good, until the process ran out of memory or file descriptors).
    """
    host, port = parse_host_port(listen, METRICS_LISTEN_SETTING)
    sock = bind_socket(host, port, " for metrics")
    # A scraper or two: a sixteenth of the files, the rest for the service beside it.
    max_connections = http_connection_cap(16)
    config = uvicorn.Config(
        _exposition(registry),
        http=with_read_deadline(read_timeout_seconds, max_connections),
        lifespan="off",
        ws="none",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=1,  # a scrape is answered in milliseconds
    )
    server = uvicorn.Server(config)
    # Off the main thread uvicorn leaves signal handlers alone: the service keeps its own.
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="metrics", daemon=True
    )
    thread.start()
    return MetricsServer(int(sock.getsockname()[1]), server, thread)


def _exposition(registry: CollectorRegistry) -> ASGIApp:
    """GET or HEAD on any path answers the registry, in the format `Accept` asks for."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):  # uvicorn sends no body for HEAD
            allow = [(b"allow", b"GET, HEAD")]
            await send({"type": "http.response.start", "status": 405, "headers": allow})
            await send({"type": "http.response.body", "body": b""})
            return
        # latin-1 decodes any header bytes: a malformed `Accept` gets the default format.
        accept = ",".join(v.decode("latin-1") for k, v in scope["headers"] if k == b"accept")
        encode, content_type = choose_encoder(accept)
        body = encode(registry)
        headers = [(b"content-type", content_type.encode()), (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
