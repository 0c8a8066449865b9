"""The listening sockets of the shim, the dev stack and the metrics endpoints, and the files
the process may hold open for their connections."""

from __future__ import annotations

import contextlib
import resource
import socket

from ticketing_service.config import ListenError

# However many files the process may open: past this, idle connections would only cost memory
# (a few kilobytes each). A connection that sends its request at once is served whatever the
# cap, since a new connection closes the one that has waited longest for its request.
MAX_HTTP_CONNECTIONS = 10_000


def bind_socket(host: str, port: int, purpose: str = "") -> socket.socket:
    """A TCP socket listening on host:port (port 0 picks a free one); ListenError if it cannot.

    It listens at once, so the port is connectable before the server that answers on it has
    started. `[::]` takes IPv4 too, as the system does by default (`socket.create_server`
    would make it IPv6 only). `purpose` (e.g. " for metrics") goes into the error.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except OSError as error:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}{purpose}: {error.strerror}.") from None
    return sock


def raise_open_file_limit() -> None:
    """Let the process hold as many open files as its hard limit allows (as Go programs do).

    Each connection takes one. Under the common soft limit of 1,024 (hard 524,288), about 1,000
    idle sockets took every file of the shim (or of a metrics port), and it accepted no signed
    callback until they were cut. A limit it cannot raise is left as it is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # e.g. a hard limit above the kernel's
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def http_connection_cap(divisor: int) -> int:
    """How many connections one HTTP server of the process keeps open: 1/`divisor` of the files
    the process may open, at most MAX_HTTP_CONNECTIONS.

    The rest stays for the process's other files: connections being accepted, its gRPC
    channels or connections and its database pool, its other ports, its logs. Read once the
    limit has been raised (`raise_open_file_limit`), so `ulimit -n` is what sets it.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_HTTP_CONNECTIONS
    return max(1, min(soft // divisor, MAX_HTTP_CONNECTIONS))
