"""The listening sockets of the shim, the dev stack and the metrics endpoints."""

from __future__ import annotations

import socket

from ticketing_service.config import ListenError


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
