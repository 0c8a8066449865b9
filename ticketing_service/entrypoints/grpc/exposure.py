"""Refuses to serve an address other machines can reach when nothing guards the port."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable

from ticketing_service.config import ConfigError

log = logging.getLogger(__name__)


def is_loopback(listen: str) -> bool:
    """Whether `listen` (HOST:PORT) is reachable only from this machine: 127.0.0.0/8, ::1."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a hostname: assume others can reach it
        return False


def check_exposure(listen: str, *, guarded: bool, insecure: bool) -> None:
    """ConfigError for a reachable address with neither a token nor mutual TLS (`guarded`).

    `insecure` (the `--insecure` flag) lets it through with a warning, for a trusted network.
    """
    if guarded or is_loopback(listen):
        return
    if not insecure:
        raise ConfigError(
            f"refusing to serve {listen} to the network unauthenticated: set "
            "TICKETING_GRPC_TOKEN or TICKETING_TLS_CLIENT_CA (mutual TLS), listen on "
            "127.0.0.1, or pass --insecure if the network is trusted."
        )
    log.warning(
        "serving %s with neither a token nor mutual TLS (--insecure): anyone who can reach "
        "the port can call every RPC",
        listen,
    )


def check_dev_exposure(listens: Iterable[str], *, insecure: bool) -> None:
    """ConfigError for an address of `dev` other machines can reach: dev guards none of its
    ports. `insecure` lets it through with a warning, as for `serve`."""
    for listen in listens:
        if is_loopback(listen):
            continue
        if not insecure:
            raise ConfigError(
                f"refusing to serve {listen} to the network: dev guards none of its ports (its "
                "gRPC server takes every call, its sandbox pays any checkout); listen on "
                "127.0.0.1, or pass --insecure if the network is trusted."
            )
        log.warning("dev serves %s to the network unguarded (--insecure)", listen)
