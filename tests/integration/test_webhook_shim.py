"""The real webhook shim on a real port, forwarding to the real gRPC server on real Postgres."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx
import psutil
import pytest
from moim.ticketing.v1 import reservation_pb2

from tests.integration.callbacks import (
    HMAC_SECRET,
    PENDING,
    PRICE,
    SIGNERS,
    Signed,
    count_rows,
    encode,
    hmac_signed,
    hold_for_payment,
    paid_event,
    payment_id_of,
    post,
    refused_port,
    running_shim,
    shim_config,
    standard_signed,
    status_of,
)
from tests.postgres import sql
from tests.tcp_proxy import SilentProxy, from_another_host
from tests.terminal import python_from_a_terminal
from ticketing_service.entrypoints.grpc.server import RunningServer, start_server
from ticketing_service.entrypoints.webhook.app import MAX_BODY_BYTES
from ticketing_service.service_layer.dependencies import Dependencies

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

RUN_WEBHOOK = (
    "import sys; from ticketing_service.entrypoints.webhook.serve import run_webhook; "
    "sys.exit(run_webhook(None))"
)


@pytest.fixture
async def orphan_shim() -> AsyncIterator[httpx.AsyncClient]:
    """A shim whose gRPC backend is down."""
    with refused_port() as port:
        async with running_shim(shim_config(f"127.0.0.1:{port}")) as client:
            yield client


# Building and signing callbacks


@pytest.fixture
async def reservation(stub: Stub) -> reservation_pb2.Reservation:
    """A reservation pending payment, with its checkout opened at the payment service fake."""
    return await hold_for_payment(stub)


# Confirmed, once


def stored_payment(database_url: str) -> tuple[object, ...]:
    """The one paid payment: its provider ids, raw event and the delivery that confirmed it."""
    rows = sql(
        database_url,
        "SELECT p.provider_payment_id, p.tx_id, p.raw_event, d.delivery_id"
        " FROM payments p JOIN webhook_deliveries d USING (reservation_id)"
        " WHERE p.status = 'paid'",
    )
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("scheme", SIGNERS)
async def test_a_signed_paid_callback_confirms_the_reservation_and_registers_the_user(
    shim: httpx.AsyncClient,
    stub: Stub,
    reservation: reservation_pb2.Reservation,
    database_url: str,
    scheme: str,
) -> None:
    body = encode(paid_event(reservation))
    response = await post(shim, SIGNERS[scheme](body, "delivery-1"))

    assert response.status_code == 200
    answer = response.json()
    assert (answer["ok"], answer["outcome"]) == (True, "CONFIRMED")
    stored = await status_of(stub, reservation.reservation_id)
    assert stored.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
    assert answer["reservationId"] == reservation.reservation_id
    assert answer["registrationId"] == stored.registration_id != ""
    assert stored.paid_time.ToDatetime(UTC) == datetime(2024, 5, 1, 3, 30, tzinfo=UTC)
    assert stored_payment(database_url) == (
        payment_id_of(reservation),
        "tx_1",
        body,
        "delivery-1",
    )


@pytest.mark.parametrize("scheme", SIGNERS)
async def test_the_same_delivery_again_answers_200_and_registers_nobody_twice(
    shim: httpx.AsyncClient,
    reservation: reservation_pb2.Reservation,
    database_url: str,
    scheme: str,
) -> None:
    signed = SIGNERS[scheme](encode(paid_event(reservation)), "delivery-1")
    first = await post(shim, signed)
    again = await post(shim, signed)

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()  # answered from the stored delivery, nothing redone
    assert count_rows(database_url, "registrations") == 1
    assert count_rows(database_url, "payments") == 1


async def test_another_delivery_of_the_same_payment_answers_already_confirmed(
    shim: httpx.AsyncClient, reservation: reservation_pb2.Reservation, database_url: str
) -> None:
    body = encode(paid_event(reservation))
    first = await post(shim, hmac_signed(body, "delivery-1"))
    other = await post(shim, standard_signed(body, "delivery-2"))

    assert first.json()["outcome"] == "CONFIRMED"
    assert (other.status_code, other.json()["outcome"]) == (200, "ALREADY_CONFIRMED")
    assert other.json()["registrationId"] == first.json()["registrationId"]
    assert count_rows(database_url, "registrations") == 1


def connections_to(port: int) -> int:
    """This process's established TCP connections to `port`."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_callbacks_take_each_grpc_channel_in_turn(
    server: RunningServer, reservation: reservation_pb2.Reservation
) -> None:
    # With `serve --workers N` the kernel hands each connection to one worker, so callbacks
    # reach several workers only if they go out over several connections.
    config = replace(shim_config(f"127.0.0.1:{server.port}"), grpc_channels=3)
    before = connections_to(server.port)
    async with running_shim(config) as shim:
        body = encode(paid_event(reservation))
        answers = [await post(shim, hmac_signed(body, f"delivery-{i}")) for i in range(3)]
        opened = connections_to(server.port) - before

    assert [a.json()["outcome"] for a in answers] == ["CONFIRMED"] + ["ALREADY_CONFIRMED"] * 2
    assert opened == 3


# Refused before anything reaches the service


def _tampered(r: reservation_pb2.Reservation) -> Signed:
    signed = hmac_signed(encode(paid_event(r)))
    return replace(signed, body=encode(paid_event(r, amount=1)))


def _truncated(r: reservation_pb2.Reservation) -> Signed:
    signed = standard_signed(encode(paid_event(r)))
    headers = signed.headers | {"webhook-signature": signed.headers["webhook-signature"][:-8]}
    return replace(signed, headers=headers)


def _missing_headers(r: reservation_pb2.Reservation) -> Signed:
    signed = standard_signed(encode(paid_event(r)))
    headers = {k: v for k, v in signed.headers.items() if k != "webhook-timestamp"}
    return replace(signed, headers=headers)


REFUSED: dict[str, tuple[Callable[[reservation_pb2.Reservation], Signed], int, str]] = {
    "tampered body": (_tampered, 401, "bad_signature"),
    "wrong hmac secret": (
        lambda r: hmac_signed(encode(paid_event(r)), secret="guessed"),
        401,
        "bad_signature",
    ),
    "wrong whsec secret": (
        lambda r: standard_signed(encode(paid_event(r)), secret="whsec_" + "QUFBQUFBQUFB"),
        401,
        "bad_signature",
    ),
    "stale timestamp": (
        lambda r: standard_signed(encode(paid_event(r)), skew_seconds=-301 - 5),
        401,
        "stale_timestamp",
    ),
    "future timestamp": (
        lambda r: standard_signed(encode(paid_event(r)), skew_seconds=301 + 5),
        401,
        "future_timestamp",
    ),
    "no signature headers": (
        lambda r: Signed(encode(paid_event(r)), {"Content-Type": "application/json"}),
        401,
        "missing_signature",
    ),
    "missing webhook-timestamp": (_missing_headers, 401, "missing_header"),
    "truncated signature": (_truncated, 401, "bad_signature"),
    "non-JSON body": (lambda r: hmac_signed(b"paid, honestly"), 400, "invalid_payload"),
    "JSON array": (lambda r: hmac_signed(encode([paid_event(r)])), 400, "invalid_payload"),
    "amount as a string": (
        lambda r: hmac_signed(encode(paid_event(r, amount=str(r.amount)))),
        400,
        "invalid_payload",
    ),
    "reservation id as a number": (
        lambda r: hmac_signed(encode(paid_event(r, reservationId=7))),
        400,
        "invalid_payload",
    ),
    "paidAt without an offset": (
        lambda r: hmac_signed(encode(paid_event(r, paidAt="2024-05-01T12:30:00"))),
        400,
        "invalid_payload",
    ),
    "body over 64 KiB": (
        lambda r: hmac_signed(encode(paid_event(r, note="x" * MAX_BODY_BYTES))),
        413,
        "body_too_large",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_a_refused_callback_answers_4xx_and_changes_nothing(
    shim: httpx.AsyncClient,
    stub: Stub,
    reservation: reservation_pb2.Reservation,
    database_url: str,
    case: str,
) -> None:
    build, status, error = REFUSED[case]

    response = await post(shim, build(reservation))

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert (await status_of(stub, reservation.reservation_id)).status == PENDING
    assert count_rows(database_url, "webhook_deliveries") == 0
    assert count_rows(database_url, "payment_mismatches") == 0


# Verified, but refused or ignored by the service


async def test_an_unknown_reservation_answers_404(
    shim: httpx.AsyncClient, reservation: reservation_pb2.Reservation
) -> None:
    event = paid_event(reservation, reservationId=str(uuid.uuid4()))
    response = await post(shim, hmac_signed(encode(event)))
    assert (response.status_code, response.json()["error"]) == (404, "RESERVATION_NOT_FOUND")


async def test_a_reservation_id_that_is_no_uuid_answers_400(
    shim: httpx.AsyncClient, reservation: reservation_pb2.Reservation
) -> None:
    event = paid_event(reservation, reservationId="reservation-1")
    response = await post(shim, hmac_signed(encode(event)))
    assert (response.status_code, response.json()) == (
        400,
        {"ok": False, "error": "invalid_payload", "field": "reservationId"},
    )


async def test_an_amount_mismatch_answers_409_and_leaves_the_reservation_pending(
    shim: httpx.AsyncClient,
    stub: Stub,
    reservation: reservation_pb2.Reservation,
    database_url: str,
) -> None:
    event = paid_event(reservation, amount=reservation.amount - 1)
    response = await post(shim, standard_signed(encode(event)))
    assert (response.status_code, response.json()["error"]) == (409, "PAYMENT_MISMATCH")
    assert (await status_of(stub, reservation.reservation_id)).status == PENDING
    assert count_rows(database_url, "payment_mismatches") == 1


async def test_a_verified_event_of_another_type_is_ignored(
    shim: httpx.AsyncClient, stub: Stub, reservation: reservation_pb2.Reservation
) -> None:
    event = paid_event(reservation, type="ticket_payment.checkout_expired")
    response = await post(shim, hmac_signed(encode(event)))
    assert (response.status_code, response.json()) == (200, {"ok": True, "ignored": True})
    assert (await status_of(stub, reservation.reservation_id)).status == PENDING


# The backend: down, stopping, guarded by a token


def unknown_paid_callback() -> Signed:
    """A signed, well-formed paid callback of a reservation the service does not know."""
    reservation = reservation_pb2.Reservation(
        reservation_id=str(uuid.uuid4()),
        checkout_id="chk_1",
        provider="portone",
        amount=PRICE,
        currency_code="KRW",
    )
    return hmac_signed(encode(paid_event(reservation)))


async def test_a_callback_answers_503_with_retry_after_while_the_backend_is_down(
    orphan_shim: httpx.AsyncClient,
) -> None:
    response = await post(orphan_shim, unknown_paid_callback())
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0


async def test_a_backend_gone_without_a_reset_costs_one_callback_not_every_one_for_minutes(
    deps: Dependencies,
) -> None:
    # A backend replica whose machine died (its connections dropped without a reset) held every
    # callback forwarded on its connection to the call's 10 s deadline, each answered 503, until
    # TCP gave up, about 15 minutes later. The shim now pings the backend while calls are open
    # and drops a connection whose ping goes unanswered; a new one reaches a live replica.
    callback = unknown_paid_callback()
    running = await start_server(deps, "127.0.0.1:0")
    try:
        async with SilentProxy(from_another_host(running.port)).running() as proxy:
            config = shim_config(f"127.0.0.1:{proxy.port}")
            config = replace(config, grpc_channels=1, grpc_keepalive_seconds=1)
            async with running_shim(config) as shim:
                before = (await post(shim, callback)).status_code
                proxy.silence_open_connections()
                after = [await answer(shim, callback)]
                while after[-1][0] != 404 and len(after) < 4:  # each waited 10 s before
                    after.append(await answer(shim, callback))
    finally:
        await running.stop(0)
    assert before == 404  # answered by the backend: the reservation is unknown
    # A callback or two on the dead connection while the shim finds it dead and connects again
    # (none, if a ping of the first call found it first); none waited out its deadline.
    assert after[-1] == (404, "RESERVATION_NOT_FOUND")
    assert set(after[:-1]) <= {(503, "UNAVAILABLE")}


async def answer(shim: httpx.AsyncClient, signed: Signed) -> tuple[int, str]:
    response = await post(shim, signed)
    return response.status_code, response.json()["error"]


async def test_healthz_answers_200_while_the_backend_serves(shim: httpx.AsyncClient) -> None:
    response = await shim.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "SERVING"})


async def test_healthz_answers_503_while_the_backend_is_down(
    orphan_shim: httpx.AsyncClient,
) -> None:
    response = await orphan_shim.get("/healthz")
    assert (response.status_code, response.json()) == (503, {"status": "NOT_SERVING"})


async def test_healthz_answers_503_once_the_backend_starts_shutting_down(
    shim: httpx.AsyncClient, server: RunningServer
) -> None:
    assert (await shim.get("/healthz")).status_code == 200
    await server.health.enter_graceful_shutdown()
    assert (await shim.get("/healthz")).status_code == 503


@pytest.fixture
async def guarded_server(deps: Dependencies) -> AsyncIterator[RunningServer]:
    running = await start_server(deps, "127.0.0.1:0", tokens=["grpc-token"])
    yield running
    await running.stop(0)


@pytest.mark.parametrize(("token", "status"), [("grpc-token", 200), ("stale-token", 503)])
async def test_the_shim_sends_its_token_and_a_wrong_one_is_retried_not_refused(
    guarded_server: RunningServer,
    reservation: reservation_pb2.Reservation,
    token: str,
    status: int,
) -> None:
    config = shim_config(f"127.0.0.1:{guarded_server.port}", token=token)
    async with running_shim(config) as shim:
        response = await post(shim, hmac_signed(encode(paid_event(reservation))))
    assert response.status_code == status


# The command


def shim_environment(**settings: str) -> dict[str, str]:
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TICKETING_", "TICKET_PAYMENT_")) and k != "DATABASE_URL"
    }
    return inherited | settings


def started_shim(
    backend_port: int, settings: Mapping[str, str] | None = None, **popen: Any
) -> subprocess.Popen[Any]:
    """The `webhook` command as from a terminal, on a free port, its server at `backend_port`,
    with `settings` added to its environment."""
    return subprocess.Popen(  # noqa: S603 - our own interpreter and a constant program
        python_from_a_terminal("-c", RUN_WEBHOOK),
        env=shim_environment(
            TICKET_PAYMENT_CALLBACK_SECRET=HMAC_SECRET,
            TICKETING_WEBHOOK_LISTEN="127.0.0.1:0",
            TICKETING_GRPC_TARGET=f"127.0.0.1:{backend_port}",
            **(settings or {}),
        ),
        **popen,
    )


def run_shim_command(timeout: float = 30, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and a constant program
        [sys.executable, "-c", RUN_WEBHOOK],
        env=shim_environment(**settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_shim_refuses_to_start_without_a_secret() -> None:
    finished = run_shim_command(TICKETING_WEBHOOK_LISTEN="127.0.0.1:0")
    assert finished.returncode == 2
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TICKET_PAYMENT_CALLBACK_SECRET" in lines[0]
    assert "TICKETING_STANDARD_WEBHOOK_SECRETS" in lines[0]


@pytest.mark.parametrize("target", ["http://127.0.0.1:50051", "127.0.0.1:99999"])
def test_a_grpc_target_no_callback_could_reach_stops_the_shim_at_start(target: str) -> None:
    # Before: the shim started, and forwarded nothing while its health said NOT_SERVING.
    finished = run_shim_command(
        TICKET_PAYMENT_CALLBACK_SECRET=HMAC_SECRET,
        TICKETING_WEBHOOK_LISTEN="127.0.0.1:0",
        TICKETING_GRPC_TARGET=target,
    )
    assert finished.returncode == 2
    [line] = finished.stderr.strip().splitlines()
    assert line.startswith("ticketing-service: TICKETING_GRPC_TARGET ")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "which cannot be read: No such file or directory."),
        ("not a certificate", "which does not hold a PEM certificate."),
    ],
)
def test_a_backend_ca_that_is_not_a_certificate_stops_the_shim_at_start(
    tmp_path: Path, content: str | None, says: str
) -> None:
    # Before: a traceback, exit 1, while the shim was being set up.
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_text(content)
    finished = run_shim_command(
        TICKET_PAYMENT_CALLBACK_SECRET=HMAC_SECRET,
        TICKETING_WEBHOOK_LISTEN="127.0.0.1:0",
        TICKETING_TLS_CA=str(ca),
    )
    assert finished.returncode == 2
    [line] = finished.stderr.strip().splitlines()
    assert line == f"ticketing-service: TICKETING_TLS_CA names {ca}, {says}"


def test_a_malformed_secret_is_named_but_never_printed() -> None:
    secret = "not-a-whsec-secret-value"
    finished = run_shim_command(TICKETING_STANDARD_WEBHOOK_SECRETS=secret)
    assert finished.returncode == 2
    assert "TICKETING_STANDARD_WEBHOOK_SECRETS" in finished.stderr
    assert secret not in finished.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "hangup"])
def test_the_command_logs_its_real_port_serves_healthz_and_exits_0_on_a_stop_signal(
    sig: signal.Signals,
) -> None:
    # A hangup (its terminal closed) killed it outright before.
    with refused_port() as backend_port:
        process = started_shim(backend_port, stderr=subprocess.PIPE, text=True)
        try:
            port = _listening_port(process)
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
            process.send_signal(sig)
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stderr is not None
            rest = process.stderr.read()
            process.stderr.close()
    assert health.status_code == 503
    assert HMAC_SECRET not in rest


def test_a_connections_own_lines_name_no_request_it_served_before() -> None:
    # uvicorn reads a connection's next request from the task of the request it served (and
    # resumes its reading there), in that request's context: its line about the next,
    # malformed request carried the earlier request's id.
    with refused_port() as backend_port:
        process = started_shim(backend_port, stderr=subprocess.PIPE, text=True)
        try:
            port = _listening_port(process)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                answers = connection.makefile("rb")
                # Pipelined: the next requests wait in uvicorn's buffer while one is served.
                requests = [
                    f"GET /{path} HTTP/1.1\r\nHost: s\r\nwebhook-id: {path}\r\n\r\n".encode()
                    for path in ("first", "second")
                ]
                connection.sendall(b"".join(requests) + b"NOT HTTP AT ALL\r\n\r\n")
                statuses = [_status_of_answer(answers) for _ in range(3)]
        finally:
            process.terminate()
            _, rest = process.communicate(timeout=30)

    assert statuses == [404, 404, 400]
    lines = [json.loads(line) for line in rest.splitlines() if line.startswith("{")]
    answered = [(line["route"], line["request_id"]) for line in lines if "route" in line]
    assert answered == [("/first", "first"), ("/second", "second")]
    [invalid] = [line for line in lines if line["message"] == "Invalid HTTP request received."]
    assert "request_id" not in invalid, invalid


def test_the_password_of_a_url_a_caller_sends_never_reaches_the_shims_log() -> None:
    # A request path is logged as it came (twice: the line, and its `route` field); one that
    # holds a database URL, as a scanner or a misdirected client sends, carried its password.
    path = "/x/postgresql://ticketing:s3cret-in-url@db:5432/ticketing"
    with refused_port() as backend_port:
        process = started_shim(backend_port, stderr=subprocess.PIPE, text=True)
        try:
            port = _listening_port(process)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
                connection.sendall(f"GET {path} HTTP/1.1\r\nHost: s\r\n\r\n".encode())
                assert _status_of_answer(connection.makefile("rb")) == 404
        finally:
            process.terminate()
            _, rest = process.communicate(timeout=30)

    masked = "/x/postgresql://ticketing:[REDACTED]@db:5432/ticketing"
    [line] = [json.loads(line) for line in rest.splitlines() if "postgresql:" in line]
    assert (line["route"], line["message"].split()[1]) == (masked, masked)
    assert "s3cret" not in rest


def _status_of_answer(answers: BinaryIO) -> int:
    """The status of the next answer on a connection, its headers and body read."""
    status = int(answers.readline().split()[1])
    length = 0
    while (line := answers.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    answers.read(length)
    return status


def _listening_port(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # ends when the process exits: never waits forever
        seen.append(line)
        if match := re.search(r"webhook shim listening on 127\.0\.0\.1:(\d+)", line):
            port = int(match.group(1))
            assert port != 0
            return port
    raise AssertionError("the shim exited before listening:\n" + "".join(seen))
