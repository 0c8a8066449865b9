"""Settings of the webhook shim, read from the environment and checked at start.

Secrets are kept out of every repr and message: an error names the variable, never its value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from moim.ticketing.client import DEFAULT_KEEPALIVE_SECONDS

from ticketing_service.config import (
    ConfigError,
    header_tokens,
    not_placeholder,
    parse_host_port,
)

LISTEN_SETTING = "TICKETING_WEBHOOK_LISTEN"
GRPC_TARGET_SETTING = "TICKETING_GRPC_TARGET"
GRPC_TOKEN_SETTING = "TICKETING_GRPC_TOKEN"  # noqa: S105 - the variable's name, not a token
HMAC_SECRETS_SETTING = "TICKET_PAYMENT_CALLBACK_SECRET"
STANDARD_SECRETS_SETTING = "TICKETING_STANDARD_WEBHOOK_SECRETS"
TOLERANCE_SETTING = "TICKETING_WEBHOOK_TOLERANCE_SECONDS"
HMAC_SWITCH_SETTING = "TICKETING_WEBHOOK_MOIM_HMAC"
STANDARD_SWITCH_SETTING = "TICKETING_WEBHOOK_STANDARD"
TLS_CA_SETTING = "TICKETING_TLS_CA"
TLS_CLIENT_CERT_SETTING = "TICKETING_TLS_CLIENT_CERT"
TLS_CLIENT_KEY_SETTING = "TICKETING_TLS_CLIENT_KEY"
METRICS_LISTEN_SETTING = "TICKETING_METRICS_LISTEN"
GRPC_CHANNELS_SETTING = "TICKETING_WEBHOOK_GRPC_CHANNELS"
READ_TIMEOUT_SETTING = "TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS"

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_GRPC_TARGET = "127.0.0.1:50051"
DEFAULT_TOLERANCE_SECONDS = 300
_MAX_TOLERANCE_SECONDS = 24 * 3600  # a day-old signature is a replay, not clock skew
# Connections to the gRPC backend. `serve --workers N` shares one port through SO_REUSEPORT,
# and the kernel gives each *connection* to one worker, so a single channel would send every
# callback to the same worker. Several channels spread them (more than the workers, because
# the kernel places each connection by a hash, not in turn).
DEFAULT_GRPC_CHANNELS = 8
_MAX_GRPC_CHANNELS = 64
# A sender has this long from opening a connection (or from the previous answer on it) to
# deliver a request's headers and whole body; then the connection is cut.
DEFAULT_READ_TIMEOUT_SECONDS = 10.0
_MAX_READ_TIMEOUT_SECONDS = 300.0

_SWITCHES = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """Everything the webhook shim reads from its environment; a disabled scheme has no secrets."""

    listen: str
    grpc_target: str
    # The token sent to the server: the first of TICKETING_GRPC_TOKEN, so the server and the
    # shim can share one value while a token is rotated (the newest first).
    grpc_token: str | None = field(repr=False)
    hmac_secrets: tuple[str, ...] = field(repr=False)
    standard_secrets: tuple[str, ...] = field(repr=False)
    tolerance_seconds: int
    # TLS to the gRPC backend when a CA is set (None: plaintext, loopback only); the client
    # certificate and key are for a backend that requires mutual TLS.
    tls_ca: Path | None = None
    tls_client_cert: Path | None = None
    tls_client_key: Path | None = None
    metrics_listen: str | None = None
    grpc_channels: int = DEFAULT_GRPC_CHANNELS
    read_timeout_seconds: float = DEFAULT_READ_TIMEOUT_SECONDS
    # While calls are open on a connection to the backend, it is pinged this often, and dropped
    # when a ping goes as long unanswered. Not a setting: tests shorten it.
    grpc_keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookConfig:
        """Read and check every setting; raise ConfigError naming the first bad one."""
        source = os.environ if env is None else env
        listen = _text(source, LISTEN_SETTING) or DEFAULT_LISTEN
        parse_host_port(listen, LISTEN_SETTING)
        metrics_listen = _text(source, METRICS_LISTEN_SETTING)
        if metrics_listen is not None:
            parse_host_port(metrics_listen, METRICS_LISTEN_SETTING)
        return cls(
            listen=listen,
            grpc_target=_grpc_target(source),
            grpc_token=_first_token(source),
            hmac_secrets=_enabled_secrets(source, HMAC_SECRETS_SETTING, HMAC_SWITCH_SETTING),
            standard_secrets=_enabled_secrets(
                source, STANDARD_SECRETS_SETTING, STANDARD_SWITCH_SETTING
            ),
            tolerance_seconds=_whole_number(
                source,
                TOLERANCE_SETTING,
                DEFAULT_TOLERANCE_SECONDS,
                _MAX_TOLERANCE_SECONDS,
                "whole seconds",
            ),
            tls_ca=_path(source, TLS_CA_SETTING),
            tls_client_cert=_path(source, TLS_CLIENT_CERT_SETTING),
            tls_client_key=_path(source, TLS_CLIENT_KEY_SETTING),
            metrics_listen=metrics_listen,
            grpc_channels=_whole_number(
                source,
                GRPC_CHANNELS_SETTING,
                DEFAULT_GRPC_CHANNELS,
                _MAX_GRPC_CHANNELS,
                "a whole number",
            ),
            read_timeout_seconds=_seconds(
                source,
                READ_TIMEOUT_SETTING,
                DEFAULT_READ_TIMEOUT_SECONDS,
                _MAX_READ_TIMEOUT_SECONDS,
            ),
        )._checked()

    def _checked(self) -> WebhookConfig:
        if not self.hmac_secrets and not self.standard_secrets:
            raise ConfigError(
                f"The webhook shim needs a signing secret: set {HMAC_SECRETS_SETTING} "
                f"or {STANDARD_SECRETS_SETTING} (comma-separated for rotation), and leave "
                f"{HMAC_SWITCH_SETTING} or {STANDARD_SWITCH_SETTING} on."
            )
        if self.tls_client_cert is not None and self.tls_ca is None:
            raise ConfigError(
                f"{TLS_CLIENT_CERT_SETTING} is set but {TLS_CA_SETTING} is not: a client "
                "certificate is only sent over TLS, so name the CA that signed the server's."
            )
        return self


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = _text(env, name)
    return None if value is None else Path(value)


def _secrets(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """The comma-separated secrets of `name`, blanks dropped (a trailing comma is harmless)."""
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


# Name resolvers gRPC has built in: `dns:///host:port`, `ipv4:a:1,b:2`, `unix:/path`, ...
_GRPC_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def _grpc_target(env: Mapping[str, str]) -> str:
    """The gRPC server to forward to: HOST:PORT, or a target naming one of gRPC's resolvers.

    Anything else (a URL, a space, a port past 65535) was taken, and the shim forwarded no
    callback while it waited for a server it could never reach.
    """
    target = _text(env, GRPC_TARGET_SETTING) or DEFAULT_GRPC_TARGET
    if any(c.isspace() or not c.isprintable() for c in target):
        raise ConfigError(f"{GRPC_TARGET_SETTING} holds a space or a control character.")
    if target.startswith(_GRPC_SCHEMES):
        return target
    if "/" in target:
        raise ConfigError(
            f"{GRPC_TARGET_SETTING} is HOST:PORT or a gRPC target such as "
            "dns:///ticketing-server:50051, not a URL."
        )
    parse_host_port(target, GRPC_TARGET_SETTING)
    return target


def _first_token(env: Mapping[str, str]) -> str | None:
    """The first of TICKETING_GRPC_TOKEN's tokens (all checked: see header_safe), if any."""
    return next(iter(header_tokens(env, GRPC_TOKEN_SETTING)), None)


def _enabled_secrets(
    env: Mapping[str, str], secrets_name: str, switch_name: str
) -> tuple[str, ...]:
    """The secrets of a scheme that is on; a scheme defaults to on when it has a secret. The
    deploy templates' placeholder is refused in a scheme that is on (see not_placeholder)."""
    secrets = _secrets(env, secrets_name)
    raw = _text(env, switch_name)
    if raw is not None:
        if raw.lower() not in _SWITCHES:
            raise ConfigError(f"{switch_name} must be 'on' or 'off', got {raw!r}.")
        if not _SWITCHES[raw.lower()]:
            return ()
        if not secrets:
            raise ConfigError(
                f"{switch_name} is on but {secrets_name} is empty; set it or turn it off."
            )
    return tuple(not_placeholder(secret, secrets_name) for secret in secrets)


def _whole_number(env: Mapping[str, str], name: str, default: int, maximum: int, kind: str) -> int:
    """`name` as a whole number from 1 to `maximum` (`kind` says what, in the error), or default."""
    raw = _text(env, name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= maximum:
        raise ConfigError(f"{name} must be {kind} between 1 and {maximum}, got {raw!r}.")
    return int(raw)


def _seconds(env: Mapping[str, str], name: str, default: float, maximum: float) -> float:
    """`name` as a number of seconds above 0 and at most `maximum` (fractions allowed)."""
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value <= maximum:  # also refuses nan and inf
        raise ConfigError(
            f"{name} must be a number of seconds above 0 up to {maximum:g}, got {raw!r}."
        )
    return value
