"""Raw HTTP/2 connections that never make a call, as a flood of them would be opened."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

# What an HTTP/2 client sends to open a connection: the preface, its (empty) SETTINGS, and the
# acknowledgement of the server's. The connection is then open, and carries no call.
HTTP2_HELLO = (
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    + b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
)
ANSWER_SECONDS = 10


def was_closed(connection: socket.socket) -> bool:
    """Wait for the server's first answer on `connection`: True if it closed it."""
    readable, _, _ = select.select([connection], [], [], ANSWER_SECONDS)
    assert readable, "the server neither answered nor closed a new connection"
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


@contextmanager
def idle_connections(port: int, count: int) -> Iterator[int]:
    """`count` HTTP/2 connections that never make a call, each answered before the next opens;
    yields how many of them the server closed at once."""
    with ExitStack() as opened:
        closed = 0
        for _ in range(count):
            connection = opened.enter_context(socket.create_connection(("127.0.0.1", port)))
            connection.sendall(HTTP2_HELLO)
            closed += was_closed(connection)
        yield closed
