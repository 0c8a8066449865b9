"""`ticketing-service dev`: the whole flow on one machine, in one process, for a newcomer.

Embedded Postgres, the gRPC server with its background workers, the webhook shim and the
payment service fake as a sandbox (`payment_service.py`), wired to each other with fresh
secrets, stopped together on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from dataclasses import dataclass, replace

import uvicorn

from ticketing_service import bootstrap
from ticketing_service.config import Config, parse_host_port
from ticketing_service.entrypoints.dev.payment_service import create_payment_service_app
from ticketing_service.entrypoints.event_loop import stop_signals
from ticketing_service.entrypoints.grpc.server import RunningServer
from ticketing_service.entrypoints.listening import bind_socket
from ticketing_service.entrypoints.observability.interceptor import ObservingInterceptor
from ticketing_service.entrypoints.serving import served
from ticketing_service.entrypoints.webhook.serve import ShimServer, build_verifier, webhook_server
from ticketing_service.webhook_config import DEFAULT_TOLERANCE_SECONDS, WebhookConfig

log = logging.getLogger(__name__)

CALLBACK_PATH = "/api/ticket-payment-callbacks"


# The dev stack's own defaults, which the environment overrides as it does any setting: a lost
# callback ("Pay without callback") is settled by asking within seconds, and holds end promptly.
DEV_SETTINGS = {"TICKETING_RECONCILE_AFTER_SECONDS": "10", "TICKETING_SWEEP_INTERVAL_SECONDS": "2"}

DEFAULT_GRPC_LISTEN = "127.0.0.1:50051"
DEFAULT_WEBHOOK_LISTEN = "127.0.0.1:8080"
DEFAULT_SANDBOX_LISTEN = "127.0.0.1:8090"


@dataclass(frozen=True, slots=True)
class DevListen:
    """Where each part of the dev stack listens (port 0 picks a free port)."""

    grpc: str = DEFAULT_GRPC_LISTEN
    webhook: str = DEFAULT_WEBHOOK_LISTEN
    sandbox: str = DEFAULT_SANDBOX_LISTEN


def _bind(listen: str) -> socket.socket:
    return bind_socket(*parse_host_port(listen, "a dev stack address"))


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


async def run_dev_stack(config: Config, listen: DevListen) -> int:
    """Run every part until SIGINT, SIGTERM or SIGHUP; print where they are and how to try them."""
    sandbox_sock, shim_sock = _bind(listen.sandbox), _bind(listen.webhook)
    sandbox_url, shim_url = _url(sandbox_sock), _url(shim_sock)
    payment_token, callback_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    config = replace(
        config,
        payment_service_url=sandbox_url,
        payment_service_token=payment_token,
        callback_url=shim_url + CALLBACK_PATH,
        public_base_url=sandbox_url,
        grpc_tokens=(),
    )
    database_url = bootstrap.resolve_database_url(config)
    await asyncio.to_thread(bootstrap.migrate, config, database_url)
    sandbox = create_payment_service_app(
        payment_token,
        public_url=sandbox_url,
        callback_secret=callback_secret,
        refund_callbacks=True,
    )
    sandbox_server = uvicorn.Server(
        uvicorn.Config(sandbox, lifespan="off", log_config=None, access_log=False)
    )
    async with (
        bootstrap.running_service(config, database_url) as service,
        # Each call logged as `serve` logs it: the walkthrough's calls show in the terminal.
        served(service, config, listen.grpc, interceptors=[ObservingInterceptor()]) as running,
    ):
        shim_config = WebhookConfig(
            listen=listen.webhook,
            grpc_target=f"127.0.0.1:{running.port}",
            grpc_token=None,
            hmac_secrets=(callback_secret,),
            standard_secrets=(),
            tolerance_seconds=DEFAULT_TOLERANCE_SECONDS,
        )
        async with webhook_server(shim_config, build_verifier(shim_config)) as shim:
            await _serve(
                config, running, shim, shim_sock, sandbox_server, sandbox_sock, payment_token
            )
    return 0


async def _serve(
    config: Config,
    running: RunningServer,
    shim: ShimServer,
    shim_sock: socket.socket,
    sandbox_server: uvicorn.Server,
    sandbox_sock: socket.socket,
    payment_token: str,
) -> None:
    # uvicorn installs its own signal handlers while serving; ours only asks both to stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals():
        loop.add_signal_handler(sig, stop.set)
    serving = [
        asyncio.create_task(shim.serve(sockets=[shim_sock])),
        asyncio.create_task(sandbox_server.serve(sockets=[sandbox_sock])),
    ]
    async with asyncio.timeout(30):
        await shim.listening.wait()
    _print_banner(running.port, _url(shim_sock), _url(sandbox_sock), payment_token, config)
    await stop.wait()
    log.info("stopping the dev stack")
    shim.should_exit = sandbox_server.should_exit = True
    await asyncio.gather(*serving, return_exceptions=True)


def _print_banner(
    grpc_port: int, shim_url: str, sandbox_url: str, payment_token: str, config: Config
) -> None:
    target = f"127.0.0.1:{grpc_port}"
    curl = "npx buf curl --protocol grpc --http2-prior-knowledge"
    base = f"http://{target}/moim.ticketing.v1.TicketingService"
    settings = (
        '{"event_id":"launch-party","event_title":"Launch party","tiers":'
        '[{"tier_id":"vip","name":"VIP","price_amount":30000,"capacity":50}]}'
    )
    start = '{"event_id":"launch-party","tier_id":"vip","user_id":"user-1"}'
    # Where dev keeps its data, so the command works from any directory; a DATABASE_URL is the
    # user's own, and not printed (it may hold a password).
    database = (
        'DATABASE_URL="$DATABASE_URL"'
        if config.database_url
        else f"TICKETING_DATA_DIR={config.data_dir.resolve()}"
    )
    print(
        f"""
Moim ticketing dev stack is up (Ctrl-C stops everything):
  gRPC server      {target}   (moim.ticketing.v1.TicketingService, health, reflection)
  webhook shim     {shim_url}{CALLBACK_PATH}
  payment sandbox  {sandbox_url}   (checkout pages; no money moves)

A first paid registration:
  1. {curl} -d '{settings}' {base}/UpdateTicketingSettings
  2. {curl} -d '{start}' {base}/StartPaidRegistration
  3. open the reservation's checkoutUrl in a browser and click "Pay"
  4. {curl} -d '{{"reservation_id":"<reservationId from step 2>"}}' {base}/GetReservation
     (status RESERVATION_STATUS_CONFIRMED, with a registrationId)

"Pay without callback" pays but sends nothing (a lost callback): about
{config.reconcile_after_seconds:g} s after the hold was made the service asks the sandbox itself,
and confirms the payment. What the sandbox says of a checkout, as the service reads it:
  curl -H 'Authorization: Bearer {payment_token}' {sandbox_url}/v1/ticket-checkouts/<checkoutId>
and a reconciliation of the last two hours, from a shell, as an operator runs one:
  TICKET_PAYMENT_SERVICE_URL={sandbox_url} TICKET_PAYMENT_SERVICE_TOKEN={payment_token} \\
    {database} \\
    uv run ticketing-service reconcile --since 2h
""",
        flush=True,
    )
