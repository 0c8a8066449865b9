"""`ticketing-service dev` as a newcomer runs it: a paid registration paid on the sandbox page."""

from __future__ import annotations

import html
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import grpc
import httpx
from moim.ticketing.v1 import reservation_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

# Each field of DevStack, as the banner prints it on stdout once every part of the stack listens.
BANNER = {
    "grpc_target": re.compile(r"^\s*gRPC server\s+([\d.]+:\d+)\s"),
    "webhook_url": re.compile(r"^\s*webhook shim\s+(http://\S+)"),
    "sandbox_url": re.compile(r"^\s*payment sandbox\s+(http://\S+)"),
    "payment_token": re.compile(r"Authorization: Bearer (\S+)'"),
    "reconcile_after": re.compile(r"^(\S+) s after the hold was made"),
    "reconcile_settings": re.compile(r"^\s*(TICKET_PAYMENT_SERVICE_URL=\S+ \S+) \\$"),
    "reconcile_database": re.compile(r"^\s*(TICKETING_DATA_DIR=\S+) \\$"),
}
# Embedded Postgres (initdb, start) and the migrations take seconds; a minute means a fault.
START_TIMEOUT_SECONDS = 60
# Ctrl-C stops the servers (a few seconds of grace) and then Postgres.
STOP_TIMEOUT_SECONDS = 30
HTTP_TIMEOUT_SECONDS = 15
# The dev stack asks about a hold 10 s old, every 2 s; far more only on a broken run.
RECONCILED_WITHIN_SECONDS = 60
EVENT_ID = "launch-party"


@dataclass(frozen=True, slots=True)
class DevStack:
    """A running `ticketing-service dev`, with the addresses its banner printed."""

    process: subprocess.Popen[str]
    grpc_target: str
    webhook_url: str
    sandbox_url: str
    payment_token: str
    reconcile_after: str  # the seconds after which the banner says a lost callback is asked about
    reconcile_settings: str  # the settings the banner's `reconcile` command is run with
    reconcile_database: str  # and where it finds dev's data


@contextmanager
def dev_stack(data_dir: Path, log_path: Path, **settings: str) -> Iterator[DevStack]:
    """Run the real command until it prints its banner; stop it afterwards if still running.

    `settings` are environment variables for it, over the dev stack's own defaults.
    """
    environment = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "TICKETING_GRPC_TOKEN"}
    }
    environment |= settings | {"TICKETING_DATA_DIR": str(data_dir)}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ticketing_service",
                "dev",
                "--grpc-listen",
                "127.0.0.1:0",
                "--webhook-listen",
                "127.0.0.1:0",
                "--sandbox-listen",
                "127.0.0.1:0",
            ],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=log,  # a file, so the logs can never fill a pipe and block the stack
            text=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process, lines), daemon=True)
        reader.start()
        try:
            yield _read_banner(process, lines, log_path)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise
            reader.join(timeout=STOP_TIMEOUT_SECONDS)
            assert process.stdout is not None
            process.stdout.close()


def _pump(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    """Read stdout to its end (the process's exit), so the read below can be bounded."""
    assert process.stdout is not None
    for line in process.stdout:
        lines.put(line)
    lines.put(None)


def _read_banner(
    process: subprocess.Popen[str], lines: queue.Queue[str | None], log_path: Path
) -> DevStack:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    found: dict[str, str] = {}
    while len(found) < len(BANNER):
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"no banner within {START_TIMEOUT_SECONDS} s; the log:\n{log_path.read_text()}"
            ) from None
        if line is None:
            raise AssertionError(
                f"the dev stack exited ({process.wait()}) before its banner; the log:\n"
                + log_path.read_text()
            )
        for part, pattern in BANNER.items():
            if part not in found and (match := pattern.search(line)):
                found[part] = match.group(1)
    return DevStack(process, **found)


def start_paid_registration(
    stub: pb_grpc.TicketingServiceStub, user_id: str
) -> reservation_pb2.Reservation:
    """Settings with one paid tier, then a seat hold for the user: the first two steps."""
    stub.UpdateTicketingSettings(
        pb.UpdateTicketingSettingsRequest(
            event_id=EVENT_ID,
            event_title="Launch party",
            tiers=[
                settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=30000, capacity=50)
            ],
        )
    )
    started = stub.StartPaidRegistration(
        pb.StartPaidRegistrationRequest(event_id=EVENT_ID, tier_id="vip", user_id=user_id)
    )
    assert started.requires_payment
    assert started.reservation.status == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    return started.reservation


def checkout_page(http: httpx.Client, checkout_url: str) -> str:
    page = http.get(checkout_url)
    assert page.status_code == 200, page.text
    return page.text


def test_a_payment_on_the_sandbox_page_confirms_the_registration_and_ctrl_c_stops_all(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "pgdata"
    with (
        dev_stack(data_dir, tmp_path / "dev.log") as stack,
        grpc.insecure_channel(stack.grpc_target) as channel,
        httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http,
    ):
        stub = pb_grpc.TicketingServiceStub(channel)
        held = start_paid_registration(stub, "user-1")
        page = checkout_page(http, held.checkout_url)
        action = re.search(r"<form method=post action='([^']+)'>", page)
        assert action is not None, page
        paid = http.post(urljoin(held.checkout_url, html.unescape(action.group(1))))
        confirmed = stub.GetReservation(
            pb.GetReservationRequest(reservation_id=held.reservation_id)
        ).reservation
        stack.process.send_signal(signal.SIGINT)
        exit_code = stack.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    assert held.checkout_url.startswith(f"{stack.sandbox_url}/checkout/")
    assert "id=pay" in page
    assert action.group(1) == f"/checkout/{held.checkout_id}/pay"
    assert paid.status_code == 303, (tmp_path / "dev.log").read_text()
    assert paid.headers["location"] == (
        f"{stack.sandbox_url}/events/{EVENT_ID}/register?payment=success"
    )
    assert confirmed.status == reservation_pb2.RESERVATION_STATUS_CONFIRMED
    assert confirmed.registration_id
    assert stack.reconcile_after == "10"  # the dev stack's own default
    assert exit_code == 0
    assert data_dir.is_dir(), "the data directory is kept for the next start"
    assert not (data_dir / "postmaster.pid").exists(), "the embedded Postgres is still running"
    # Each gRPC call has its line, as under `serve` (dev logged none); the callback's
    # confirmation under the id of the shim's line for it: one id follows a payment through both.
    records = [json.loads(line) for line in (tmp_path / "dev.log").read_text().splitlines()]
    calls = {r["rpc"]: r for r in records if r["logger"] == "ticketing_service.rpc"}
    [callback] = [r for r in records if r["logger"] == "ticketing_service.webhook"]
    assert calls["StartPaidRegistration"]["reservation_id"] == held.reservation_id
    assert calls["ConfirmPayment"]["grpc_code"] == "OK"
    assert calls["ConfirmPayment"]["request_id"] == callback["request_id"]


def test_a_payment_whose_callback_is_lost_is_confirmed_by_asking_and_a_cancel_leaves_a_hold(
    tmp_path: Path,
) -> None:
    with (
        # The dev stack asks after 10 s unless told otherwise, as here (the banner says it).
        dev_stack(
            tmp_path / "pgdata", tmp_path / "dev.log", TICKETING_RECONCILE_AFTER_SECONDS="4"
        ) as stack,
        grpc.insecure_channel(stack.grpc_target) as channel,
        httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http,
    ):
        stub = pb_grpc.TicketingServiceStub(channel)
        dropped = start_paid_registration(stub, "user-1")
        landed = submit(http, dropped.checkout_url, "cancel")
        paid_silently = start_paid_registration(stub, "user-2")
        returned = submit(http, paid_silently.checkout_url, "pay-silently")
        before = status_of(stub, paid_silently.reservation_id)
        # The dev stack asks about a hold some seconds old; the paid one is then confirmed.
        confirmed = wait_for_status(
            stub, paid_silently.reservation_id, reservation_pb2.RESERVATION_STATUS_CONFIRMED
        )
        still_held = status_of(stub, dropped.reservation_id)
        sandbox_says = {
            held.checkout_id: read_checkout(http, stack, held.checkout_id)
            for held in (dropped, paid_silently)
        }

    # No cancel_url was given, so the service sent MOIM_PUBLIC_BASE_URL's (the sandbox's).
    assert landed.url == f"{stack.sandbox_url}/events/{EVENT_ID}/register?payment=cancel"
    assert "payment <b>cancel</b>" in landed.text
    # What Moim does there, as the integration guide says (it read "GetReservation", and a
    # newcomer following it left the seat held until the hold's end).
    assert "<code>CancelReservation</code> to release the seat" in landed.text
    assert returned.url == f"{stack.sandbox_url}/events/{EVENT_ID}/register?payment=success"
    # No callback came: the hold waited until the service asked the sandbox, then confirmed it.
    assert stack.reconcile_after == "4"
    assert before == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    assert confirmed.registration_id
    # A cancel on the payment page is the payer's business: the hold stays until it ends.
    assert still_held == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    assert sandbox_says[dropped.checkout_id]["status"] == "cancelled"
    paid = sandbox_says[paid_silently.checkout_id]
    assert (paid["status"], paid["reservationId"], paid["amount"]) == (
        "paid",
        paid_silently.reservation_id,
        30000,
    )
    assert paid["paymentId"]


def test_the_banner_s_reconcile_command_confirms_a_payment_whose_callback_was_lost(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "pgdata"
    # The stack itself would ask only after an hour: the command is what confirms it here.
    with (
        dev_stack(
            data_dir, tmp_path / "dev.log", TICKETING_RECONCILE_AFTER_SECONDS="3600"
        ) as stack,
        grpc.insecure_channel(stack.grpc_target) as channel,
        httpx.Client(timeout=HTTP_TIMEOUT_SECONDS) as http,
    ):
        stub = pb_grpc.TicketingServiceStub(channel)
        held = start_paid_registration(stub, "user-1")
        submit(http, held.checkout_url, "pay-silently")
        before = status_of(stub, held.reservation_id)
        # As printed, from another directory.
        printed = f"{stack.reconcile_settings} {stack.reconcile_database}"
        settings = dict(pair.split("=", 1) for pair in printed.split())
        command = [sys.executable, "-m", "ticketing_service", "reconcile", "--since", "2h"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("TICKET")}
        reconciled = subprocess.run(  # noqa: S603 - our own interpreter and arguments
            command,
            env=environment | settings,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
            check=False,
        )
        after = status_of(stub, held.reservation_id)

    assert reconciled.returncode == 0, reconciled.stderr
    assert before == reservation_pb2.RESERVATION_STATUS_PENDING_PAYMENT
    assert after == reservation_pb2.RESERVATION_STATUS_CONFIRMED


def status_of(stub: pb_grpc.TicketingServiceStub, reservation_id: str) -> int:
    request = pb.GetReservationRequest(reservation_id=reservation_id)
    return int(stub.GetReservation(request).reservation.status)


def wait_for_status(
    stub: pb_grpc.TicketingServiceStub, reservation_id: str, status: int
) -> reservation_pb2.Reservation:
    """The reservation once it has `status` (polled, up to a bound only a broken run reaches)."""
    deadline = time.monotonic() + RECONCILED_WITHIN_SECONDS
    request = pb.GetReservationRequest(reservation_id=reservation_id)
    while time.monotonic() < deadline:
        reservation = stub.GetReservation(request).reservation
        if reservation.status == status:
            return reservation
        time.sleep(0.2)
    raise AssertionError(f"{reservation_id} did not reach status {status} in time")


def submit(http: httpx.Client, checkout_url: str, button: str) -> httpx.Response:
    """Submit the checkout page's form whose button has this id; follow where it leads."""
    page = checkout_page(http, checkout_url)
    form = re.search(
        rf"<form method=post action='([^']+)'[^>]*><button type=submit id={button}", page
    )
    assert form is not None, page
    answer = http.post(urljoin(checkout_url, html.unescape(form.group(1))), follow_redirects=True)
    assert answer.status_code == 200, answer.text
    return answer


def read_checkout(http: httpx.Client, stack: DevStack, checkout_id: str) -> dict[str, object]:
    """GET the checkout from the sandbox as the service would, with the banner's token."""
    answer = http.get(
        f"{stack.sandbox_url}/v1/ticket-checkouts/{checkout_id}",
        headers={"Authorization": f"Bearer {stack.payment_token}"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert isinstance(body, dict)
    return body
