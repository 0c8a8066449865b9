"""`serve` and `webhook` as deployed: mutual TLS, token, health port, metrics, JSON logs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.certificates import CertificateAuthority
from ticketing_service.entrypoints.webhook.signatures import sign_moim_hmac

TOKEN = "production-token-never-logged"
# The token being rotated out: the server accepts both while clients move to the new one.
OLD_TOKEN = "retiring-token-never-logged"
HMAC_SECRET = "callback-secret-never-logged"
UNKNOWN_RESERVATION = "00000000-0000-4000-8000-000000000001"
START_SECONDS = 60
IDLE_SOCKETS = 300
# Each metrics endpoint cuts a connection with no complete request after its read deadline:
# 10 s on the server, the shim's TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS (2 s here) on the shim.
CUT_WITHIN_SECONDS = 20.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
T = TypeVar("T")


class LoggedProcess:
    """A child process whose stderr lines a thread collects, to wait on without polling."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "ticketing_service", *args],
            env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def port_after(self, text: str) -> int:
        """The port of the first line saying `<text> <host>:<port>`; fails if the process ends."""
        pattern = re.compile(re.escape(text) + r" [\w.\[\]:]*:(\d+)")
        found = self._first(lambda: [m for line in self.lines if (m := pattern.search(line))], text)
        return int(found.group(1))

    def record(self, match: Callable[[dict[str, object]], bool]) -> dict[str, object]:
        """The first JSON record `match` accepts, once it is logged; fails if the process ends."""
        return self._first(lambda: [r for r in self.records() if match(r)], "matching record")

    def _first(self, find: Callable[[], list[T]], what: str) -> T:
        with self._changed:
            while not (found := find()):
                alive = self._reader.is_alive()
                if not alive or not self._changed.wait(timeout=START_SECONDS):
                    raise AssertionError(f"no {what} line:\n" + "".join(self.lines))
        return found[0]

    def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=START_SECONDS)
        self._reader.join(timeout=START_SECONDS)
        return code

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]


@dataclass(frozen=True)
class Pki:
    server: tuple[Path, Path]
    shim: tuple[Path, Path]
    ca: Path
    client_ca: Path

    def credentials(self, with_client_certificate: bool) -> grpc.ChannelCredentials:
        cert, key = self.shim
        if not with_client_certificate:
            return grpc.ssl_channel_credentials(self.ca.read_bytes())
        return grpc.ssl_channel_credentials(
            self.ca.read_bytes(), key.read_bytes(), cert.read_bytes()
        )


@dataclass(frozen=True)
class Server:
    process: LoggedProcess
    target: str
    health_port: int
    metrics_port: int


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, clients = CertificateAuthority("server-ca"), CertificateAuthority("client-ca")
    (directory / "ca.crt").write_bytes(ca.pem)
    (directory / "client-ca.crt").write_bytes(clients.pem)
    return Pki(
        server=ca.issue("ticketing-server", server=True).write(directory, "server"),
        shim=clients.issue("webhook-shim", server=False).write(directory, "shim"),
        ca=directory / "ca.crt",
        client_ca=directory / "client-ca.crt",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Server]:
    env = {
        "TICKETING_DATA_DIR": str(tmp_path_factory.mktemp("pgdata")),
        "TICKETING_GRPC_TOKEN": f"{TOKEN},{OLD_TOKEN}",
        "TICKET_PAYMENT_SERVICE_URL": "http://127.0.0.1:9",
        "TICKET_PAYMENT_SERVICE_TOKEN": "payment-token",
        "TICKETING_TLS_CERT": str(pki.server[0]),
        "TICKETING_TLS_KEY": str(pki.server[1]),
        "TICKETING_TLS_CLIENT_CA": str(pki.client_ca),
        "TICKETING_METRICS_LISTEN": "127.0.0.1:0",
        "TICKETING_HEALTH_LISTEN": "127.0.0.1:0",
    }
    process = LoggedProcess(["serve", "--listen", "127.0.0.1:0"], env)
    try:
        yield Server(
            process,
            f"127.0.0.1:{process.port_after('TicketingService on')}",
            process.port_after("health probes on"),
            process.port_after("metrics on"),
        )
    finally:
        process.stop()


@pytest.fixture(scope="module")
def shim(server: Server, pki: Pki) -> Iterator[tuple[LoggedProcess, int, int]]:
    env = {
        "TICKETING_GRPC_TARGET": server.target,
        # The same value as the server's: the shim sends the first token.
        "TICKETING_GRPC_TOKEN": f"{TOKEN},{OLD_TOKEN}",
        "TICKET_PAYMENT_CALLBACK_SECRET": HMAC_SECRET,
        "TICKETING_TLS_CA": str(pki.ca),
        "TICKETING_TLS_CLIENT_CERT": str(pki.shim[0]),
        "TICKETING_TLS_CLIENT_KEY": str(pki.shim[1]),
        "TICKETING_METRICS_LISTEN": "127.0.0.1:0",
        "TICKETING_WEBHOOK_READ_TIMEOUT_SECONDS": "2",
    }
    process = LoggedProcess(["webhook", "--listen", "127.0.0.1:0"], env)
    try:
        yield process, process.port_after("listening on"), process.port_after("metrics on")
    finally:
        process.stop()


def get_settings(
    server: Server,
    credentials: grpc.ChannelCredentials,
    token: str = TOKEN,
    request_id: str = "req-e2e",
) -> grpc.StatusCode:
    metadata = (("authorization", f"Bearer {token}"), ("x-request-id", request_id))
    request = pb.GetTicketingSettingsRequest(event_id="nope")
    with grpc.secure_channel(server.target, credentials) as channel:
        stub = pb_grpc.TicketingServiceStub(channel)
        try:
            stub.GetTicketingSettings(request, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def callback(shim_port: int, signature_secret: str) -> httpx.Response:
    body = json.dumps(
        {
            "type": "ticket_payment.paid",
            "reservationId": UNKNOWN_RESERVATION,
            "checkoutId": "chk",
            "paymentId": "pay",
            "provider": "portone",
            "amount": 100,
            "currency": "KRW",
            "paidAt": "2030-01-01T00:00:00Z",
        }
    ).encode()
    signature = sign_moim_hmac(signature_secret, body)
    headers = {"X-Ticket-Payment-Signature": signature, "X-Ticket-Payment-Event-Id": "d-1"}
    url = f"http://127.0.0.1:{shim_port}/api/ticket-payment-callbacks"
    return httpx.post(url, content=body, headers=headers, timeout=10)


def test_a_client_with_a_certificate_and_the_token_is_served_logged_and_counted(
    server: Server, pki: Pki
) -> None:
    assert get_settings(server, pki.credentials(True)) == grpc.StatusCode.NOT_FOUND
    # An aborted call's status can reach the client before the server logs and counts it.
    server.process.record(lambda r: r.get("request_id") == "req-e2e")
    handled = {
        ("service", "moim.ticketing.v1.TicketingService"),
        ("method", "GetTicketingSettings"),
        ("code", "NOT_FOUND"),
    }
    assert scrape(server.metrics_port)["ticketing_rpc_handled_total", frozenset(handled)] == 1
    [line] = [r for r in server.process.records() if r.get("request_id") == "req-e2e"]
    assert (line["rpc"], line["grpc_code"], line["reason"]) == (
        "GetTicketingSettings",
        "NOT_FOUND",
        "EVENT_NOT_FOUND",
    )


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (OLD_TOKEN, grpc.StatusCode.NOT_FOUND),
        (f"{TOKEN},{OLD_TOKEN}", grpc.StatusCode.UNAUTHENTICATED),
        ("", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_every_token_of_the_list_is_accepted_and_nothing_else(
    server: Server, pki: Pki, token: str, code: grpc.StatusCode
) -> None:
    assert get_settings(server, pki.credentials(True), token, "req-rotation") == code


def test_a_client_without_a_certificate_is_refused(server: Server, pki: Pki) -> None:
    assert get_settings(server, pki.credentials(False)) == grpc.StatusCode.UNAVAILABLE


def test_probes_get_answers_on_the_plaintext_health_port(server: Server) -> None:
    request = health_pb2.HealthCheckRequest(service="moim.ticketing.v1.TicketingService")
    with grpc.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(request, timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_the_database_pool_is_reported(server: Server) -> None:
    assert ("ticketing_db_pool_size", frozenset()) in scrape(server.metrics_port)


def test_lock_timeouts_have_a_series_per_method_before_the_first(server: Server) -> None:
    # Without it, increase() over the first lock timeout after a start saw nothing.
    samples = scrape(server.metrics_port)
    for method in ("StartPaidRegistration", "ConfirmPayment"):
        assert ("ticketing_lock_timeouts_total", frozenset({("method", method)})) in samples


def test_the_shim_forwards_over_mutual_tls_and_counts_forged_signatures(
    shim: tuple[LoggedProcess, int, int],
) -> None:
    _, port, metrics_port = shim
    forwarded, forged = callback(port, HMAC_SECRET), callback(port, "forged")
    assert (forwarded.status_code, forwarded.json()["error"]) == (404, "RESERVATION_NOT_FOUND")
    assert forged.status_code == 401
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    failure = (
        "ticketing_webhook_verification_failures_total",
        frozenset({("reason", "bad_signature")}),
    )
    samples = scrape(metrics_port)
    assert samples[failure] == 1
    # Exported at zero from the start, so the first of its kind shows in increase() too.
    stale = (
        "ticketing_webhook_verification_failures_total",
        frozenset({("reason", "stale_timestamp")}),
    )
    assert samples[stale] == 0


def test_the_servers_line_for_a_callback_carries_the_delivery_id_as_the_shims_does(
    server: Server, shim: tuple[LoggedProcess, int, int]
) -> None:
    # docs/operations.md follows one callback across both by grepping for this id.
    process, port, _ = shim
    assert callback(port, HMAC_SECRET).status_code == 404
    # An aborted call's status can reach the shim before the server logs it.
    served = server.process.record(
        lambda r: r.get("logger") == "ticketing_service.rpc" and r.get("request_id") == "d-1"
    )
    assert (served["rpc"], served["grpc_code"], served["reason"]) == (
        "ConfirmPayment",
        "NOT_FOUND",
        "RESERVATION_NOT_FOUND",
    )
    process.record(
        lambda r: r.get("logger") == "ticketing_service.webhook" and r.get("request_id") == "d-1"
    )


def threads_of(process: LoggedProcess) -> int:
    return len(os.listdir(f"/proc/{process.process.pid}/task"))


def closed_by_server(sockets: list[socket.socket], within: float) -> int:
    """How many of `sockets` the other side closes within `within` seconds in all."""
    deadline, closed = time.monotonic() + within, 0
    for sock in sockets:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            closed += sock.recv(1) == b""  # b"": closed; the server never writes to them
        except TimeoutError:
            pass
        except ConnectionError:
            closed += 1  # a reset is a cut too
    return closed


def test_idle_sockets_on_the_metrics_ports_take_no_thread_and_are_cut(
    server: Server, shim: tuple[LoggedProcess, int, int]
) -> None:
    ports = {server.process: server.metrics_port, shim[0]: shim[2]}
    threads_before = {process: threads_of(process) for process in ports}
    idle = [
        socket.create_connection(("127.0.0.1", port), timeout=START_SECONDS)
        for port in ports.values()
        for _ in range(IDLE_SOCKETS)
    ]
    try:
        # Accepted in order: once a scrape is answered, every idle socket before it was too.
        assert all(scrape(port) for port in ports.values())
        threads_gained = [threads_of(p) - threads_before[p] for p in ports]
        cut = closed_by_server(idle, within=CUT_WITHIN_SECONDS)
    finally:
        for s in idle:
            s.close()
    assert max(threads_gained) < IDLE_SOCKETS // 10  # the standard library's server: +300 each
    assert cut == len(idle)


def test_the_metrics_ports_answer_get_and_head_and_refuse_other_methods(
    server: Server, shim: tuple[LoggedProcess, int, int]
) -> None:
    for port in (server.metrics_port, shim[2]):
        url = f"http://127.0.0.1:{port}/metrics"
        assert httpx.head(url, timeout=10).status_code == 200
        refused = httpx.post(url, content=b"x", timeout=10)
        assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")


def test_both_stop_cleanly_and_no_secret_reached_their_logs(
    server: Server, shim: tuple[LoggedProcess, int, int]
) -> None:
    process = shim[0]
    callback(shim[1], HMAC_SECRET)
    assert (process.stop(), server.process.stop()) == (0, 0)
    [delivery] = [
        r
        for r in process.records()
        if r.get("logger") == "ticketing_service.webhook" and r.get("http_status") == 404
    ][-1:]
    assert (delivery["request_id"], delivery["reservation_id"]) == ("d-1", UNKNOWN_RESERVATION)
    logged = "".join(server.process.lines + process.lines)
    assert TOKEN not in logged
    assert OLD_TOKEN not in logged
    assert HMAC_SECRET not in logged
