"""The `ticketing-service` command: serve, webhook, dev, migrate, prune-events, reconcile,
import-moim."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import sys
import uuid
from collections.abc import Callable, Sequence

from ticketing_service import bootstrap
from ticketing_service.adapters.db.schema_revision import SchemaNotReady
from ticketing_service.config import Config, ConfigError, ListenError, parse_host_port
from ticketing_service.domain.errors import DatabaseUnavailable, TicketingError
from ticketing_service.entrypoints import event_loop, import_command, maintenance
from ticketing_service.entrypoints.dev import stack
from ticketing_service.entrypoints.dev.stack import DevListen, run_dev_stack
from ticketing_service.entrypoints.grpc.exposure import check_dev_exposure, check_exposure
from ticketing_service.entrypoints.grpc.health_port import start_health_port
from ticketing_service.entrypoints.grpc.server import (
    RunningServer,
    ServerLimits,
    serve_until_signalled,
)
from ticketing_service.entrypoints.grpc.workers import serve_in_workers
from ticketing_service.entrypoints.listening import raise_open_file_limit
from ticketing_service.entrypoints.metrics_endpoint import start_metrics_server
from ticketing_service.entrypoints.observability.interceptor import ObservingInterceptor
from ticketing_service.entrypoints.observability.logging import configure_logging
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.serving import served
from ticketing_service.entrypoints.webhook.serve import run_webhook
from ticketing_service.service_layer.events_handlers import PRUNE_BATCH_SIZE

log = logging.getLogger("ticketing_service")


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand; a configuration error prints one line and exits 2, a database or port
    it cannot use one line and exits 1, `reconcile` with checkouts it could not ask about 3
    (a stop signal, 128 and its number, is the entry point's: `__main__.py`)."""
    args = _parser().parse_args(argv)
    configure_logging(sys.stderr)
    raise_open_file_limit()
    if args.command == "webhook":  # reads only its own settings (WebhookConfig)
        return run_webhook(args.listen)
    try:
        config = Config.from_env(
            {**stack.DEV_SETTINGS, **os.environ} if args.command == "dev" else None
        )
        if args.command == "migrate":
            return _migrate(config)
        if args.command == "dev":
            listen = DevListen(args.grpc_listen, args.webhook_listen, args.sandbox_listen)
            parse_host_port(listen.grpc, "--grpc-listen")
            parse_host_port(listen.webhook, "--webhook-listen")
            parse_host_port(listen.sandbox, "--sandbox-listen")
            check_dev_exposure(
                (listen.grpc, listen.webhook, listen.sandbox), insecure=args.insecure
            )
            return event_loop.run(run_dev_stack(config, listen))
        if args.command == "prune-events":
            prune = maintenance.prune_events(config, args.older_than_days, args.batch_size)
            return event_loop.run(prune)
        if args.command == "reconcile":
            config.require_payment_service()
            command = maintenance.reconcile(config, args.reservation, args.since)
            return event_loop.run(command)
        if args.command == import_command.COMMAND:
            run = import_command.run(config, args.source_database_url, args.dry_run)
            return event_loop.run(run)
        if args.listen:
            parse_host_port(args.listen, "--listen")
        address, migrate = args.listen or config.grpc_listen, not args.no_migrate
        config.require_payment_service()
        guarded = bool(config.grpc_tokens or (config.tls and config.tls.client_ca))
        check_exposure(address, guarded=guarded, insecure=args.insecure)
        if (workers := args.workers or config.workers) > 1:
            if config.metrics_listen:
                raise ConfigError(
                    "TICKETING_METRICS_LISTEN serves one process's metrics: leave it unset with "
                    "--workers above 1, or run one worker per replica."
                )
            return _serve_workers(config, address, migrate, workers)
        return event_loop.run(_serve(config, address, migrate))
    except ConfigError as error:
        print(f"ticketing-service: {error}", file=sys.stderr)
        return 2
    except (ListenError, SchemaNotReady) as error:
        print(f"ticketing-service: {error}", file=sys.stderr)
        return 1
    except TicketingError as error:  # e.g. the database cannot be reached: and why
        cause = f" ({_why(error.__cause__)})" if error.__cause__ else ""
        print(f"ticketing-service: {error.message}{cause}", file=sys.stderr)
        return 1


def _why(cause: BaseException | None) -> str:
    """What went wrong, in a few words (a timeout's own text is empty)."""
    return str(cause) or type(cause).__name__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ticketing-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="run the gRPC server and its background work (holds, reconciliation, refunds)"
    )
    serve.add_argument(
        "--listen", help="host:port (default: $TICKETING_GRPC_LISTEN or 127.0.0.1:50051)"
    )
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate at start")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address with neither a token nor mutual TLS",
    )
    serve.add_argument(
        "--workers",
        type=_positive_count,
        help="server processes sharing the port (default: $TICKETING_WORKERS or 1)",
    )
    dev = commands.add_parser(
        "dev", help="run Postgres, the server, the shim and a sandbox payment service together"
    )
    # dev reads no *_LISTEN setting: these flags alone set its addresses.
    dev.add_argument(
        "--grpc-listen",
        default=stack.DEFAULT_GRPC_LISTEN,
        help=f"the gRPC server's address (default: {stack.DEFAULT_GRPC_LISTEN})",
    )
    dev.add_argument(
        "--webhook-listen",
        default=stack.DEFAULT_WEBHOOK_LISTEN,
        help=f"the shim's address (default: {stack.DEFAULT_WEBHOOK_LISTEN})",
    )
    dev.add_argument(
        "--sandbox-listen",
        default=stack.DEFAULT_SANDBOX_LISTEN,
        help=f"the sandbox's address (default: {stack.DEFAULT_SANDBOX_LISTEN})",
    )
    dev.add_argument(
        "--insecure", action="store_true", help="serve a non-loopback address, unguarded"
    )
    webhook = commands.add_parser("webhook", help="run the payment-callback webhook shim")
    webhook.add_argument(
        "--listen", help="host:port (default: $TICKETING_WEBHOOK_LISTEN or 127.0.0.1:8080)"
    )
    commands.add_parser("migrate", help="apply the database migrations and exit")
    prune = commands.add_parser(
        "prune-events", help="delete registration events older than an age from the feed"
    )
    prune.add_argument(
        "--older-than-days",
        type=_positive_days,
        required=True,
        help="delete events created more than this many days ago",
    )
    prune.add_argument(
        "--batch-size",
        type=_batch_size,
        default=PRUNE_BATCH_SIZE,
        help=f"rows deleted per transaction (default: {PRUNE_BATCH_SIZE})",
    )
    reconcile = commands.add_parser(
        "reconcile",
        help="ask the payment service about checkouts now (by default: those due)",
    )
    which = reconcile.add_mutually_exclusive_group()
    which.add_argument("--reservation", type=_reservation_id, help="one reservation's id")
    which.add_argument(
        "--since",
        type=maintenance.duration,
        help="every unsettled reservation with a checkout made in this long (30m, 2h, 7d)",
    )
    import_command.add_parser(commands)
    return parser


def _migrate(config: Config) -> int:
    bootstrap.migrate(config, bootstrap.resolve_database_url(config))
    log.info("migrations applied")
    return 0


async def _serve(
    config: Config, listen: str, migrate: bool, started: Callable[[int], None] | None = None
) -> int:
    database_url = bootstrap.resolve_database_url(config)
    if migrate:
        await asyncio.to_thread(bootstrap.migrate, config, database_url)
    elif started is None:  # a worker's parent has checked it
        await _require_schema(config, database_url)
    metrics = TicketingMetrics()
    reuse_port = started is not None
    interceptors = [ObservingInterceptor(metrics)]
    async with (
        bootstrap.running_service(config, database_url, metrics) as service,
        served(
            service, config, listen, reuse_port=reuse_port, interceptors=interceptors
        ) as running,
        contextlib.AsyncExitStack() as side_ports,  # closed first, after the graceful stop
    ):
        metrics.watch_pool(service.pool_usage)
        await _open_side_ports(side_ports, config, running, metrics, reuse_port)

        def ready() -> None:
            if started is not None:
                started(running.port)
            else:
                host = listen.rsplit(":", 1)[0]
                log.info("serving moim.ticketing.v1.TicketingService on %s:%d", host, running.port)

        await serve_until_signalled(running, ready)
    return 0


async def _open_side_ports(
    stack: contextlib.AsyncExitStack,
    config: Config,
    running: RunningServer,
    metrics: TicketingMetrics,
    reuse_port: bool,
) -> None:
    """The plaintext health-only port and the metrics endpoint, when they are configured."""
    if config.health_listen:
        probes = await start_health_port(
            config.health_listen,
            running.health,
            reuse_port=reuse_port,
            limits=ServerLimits.of(config),
        )
        stack.push_async_callback(probes.stop, 0)
        log.info("health probes on %s:%d", _host(config.health_listen), probes.port)
    if config.metrics_listen:
        endpoint = start_metrics_server(config.metrics_listen, metrics.registry)
        stack.callback(endpoint.close)
        log.info("metrics on %s:%d", _host(config.metrics_listen), endpoint.port)


def _host(listen: str) -> str:
    return listen.rsplit(":", 1)[0]


async def _require_schema(config: Config, database_url: str) -> None:
    """SchemaNotReady unless the database was migrated for this version. A database that cannot
    be reached yet is no reason not to start: the server reports NOT_SERVING until it can."""
    try:
        await bootstrap.require_schema(config, database_url)
    except DatabaseUnavailable as error:
        log.warning(
            "could not check the database's schema: %s (%s)", error.message, _why(error.__cause__)
        )


def _serve_workers(config: Config, listen: str, migrate: bool, count: int) -> int:
    """Migrate (and start an embedded Postgres) once, then serve from `count` processes."""
    database_url = bootstrap.resolve_database_url(config)
    if migrate:
        bootstrap.migrate(config, database_url)
    else:
        event_loop.run(_require_schema(config, database_url))
    return serve_in_workers(count, listen, functools.partial(_serve_worker, database_url))


def _serve_worker(database_url: str, listen: str, started: Callable[[int], None]) -> int:
    """One process of `serve --workers N` (spawned: it shares nothing with its parent)."""
    configure_logging(sys.stderr)
    config = dataclasses.replace(Config.from_env(), database_url=database_url)
    try:
        return event_loop.run(_serve(config, listen, migrate=False, started=started))
    except ListenError as error:  # the parent then stops the others and exits 1
        print(f"ticketing-service: {error}", file=sys.stderr)
        return 1


def _positive_count(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) <= 64:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 64, got {raw!r}")
    return int(raw)


def _batch_size(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) <= 1_000_000:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 1000000, got {raw!r}")
    return int(raw)


def _positive_days(raw: str) -> float:
    try:
        days = float(raw)
    except ValueError:
        days = -1
    if not 0 < days <= 99_999:
        raise argparse.ArgumentTypeError(
            f"must be a number of days above 0 and up to 99999, got {raw!r}"
        )
    return days


def _reservation_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a reservation id (a UUID), got {raw!r}"
        ) from None
