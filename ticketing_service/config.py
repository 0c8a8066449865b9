"""Settings read from the environment, each checked at start with one clear line on error."""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

MAX_WORKERS = 64
# Calls one server process runs at once; past it gRPC answers RESOURCE_EXHAUSTED at once
# instead of queueing work behind a database pool that is already busy. Watchers count too.
DEFAULT_GRPC_MAX_CONCURRENT_RPCS = 256
# Concurrent WatchRegistrationEvents calls per process (each holds a stream and a queue).
DEFAULT_MAX_WATCHERS = 100
# Connections one gRPC port of a process keeps open (about 10 KB each, and a file each), and
# how long one that carries no call stays open.
DEFAULT_GRPC_MAX_CONNECTIONS = 1000
DEFAULT_GRPC_CONNECTION_IDLE_SECONDS = 300
_DAY_MS = 24 * 3600 * 1000
# The shortest lock and statement timeouts taken. Under it the background work's ordinary
# statements (a sweep, a reconciliation claim) are cut on every pass and fail for good, and any
# lock wait at all aborts: TICKETING_DB_STATEMENT_TIMEOUT_MS=1 was taken and left every
# background task failing forever.
MIN_DB_TIMEOUT_MS = 100
# The shortest hold: a buyer needs time to pay, and the checkout time to open (the hold must
# also outlast TICKET_PAYMENT_TIMEOUT_SECONDS). 1e-9 was taken: every hold ended as it was made.
MIN_HOLD_SECONDS = 1.0
# The shortest pause between background passes (sweeps, reconciliation, refunds): 1e-9 was
# taken, and an idle server spent its whole core committing empty passes.
MIN_SWEEP_INTERVAL_SECONDS = 0.1
# The shortest bound on a call to the payment service: 1e-9 was taken, and every checkout,
# question and refund timed out while the server looked healthy.
MIN_PAYMENT_TIMEOUT_SECONDS = 0.5
# The shortest first wait before asking about a checkout or sending a refund again: 1e-9 was
# taken, and a failing refund used up its attempts within a few sweeps of an outage.
MIN_RETRY_BACKOFF_SECONDS = 1.0
_YEAR_SECONDS = 366 * 24 * 3600


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what is expected."""


@dataclass(frozen=True, slots=True)
class ServerTls:
    """The server's certificate and key; with a client CA, clients must present a certificate."""

    cert: Path
    key: Path
    client_ca: Path | None


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the service reads from its environment."""

    database_url: str | None
    data_dir: Path
    grpc_listen: str
    # Every token accepted on TicketingService calls (several while one is being rotated).
    grpc_tokens: tuple[str, ...]
    hold_seconds: float
    # None when unset: `serve` refuses to start without it (see require_payment_service).
    payment_service_url: str | None
    payment_service_token: str
    payment_timeout_seconds: float
    callback_url: str
    public_base_url: str
    default_provider_account_id: str | None
    db_pool_size: int
    db_lock_timeout_ms: int
    db_statement_timeout_ms: int
    sweep_interval_seconds: float
    db_max_connection_lifetime_seconds: float = 1800
    workers: int = 1
    tls: ServerTls | None = None
    metrics_listen: str | None = None
    health_listen: str | None = None
    grpc_max_concurrent_rpcs: int = DEFAULT_GRPC_MAX_CONCURRENT_RPCS
    max_watchers: int = DEFAULT_MAX_WATCHERS
    grpc_max_connections: int = DEFAULT_GRPC_MAX_CONNECTIONS
    grpc_connection_idle_seconds: int = DEFAULT_GRPC_CONNECTION_IDLE_SECONDS
    # Reconciliation (SPEC §9): a payment under way keeps its hold this long past its end; a
    # live hold this old is asked about once; follow-ups back off from this, for this long.
    payment_grace_seconds: float = 300
    reconcile_after_seconds: float = 120
    reconcile_backoff_seconds: float = 60
    reconcile_window_hours: float = 48
    # Refunds (SPEC §10): owed by themselves for payments without a seat; retried with a
    # back-off from this, and given up (failed, for an operator) after this many attempts.
    auto_refund: bool = True
    refund_backoff_seconds: float = 30
    refund_max_attempts: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Read and check every setting; raise ConfigError naming the first bad one."""
        r = _Reader(os.environ if env is None else env)
        config = cls(
            database_url=r.database_url("DATABASE_URL"),
            data_dir=Path(r.text("TICKETING_DATA_DIR") or "./.ticketing/pgdata"),
            grpc_listen=r.listen("TICKETING_GRPC_LISTEN") or "127.0.0.1:50051",
            grpc_tokens=r.header_tokens("TICKETING_GRPC_TOKEN"),
            hold_seconds=r.positive_float("TICKETING_HOLD_SECONDS", 600, minimum=MIN_HOLD_SECONDS),
            payment_service_url=r.optional_base_url("TICKET_PAYMENT_SERVICE_URL"),
            payment_service_token=not_placeholder(
                header_safe(
                    r.text("TICKET_PAYMENT_SERVICE_TOKEN") or "", "TICKET_PAYMENT_SERVICE_TOKEN"
                ),
                "TICKET_PAYMENT_SERVICE_TOKEN",
            ),
            payment_timeout_seconds=r.positive_float(
                "TICKET_PAYMENT_TIMEOUT_SECONDS", 10, minimum=MIN_PAYMENT_TIMEOUT_SECONDS
            ),
            callback_url=r.url(
                "TICKETING_CALLBACK_URL", "http://127.0.0.1:8080/api/ticket-payment-callbacks"
            ),
            public_base_url=(
                r.optional_base_url("MOIM_PUBLIC_BASE_URL") or "http://localhost:3000"
            ).rstrip("/"),
            default_provider_account_id=r.not_placeholder("DEFAULT_PORTONE_PROVIDER_ACCOUNT_ID"),
            db_pool_size=r.positive_int("TICKETING_DB_POOL_SIZE", 10, 1000),
            db_lock_timeout_ms=r.positive_int(
                "TICKETING_DB_LOCK_TIMEOUT_MS", 5000, _DAY_MS, MIN_DB_TIMEOUT_MS
            ),
            db_statement_timeout_ms=r.positive_int(
                "TICKETING_DB_STATEMENT_TIMEOUT_MS", 30000, _DAY_MS, MIN_DB_TIMEOUT_MS
            ),
            sweep_interval_seconds=r.positive_float(
                "TICKETING_SWEEP_INTERVAL_SECONDS", 30, minimum=MIN_SWEEP_INTERVAL_SECONDS
            ),
            db_max_connection_lifetime_seconds=r.positive_float(
                "TICKETING_DB_MAX_CONNECTION_LIFETIME_SECONDS", 1800
            ),
            workers=r.positive_int("TICKETING_WORKERS", 1, MAX_WORKERS),
            tls=_server_tls(r),
            metrics_listen=r.listen("TICKETING_METRICS_LISTEN"),
            health_listen=r.listen("TICKETING_HEALTH_LISTEN"),
            grpc_max_concurrent_rpcs=r.positive_int(
                "TICKETING_GRPC_MAX_CONCURRENT_RPCS", DEFAULT_GRPC_MAX_CONCURRENT_RPCS, 100_000
            ),
            max_watchers=r.positive_int("TICKETING_MAX_WATCHERS", DEFAULT_MAX_WATCHERS, 10_000),
            grpc_max_connections=r.positive_int(
                "TICKETING_GRPC_MAX_CONNECTIONS", DEFAULT_GRPC_MAX_CONNECTIONS, 1_000_000
            ),
            grpc_connection_idle_seconds=r.positive_int(
                "TICKETING_GRPC_MAX_CONNECTION_IDLE_SECONDS",
                DEFAULT_GRPC_CONNECTION_IDLE_SECONDS,
                _DAY_MS // 1000,
            ),
            payment_grace_seconds=r.positive_float("TICKETING_PAYMENT_GRACE_SECONDS", 300),
            reconcile_after_seconds=r.positive_float("TICKETING_RECONCILE_AFTER_SECONDS", 120),
            reconcile_backoff_seconds=r.positive_float(
                "TICKETING_RECONCILE_BACKOFF_SECONDS", 60, minimum=MIN_RETRY_BACKOFF_SECONDS
            ),
            reconcile_window_hours=r.positive_float(
                "TICKETING_RECONCILE_WINDOW_HOURS", 48, _YEAR_SECONDS / 3600
            ),
            auto_refund=r.flag("TICKETING_AUTO_REFUND", True),
            refund_backoff_seconds=r.positive_float(
                "TICKETING_REFUND_BACKOFF_SECONDS", 30, minimum=MIN_RETRY_BACKOFF_SECONDS
            ),
            refund_max_attempts=r.positive_int("TICKETING_REFUND_MAX_ATTEMPTS", 10, 1000),
        )
        if config.hold_seconds <= config.payment_timeout_seconds:
            raise ConfigError(
                f"TICKETING_HOLD_SECONDS ({config.hold_seconds:g}) must be longer than"
                f" TICKET_PAYMENT_TIMEOUT_SECONDS ({config.payment_timeout_seconds:g}): a hold"
                " could end before its checkout opens, and its buyer be sent to pay for a seat"
                " another buyer may take."
            )
        return config

    def require_payment_service(self) -> None:
        """ConfigError unless the payment service's base URL and bearer token are both set
        (`serve` and `reconcile` call it; it takes no call without its token)."""
        if self.payment_service_url is None:
            raise ConfigError(
                "TICKET_PAYMENT_SERVICE_URL is not set: give the payment service's base URL, "
                "e.g. http://moim-payment:8080."
            )
        if not self.payment_service_token:
            raise ConfigError(
                "TICKET_PAYMENT_SERVICE_TOKEN is not set: give the bearer token the payment "
                "service takes on every call."
            )


def _server_tls(r: _Reader) -> ServerTls | None:
    cert, key = r.text("TICKETING_TLS_CERT"), r.text("TICKETING_TLS_KEY")
    client_ca = r.text("TICKETING_TLS_CLIENT_CA")
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(
                "TICKETING_TLS_CLIENT_CA needs TICKETING_TLS_CERT and TICKETING_TLS_KEY: "
                "mutual TLS is TLS with client certificates."
            )
        return None
    if cert is None or key is None:
        raise ConfigError("Set both TICKETING_TLS_CERT and TICKETING_TLS_KEY, or neither.")
    return ServerTls(Path(cert), Path(key), Path(client_ca) if client_ca else None)


_FLAGS = {
    **dict.fromkeys(("true", "1", "yes", "on"), True),
    **dict.fromkeys(("false", "0", "no", "off"), False),
}


class ListenError(OSError):
    """An address to listen on cannot be bound: in use, or not one of this machine's."""


def header_safe(token: str, setting: str) -> str:
    """`token`, which travels in a request header, checked for what a header can carry.

    Anything but visible ASCII (an accent, a zero-width space pasted with the token, a control
    character) used to be taken, then failed every call that sent it: gRPC would not send it
    ("Invalid metadata"), httpx raised UnicodeEncodeError. The error shows none of the token.
    """
    bad = next((i for i, c in enumerate(token, start=1) if not "!" <= c <= "~"), None)
    if bad is not None:
        raise ConfigError(
            f"{setting} may hold only visible ASCII characters, no spaces (it is sent in a "
            f"request header); a token has another at position {bad}."
        )
    return token


def header_tokens(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """The comma-separated tokens of `name`, each sent in a header (see header_safe), blanks
    dropped (a trailing comma is harmless)."""
    parts = (part.strip() for part in env.get(name, "").split(","))
    return tuple(not_placeholder(header_safe(part, name), name) for part in parts if part)


# What deploy/kubernetes/secret.example.yaml holds in place of each secret, and configmap.yaml
# in place of each value only the deployment knows. The templates are public: a service started
# with a secret of them would take calls or callbacks signed with a known value; with a URL of
# them, send every payment callback and every payer to a host that is not Moim's.
_PLACEHOLDER = "REPLACEME"  # its letters: REPLACE_ME
_WHSEC_PREFIX = "whsec_"


def not_placeholder(value: str, setting: str) -> str:
    """`value`, unless it is (or holds) the deploy templates' placeholder: a ConfigError then.

    A Standard Webhooks secret is checked once decoded too (the template's is whsec_ + the
    base64 of the placeholder). The error names the setting, never the value.
    """
    decoded = ""
    if value.startswith(_WHSEC_PREFIX):
        encoded = value.removeprefix(_WHSEC_PREFIX)
        with contextlib.suppress(binascii.Error, ValueError):
            decoded = base64.b64decode(encoded + "=" * (-len(encoded) % 4)).decode(errors="ignore")
    if _spells_placeholder(value) or _spells_placeholder(decoded):
        raise ConfigError(
            f"{setting} holds the deploy templates' placeholder (REPLACE_ME): "
            "set the real value (in the Secret or the ConfigMap) before starting."
        )
    return value


def _spells_placeholder(text: str) -> bool:
    """Whether the letters of `text` spell the placeholder: percent-decoded (`REPLACE%5FME` in a
    URL's password, encoded twice too), and read as ASCII capitals alone, so `replace-me`,
    full-width letters or a zero-width space between them spell it as well."""
    for _ in range(3):
        text = unquote(text)
    letters = re.sub(r"[^A-Z]", "", unicodedata.normalize("NFKC", text).upper())
    return _PLACEHOLDER in letters


def parse_host_port(value: str, setting: str) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 in brackets); port 0 picks a free port."""
    host, colon, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    # Checked here: gRPC would take port 99999 as 34463 (modulo 65536), and -1 or "" as 0.
    if not colon or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ConfigError(
            f"{setting} must be HOST:PORT with a port up to 65535, e.g. 127.0.0.1:8080; "
            f"got {value!r}."
        )
    return host, int(port)


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def text(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def listen(self, name: str) -> str | None:
        """A HOST:PORT to listen on, checked (see parse_host_port)."""
        value = self.text(name)
        if value is not None:
            parse_host_port(value, name)
        return value

    def positive_float(
        self, name: str, default: float, maximum: float = _YEAR_SECONDS, minimum: float = 0
    ) -> float:
        """A number above 0 (and at least `minimum`) and at most `maximum` (a year of seconds
        unless told).

        Bounded because durations become timedeltas and timers: 1e300 seconds would overflow
        them at start, or in the first call that uses it; and 1e-9 seconds between sweeps
        had an idle server commit some 4,500 times a second.
        """
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if minimum > 0 and not minimum <= value <= maximum:  # also refuses nan and inf
            raise ConfigError(
                f"{name} must be a number from {minimum:g} to {maximum:.15g}, got {raw!r}."
            )
        if not 0 < value <= maximum:
            raise ConfigError(
                f"{name} must be a positive number up to {maximum:.15g}, got {raw!r}."
            )
        return value

    def positive_int(self, name: str, default: int, maximum: int, minimum: int = 1) -> int:
        """A whole number from `minimum` (1 unless told) to `maximum`: `0.5` or `-1` is refused,
        never rounded."""
        raw = self.text(name)
        if raw is None:
            return default
        if not (raw.isascii() and raw.isdigit()) or not minimum <= int(raw) <= maximum:
            raise ConfigError(
                f"{name} must be a whole number from {minimum} to {maximum}, got {raw!r}."
            )
        return int(raw)

    def flag(self, name: str, default: bool) -> bool:
        """true/false (also 1/0, yes/no, on/off); anything else is refused, never guessed."""
        raw = self.text(name)
        if raw is None:
            return default
        value = _FLAGS.get(raw.lower())
        if value is None:
            raise ConfigError(f"{name} must be true or false, got {raw!r}.")
        return value

    def header_tokens(self, name: str) -> tuple[str, ...]:
        return header_tokens(self._env, name)

    def url(self, name: str, default: str) -> str:
        return self.optional_url(name) or default

    def database_url(self, name: str) -> str | None:
        """A Postgres URL asyncpg can take (a malformed one was a traceback in the first command
        that connected); None only when unset, which means an embedded Postgres.

        Set but empty (an empty Secret value) is refused: it was read as unset, and a migration
        Job migrated a throwaway embedded database and succeeded.
        """
        if name in self._env and not self._env[name].strip():
            raise ConfigError(
                f"{name} is set but empty: give the URL of the service's Postgres, or unset it "
                "to run on an embedded Postgres in TICKETING_DATA_DIR."
            )
        return self._checked_url(
            name,
            database_url_problem,
            "a postgresql:// or postgres:// URL of a Postgres 14+ database, such as "
            "postgresql://ticketing:secret@db:5432/ticketing",
        )

    def optional_url(self, name: str) -> str | None:
        """An http(s) URL with a host (and a port, if any, up to 65535).

        A URL without a host or with a space was taken, and every call to it failed as the
        service being unreachable; one that could not be parsed ("http://[::1") crashed the
        start.
        """
        return self._checked_url(
            name,
            _url_problem,
            "an http:// or https:// URL with a host, such as http://moim-payment:8080",
        )

    def optional_base_url(self, name: str) -> str | None:
        """Like `optional_url`, for a URL that paths are put after: without a query or fragment.

        Either swallowed every path: with `http://pay:8080/?v=1` each call went to `/` with the
        query `v=1/v1/ticket-checkouts/...`, and a paid checkout read as not found.
        """
        return self._checked_url(
            name,
            _base_url_problem,
            "an http:// or https:// URL with a host and no query, such as http://moim-payment:8080",
        )

    def _checked_url(
        self, name: str, problem_of: Callable[[str], str | None], expected: str
    ) -> str | None:
        """The URL `name` holds, if any, checked at start. The error names what is wrong, not
        the URL: it may carry a password."""
        value = self.not_placeholder(name)
        if value is not None and (problem := problem_of(value)):
            raise ConfigError(f"{name} must be {expected}; {problem}.")
        return value

    def not_placeholder(self, name: str) -> str | None:
        """The text of `name`, refused when it holds the deploy templates' placeholder."""
        value = self.text(name)
        return None if value is None else not_placeholder(value, name)


def database_url_problem(url: str) -> str | None:
    """What keeps asyncpg from taking `url` before it connects anywhere, if anything.

    Several hosts (`postgresql://a:5432,b:5432/db`) and a socket directory in `?host=` make
    Postgres URLs too, so the hosts are read one by one rather than by urlsplit. What it says
    repeats none of the URL, which may hold a password.
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return "it starts with neither"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "it cannot be parsed"
    for host in parts.netloc.rpartition("@")[2].split(","):
        port = host.rpartition("]")[2].partition(":")[2] if ":" in host else ""
        if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
            return (
                "a port in it is not a number up to 65535 (or its password holds one of"
                " # / ? @ unencoded: percent-encode it, e.g. # as %23)"
            )
    if any(mode not in _SSL_MODES for mode in parse_qs(parts.query).get("sslmode", [])):
        return f"its sslmode is not one of {', '.join(_SSL_MODES)}"
    return None


_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


def _url_problem(url: str) -> str | None:
    """What keeps `url` from being one a request can be sent to, if anything."""
    if not url.startswith(("http://", "https://")):
        return "it starts with neither"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "it holds a space or a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - read for its check: ValueError past 65535 or not a number
    except ValueError:
        return "it cannot be parsed, or its port is not a number up to 65535"
    if not parts.hostname:
        return "it has no host"
    return None


def _base_url_problem(url: str) -> str | None:
    """What keeps `url` from being one paths can be put after, if anything."""
    if problem := _url_problem(url):
        return problem
    if "?" in url or "#" in url:
        return "it has a query or a fragment, where the paths put after it would land"
    return None
