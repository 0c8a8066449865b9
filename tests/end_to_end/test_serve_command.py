"""`ticketing-service serve` as a user runs it: embedded Postgres, health, reflection, restart."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from moim.ticketing.client import TicketingError
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.end_to_end.serving import (
    REFUSED_PAYMENT_SERVICE,
    START_TIMEOUT_SECONDS,
    our_line,
    run_command,
    serve_process,
    wait_for_line,
    wait_until,
)
from tests.rich_errors import rich_error
from tests.stalled_calls import first_ended, never_sent
from tests.tcp_proxy import SilentProxy, from_another_host
from tests.terminal import python_from_a_terminal
from ticketing_service.__main__ import STOPPED
from ticketing_service.adapters.db.schema_revision import SCHEMA_REVISION
from ticketing_service.entrypoints.grpc.server import SERVICE_NAME

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub

CallT = TypeVar("CallT")
SERVING_LINE = re.compile(r"serving moim\.ticketing\.v1\.TicketingService on [\d.]+:(\d+)")


@contextmanager
def serve(data_dir: Path, **env: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Run the real command until it logs its port; stop it with SIGTERM afterwards."""
    with serve_process(data_dir, **env) as process:
        yield int(wait_for_line(process, SERVING_LINE).group(1)), process


def stop_postgres_left_running(postmaster: Path) -> bool:
    """Whether a Postgres still runs with the pid file `postmaster`; stopped if so (a fast
    shutdown), so that a failed test leaves none running."""
    left_running = postmaster.exists()
    if left_running:
        os.kill(int(postmaster.read_text().split()[0]), signal.SIGINT)
    return left_running


def paid_settings_request() -> pb.UpdateTicketingSettingsRequest:
    return pb.UpdateTicketingSettingsRequest(
        event_id="launch-party",
        event_title="Launch party",
        tiers=[settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=30000, capacity=50)],
    )


def test_settings_survive_a_restart_of_the_server_and_its_embedded_postgres(
    tmp_path: Path,
) -> None:
    with serve(tmp_path / "pgdata") as (port, _), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        saved = pb_grpc.TicketingServiceStub(ch).UpdateTicketingSettings(paid_settings_request())
    with serve(tmp_path / "pgdata") as (port, _), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        read = pb_grpc.TicketingServiceStub(ch).GetTicketingSettings(
            pb.GetTicketingSettingsRequest(event_id="launch-party")
        )
    assert read.settings == saved.settings
    assert read.settings.mode == settings_pb2.TICKETING_MODE_PAID


def test_health_is_serving_reflection_lists_the_service_and_sigterm_exits_cleanly(
    tmp_path: Path,
) -> None:
    with serve(tmp_path / "pgdata") as (port, process):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="moim.ticketing.v1.TicketingService")
            )
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            services = {s.name for a in answers for s in a.list_services_response.service}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=START_TIMEOUT_SECONDS) == 0
        assert process.stderr is not None
        logged = process.stderr.read().splitlines()
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "moim.ticketing.v1.TicketingService" in services
    # Every line to its stop is JSON: stopping the embedded Postgres (a fork) made gRPC print
    # "... skipping fork() handlers" before its fork handlers were turned off.
    assert logged
    assert [line for line in logged if not line.startswith("{")] == []
    assert all(json.loads(line) for line in logged)


def test_a_bad_setting_fails_at_start_with_one_line_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ticketing_service", "serve"],
        env={**os.environ, "TICKETING_HOLD_SECONDS": "soon", "TICKETING_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ticketing-service: TICKETING_HOLD_SECONDS must be a number from 1 to 31622400, got 'soon'."
    ]


def run_serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`serve` that is expected to refuse to start: its exit code and output."""
    return run_command(tmp_path, "serve", *args, **env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TICKETING_DB_POOL_SIZE", "0.5"),
        ("TICKETING_DB_LOCK_TIMEOUT_MS", "0.5"),
        ("TICKETING_DB_STATEMENT_TIMEOUT_MS", "-100"),
        ("TICKETING_WORKERS", "1.5"),
        ("TICKETING_GRPC_MAX_CONCURRENT_RPCS", "0"),
        ("TICKETING_MAX_WATCHERS", "1e3"),
    ],
)
def test_a_fraction_or_negative_where_a_whole_number_is_expected_fails_naming_it(
    tmp_path: Path, name: str, value: str
) -> None:
    result = run_serve(tmp_path, **{name: value})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert re.match(rf"ticketing-service: {name} must be a whole number from \d+ to ", line)
    assert line.endswith(f", got {value!r}.")


@pytest.mark.parametrize(
    ("command", "name", "position"),
    [
        ("serve", "TICKET_PAYMENT_SERVICE_TOKEN", 12),  # one token: the comma is part of it
        ("serve", "TICKETING_GRPC_TOKEN", 2),
        ("webhook", "TICKETING_GRPC_TOKEN", 2),
    ],
)
def test_a_token_no_header_can_carry_fails_at_start_showing_none_of_it(
    tmp_path: Path, command: str, name: str, position: int
) -> None:
    # Taken before: then every checkout answered INTERNAL (UnicodeEncodeError), every call with
    # the token was refused, and the shim could forward no callback ("Invalid metadata").
    result = run_command(tmp_path, command, **{name: "old-token,n\u00e9w-t\u200boken"})
    assert result.returncode == 2
    assert our_line(result) == (
        f"ticketing-service: {name} may hold only visible ASCII characters, no spaces (it is "
        f"sent in a request header); a token has another at position {position}."
    )


@pytest.mark.parametrize("url", ["http://[::1:8090", "http://", "http://127.0.0.1:8090/?v=1"])
def test_a_payment_service_url_no_request_can_reach_fails_at_start(
    tmp_path: Path, url: str
) -> None:
    # Before: the first crashed with a traceback once Postgres was up and migrated; the second
    # was served, and every checkout answered UNAVAILABLE for good. With the third every call
    # went to `/`, its path swallowed by the query.
    result = run_serve(tmp_path, TICKET_PAYMENT_SERVICE_URL=url)
    assert result.returncode == 2
    assert our_line(result).startswith(
        "ticketing-service: TICKET_PAYMENT_SERVICE_URL must be an http:// or https:// URL "
        "with a host"
    )
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres


@pytest.mark.parametrize(
    ("name", "bounds"),
    [
        ("TICKETING_HOLD_SECONDS", "a number from 1 to"),
        ("TICKET_PAYMENT_TIMEOUT_SECONDS", "a number from 0.5 to"),
    ],
)
def test_a_duration_too_long_to_keep_fails_at_start_naming_it(
    tmp_path: Path, name: str, bounds: str
) -> None:
    result = run_serve(tmp_path, **{name: "1e300"})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == f"ticketing-service: {name} must be {bounds} 31622400, got '1e300'."


@pytest.mark.parametrize(
    ("name", "floor"),
    [
        ("TICKETING_SWEEP_INTERVAL_SECONDS", "0.1"),
        ("TICKET_PAYMENT_TIMEOUT_SECONDS", "0.5"),
        ("TICKETING_REFUND_BACKOFF_SECONDS", "1"),
    ],
)
def test_a_duration_too_short_to_work_fails_at_start_naming_it(
    tmp_path: Path, name: str, floor: str
) -> None:
    # 1e-9 was taken: an idle server spent its core on empty sweeps, every call to the payment
    # service timed out, a failing refund used up its attempts within a few sweeps.
    result = run_serve(tmp_path, **{name: "1e-9"})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert (
        line == f"ticketing-service: {name} must be a number from {floor} to 31622400, got '1e-9'."
    )
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres


@pytest.mark.parametrize("name", ["TICKET_PAYMENT_SERVICE_URL", "TICKET_PAYMENT_SERVICE_TOKEN"])
@pytest.mark.parametrize("command", ["serve", "reconcile"])
def test_a_command_that_calls_the_payment_service_without_its_url_or_token_says_so(
    tmp_path: Path, command: str, name: str
) -> None:
    # An empty token went out as `Authorization: Bearer `, which the HTTP client refuses to
    # send: every checkout answered PAYMENT_SERVICE_UNAVAILABLE, logged as a protocol error.
    result = run_command(tmp_path, command, **{name: None})
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ticketing-service: {name} is not set")
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres


def test_a_replica_that_does_not_migrate_starts_before_its_database_can_be_reached(
    tmp_path: Path,
) -> None:
    # The schema cannot be checked yet; the replica serves (NOT_SERVING until its background
    # work reaches the database) rather than exit, as it would once running.
    unreachable = "postgresql://ticketing:secret@127.0.0.1:9/ticketing"
    with serve_process(tmp_path, "--no-migrate", DATABASE_URL=unreachable) as process:
        warned = wait_for_line(process, re.compile(r"could not check the database's schema"))
        assert "cannot be reached" in warned.string
        port = int(wait_for_line(process, SERVING_LINE).group(1))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            ticketing = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            watch = health.Watch(ticketing, timeout=30)
            statuses = (answer.status for answer in watch)
            assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses  # not ready
            watch.cancel()
            # Alive: liveness asks for the server as a whole, and a restart would mend nothing.
            alive = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert alive.status == health_pb2.HealthCheckResponse.SERVING
    assert process.returncode == 0


@pytest.fixture(scope="module")
def shared_pgdata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the tests that use it: each `serve` reuses it, not running initdb."""
    return tmp_path_factory.mktemp("pgdata")


NOT_THE_MESSAGE = [
    b"\xff\xff\xff\xff",  # not a valid field key and value
    b"\x0a\x05ab",  # a string field 5 bytes long with 2 sent
    b"\x0a\x02\xc3\x28",  # event_id that is not UTF-8
]


async def test_bytes_that_are_not_the_request_message_are_invalid_argument(
    shared_pgdata: Path,
) -> None:
    with serve_process(shared_pgdata) as process:
        port = int(wait_for_line(process, SERVING_LINE).group(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
            raw = channel.unary_unary(GET_SETTINGS, request_serializer=bytes)
            for payload in NOT_THE_MESSAGE:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await raw(payload, timeout=10)
                error = rich_error(caught.value)  # UNKNOWN, without details, before
                assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["request"])
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        logged = process.stderr.read()
    # Each call has its line, and nothing logged a traceback.
    assert logged.count("GetTicketingSettings INVALID_ARGUMENT") == len(NOT_THE_MESSAGE)
    assert "Traceback" not in logged
    assert "DecodeError" not in logged


def test_a_span_further_back_than_the_database_can_count_is_a_usage_error(tmp_path: Path) -> None:
    result = run_command(tmp_path, "reconcile", "--since", "9999999d")  # 27,000 years
    assert result.returncode == 2
    assert "argument --since: must be a duration such as 30m, 2h or 7d, up to 99999d" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://moim:hunter2@db/moim", "it starts with neither"),
        (
            "postgresql://moim:hunter2@db:99999/moim",
            "a port in it is not a number up to 65535 (or its password holds one of # / ? @"
            " unencoded: percent-encode it, e.g. # as %23)",
        ),
    ],
)
def test_a_source_database_url_asyncpg_would_not_take_is_one_line_saying_what_it_expected(
    tmp_path: Path, url: str, problem: str
) -> None:
    # It said "the postgresql:// URL of Moim's database; it starts with neither", naming one
    # scheme, after argparse's usage lines.
    result = run_command(tmp_path, "import-moim", "--source-database-url", url)
    assert result.returncode == 2
    assert our_line(result) == (
        "ticketing-service: --source-database-url must be a postgresql:// or postgres:// URL"
        f" of Moim's database; {problem}."
    )
    assert result.stderr.strip().splitlines() == [our_line(result)]
    assert "hunter2" not in result.stderr
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres


GET_SETTINGS = "/moim.ticketing.v1.TicketingService/GetTicketingSettings"


async def test_calls_that_never_send_their_request_lock_nobody_out(shared_pgdata: Path) -> None:
    limit = 4
    env = {"TICKETING_GRPC_MAX_CONCURRENT_RPCS": str(limit)}
    with serve_process(shared_pgdata, **env) as process:
        port = int(wait_for_line(process, SERVING_LINE).group(1))
        target = f"127.0.0.1:{port}"
        async with (
            grpc.aio.insecure_channel(target) as stalled,
            grpc.aio.insecure_channel(
                target, options=[("grpc.use_local_subchannel_pool", 1)]
            ) as other,
        ):
            # Five times the limit, and more than the connection may carry (twice the limit):
            # the rest wait in the client.
            open_stalled: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
            open_stalled = stalled.stream_unary(GET_SETTINGS, request_serializer=bytes)
            calls = [open_stalled(never_sent()) for _ in range(5 * limit)]
            settings = pb_grpc.TicketingServiceStub(other)
            request = pb.GetTicketingSettingsRequest(event_id="nothing-saved")
            for _ in range(2 * limit):  # calls of another client are still served, one by one
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await settings.GetTicketingSettings(request, timeout=10)
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # an answer, not BUSY
            health = health_pb2_grpc.HealthStub(other)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            # The stalled connection is full: a call on it waits for one of its own to end.
            own = pb_grpc.TicketingServiceStub(stalled).GetTicketingSettings(request, timeout=1)
            with pytest.raises(grpc.aio.AioRpcError) as queued:
                await own
            assert queued.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            for call in calls:
                call.cancel()


# Calls one process runs at once in the crowd tests: a connection carries 8 calls, and one
# client host may have 32 waiting for their request or open as watches.
CROWD_LIMIT = 4
ONE_CONNECTION_EACH = [("grpc.use_local_subchannel_pool", 1)]


class Crowd(NamedTuple):
    """`serve` at CROWD_LIMIT and five connections to it from another host."""

    process: subprocess.Popen[str]
    port: int  # `serve`'s own, for a client on 127.0.0.1
    crowd_port: int  # the proxy's, whose connections come from 127.0.0.2
    channels: list[grpc.aio.Channel]

    def fill_each_connection(self, open_call: Callable[[grpc.aio.Channel], CallT]) -> list[CallT]:
        """Twice CROWD_LIMIT calls on each connection, as many as it carries: four connections'
        worth is the host's bound, so the fifth connection's calls are past it."""
        return [open_call(channel) for channel in self.channels for _ in range(2 * CROWD_LIMIT)]


@asynccontextmanager
async def crowding_host(pgdata: Path) -> AsyncIterator[Crowd]:
    """`serve` at CROWD_LIMIT, with five connections to it from 127.0.0.2 (closed after)."""
    env = {"TICKETING_GRPC_MAX_CONCURRENT_RPCS": str(CROWD_LIMIT)}
    with serve_process(pgdata, **env) as process:
        port = int(wait_for_line(process, SERVING_LINE).group(1))
        async with SilentProxy(from_another_host(port)).running() as proxy:
            target = f"127.0.0.1:{proxy.port}"
            channels = [
                grpc.aio.insecure_channel(target, options=ONE_CONNECTION_EACH) for _ in range(5)
            ]
            try:
                yield Crowd(process, port, proxy.port, channels)
            finally:
                for channel in channels:
                    await channel.close()


async def only_the_fifth_connection_refused(calls: Sequence[grpc.aio.Call]) -> None:
    """Four connections' worth of the crowd's calls stay open; the rest, and no more, are
    refused RESOURCE_EXHAUSTED at once."""
    codes = [asyncio.ensure_future(call.code()) for call in calls]
    refused = await first_ended(codes, 2 * CROWD_LIMIT)
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [code.result() for code in refused] == [exhausted] * (2 * CROWD_LIMIT)
    assert sum(code.done() for code in codes) == 2 * CROWD_LIMIT


def stalled_settings_call(channel: grpc.aio.Channel) -> grpc.aio.StreamUnaryCall[bytes, bytes]:
    """A GetTicketingSettings call that never sends its request."""
    send: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
    send = channel.stream_unary(GET_SETTINGS, request_serializer=bytes)
    return send(never_sent())


async def test_calls_holding_back_their_request_are_bounded_per_client_host(
    shared_pgdata: Path,
) -> None:
    request = pb.GetTicketingSettingsRequest(event_id="nothing-saved")
    async with crowding_host(shared_pgdata) as crowd:
        calls = crowd.fill_each_connection(stalled_settings_call)
        # Before, every call waited for as long as its client liked, each holding memory.
        await only_the_fifth_connection_refused(calls)
        for details in [await call.details() for call in calls if call.done()]:
            assert "waiting to send their request" in details
        # Another host is served all along.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{crowd.port}") as direct:
            with pytest.raises(grpc.aio.AioRpcError) as served:
                await pb_grpc.TicketingServiceStub(direct).GetTicketingSettings(request)
            assert served.value.code() == grpc.StatusCode.NOT_FOUND
        # Once the host's calls end, its places are free again.
        for call in calls:
            call.cancel()
        for channel in crowd.channels:
            await channel.close()
        target = f"127.0.0.1:{crowd.crowd_port}"
        async with (
            grpc.aio.insecure_channel(target, options=ONE_CONNECTION_EACH) as channel,
            asyncio.timeout(30),
        ):
            again = pb_grpc.TicketingServiceStub(channel)
            while True:  # until the server has seen the calls end
                with pytest.raises(grpc.aio.AioRpcError) as served:
                    await again.GetTicketingSettings(request, timeout=10)
                if served.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    break
        assert served.value.code() == grpc.StatusCode.NOT_FOUND
        crowd.process.send_signal(signal.SIGTERM)
        assert crowd.process.stderr is not None
        logged = crowd.process.stderr.read()
    assert logged.count("GetTicketingSettings RESOURCE_EXHAUSTED") >= 2 * CROWD_LIMIT  # each logged


HealthWatch = grpc.aio.UnaryStreamCall[
    health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
]


def health_watch(channel: grpc.aio.Channel) -> HealthWatch:
    """A health Watch, which stays open."""
    watch: HealthWatch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    return watch


async def test_health_watches_take_no_place_of_the_service_and_are_bounded_per_host(
    shared_pgdata: Path,
) -> None:
    async with crowding_host(shared_pgdata) as crowd:
        watches = crowd.fill_each_connection(health_watch)
        # Open to anyone, without a token. Before, the first four took every place of the
        # service's calls.
        await only_the_fifth_connection_refused(watches)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{crowd.port}") as direct:
            settings = pb_grpc.TicketingServiceStub(direct)
            request = pb.GetTicketingSettingsRequest(event_id="nothing-saved")
            with pytest.raises(grpc.aio.AioRpcError) as answer:
                await settings.GetTicketingSettings(request, timeout=10)
        assert answer.value.code() == grpc.StatusCode.NOT_FOUND  # served, not BUSY
        for watch in watches:
            watch.cancel()


@pytest.mark.parametrize(
    ("service", "first"),
    [
        ("", "SERVING"),
        ("moim.ticketing.v1.TicketingService", "SERVING"),
        ("no.such.Service", "SERVICE_UNKNOWN"),  # anyone may watch any name
    ],
    ids=["server", "ticketing", "unknown"],
)
async def test_a_health_watch_ends_once_it_said_not_serving_at_a_stop(
    shared_pgdata: Path, service: str, first: str
) -> None:
    # Its client (a load balancer, or a gRPC client's own health checking) learns of the stop
    # at once, as before; the watch used to stay open, holding the stop for its whole grace
    # period, and end only then as UNAVAILABLE "Cancelling all calls". A watch of an unknown
    # name was not even told of the stop.
    with serve(shared_pgdata) as (port, process):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            watch: HealthWatch = health_pb2_grpc.HealthStub(channel).Watch(request)
            statuses = []
            # Until the end of the stream (a failure raises); SIGTERM once the watch is open.
            while isinstance(answer := await watch.read(), health_pb2.HealthCheckResponse):
                statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))
                if len(statuses) == 1:
                    process.send_signal(signal.SIGTERM)
            code = await watch.code()
        await asyncio.to_thread(process.wait, START_TIMEOUT_SECONDS)
    assert statuses == [first, "NOT_SERVING"]
    assert code == grpc.StatusCode.OK
    assert process.returncode == 0


async def test_a_call_still_waiting_for_its_request_is_refused_at_a_stop(
    shared_pgdata: Path,
) -> None:
    # One call that never sends its request (anyone may open one here: no token is set) held
    # every stop for its whole grace period, then ended "Cancelling all calls".
    with serve(shared_pgdata) as (port, process):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stalled = stalled_settings_call(channel)
            # Calls on one connection are taken in order: once a later one is answered, the
            # stalled call waits in the server for its request.
            request = pb.GetTicketingSettingsRequest(event_id="nothing-saved")
            with pytest.raises(grpc.aio.AioRpcError) as answered:
                await pb_grpc.TicketingServiceStub(channel).GetTicketingSettings(request)
            process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stalled
        await asyncio.to_thread(process.wait, START_TIMEOUT_SECONDS)
        assert process.stderr is not None
        logged = process.stderr.read()
    assert answered.value.code() == grpc.StatusCode.NOT_FOUND
    error = rich_error(refused.value)
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_STOPPING")
    [line] = [json.loads(x) for x in logged.splitlines() if "GetTicketingSettings UNAVAIL" in x]
    assert (line["level"], line["reason"]) == ("INFO", "SERVER_STOPPING")  # not a fault
    assert process.returncode == 0


async def test_a_stop_under_load_cancels_no_call_each_is_served_or_refused_to_be_retried(
    shared_pgdata: Path,
) -> None:
    # gRPC's own stop ends the calls that have come but were not yet handed to the service as
    # CANCELLED, which no client retries: 297 of 300 callers got it at a SIGTERM.
    callers, answered = 300, asyncio.Event()
    outcomes: collections.Counter[str] = collections.Counter()

    async def call_until_refused(stub: TicketingServiceAsyncStub) -> None:
        request = pb.GetTicketingSettingsRequest(event_id="launch-party")
        try:
            while True:
                await stub.GetTicketingSettings(request, timeout=START_TIMEOUT_SECONDS)
                outcomes["OK"] += 1
                if outcomes["OK"] >= callers:
                    answered.set()
        except grpc.aio.AioRpcError as error:
            reason = TicketingError.from_rpc_error(error).reason  # "" without details
            outcomes[f"{error.code().name} {reason}".strip()] += 1

    with serve(shared_pgdata) as (port, process):
        assert process.stderr is not None
        logged = asyncio.create_task(asyncio.to_thread(process.stderr.read))  # never blocks it
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: TicketingServiceAsyncStub = pb_grpc.TicketingServiceStub(channel)
            await stub.UpdateTicketingSettings(paid_settings_request())
            calls = [asyncio.create_task(call_until_refused(stub)) for _ in range(callers)]
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                await answered.wait()
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                await asyncio.gather(*calls)
        await asyncio.to_thread(process.wait, START_TIMEOUT_SECONDS)
        await logged
    refused = {outcome for outcome in outcomes if outcome != "OK"}
    assert "UNAVAILABLE SERVER_STOPPING" in refused  # the calls in flight at the stop
    # 300 callers pass the 256 calls a server runs at once when a slow machine overlaps them:
    # SERVER_BUSY is a refusal to retry too (nothing of the call ran).
    retry = {"UNAVAILABLE SERVER_STOPPING", "UNAVAILABLE", "RESOURCE_EXHAUSTED SERVER_BUSY"}
    assert refused <= retry, outcomes
    assert process.returncode == 0


async def test_an_open_reflection_stream_ends_at_a_stop(shared_pgdata: Path) -> None:
    # grpcurl closes its stream once answered; a client that keeps one open (anyone may) held
    # the stop for its whole grace period, the stream then ending UNAVAILABLE.
    with serve(shared_pgdata) as (port, process):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
            await stream.write(reflection_pb2.ServerReflectionRequest(list_services=""))
            listed = await stream.read()
            process.send_signal(signal.SIGTERM)
            ended = await stream.read()  # a failure raises
            code = await stream.code()
        await asyncio.to_thread(process.wait, START_TIMEOUT_SECONDS)
    assert isinstance(listed, reflection_pb2.ServerReflectionResponse)
    assert "grpc.health.v1.Health" in {s.name for s in listed.list_services_response.service}
    assert ended is grpc.aio.EOF
    assert code == grpc.StatusCode.OK
    assert process.returncode == 0


def test_a_metrics_port_on_every_interface_answers_over_ipv4_and_ipv6(shared_pgdata: Path) -> None:
    with serve_process(shared_pgdata, TICKETING_METRICS_LISTEN="[::]:0") as process:
        port = int(wait_for_line(process, re.compile(r"metrics on \[::\]:(\d+)")).group(1))
        for host in ("127.0.0.1", "[::1]"):
            scraped = httpx.get(f"http://{host}:{port}/metrics", timeout=10)
            assert scraped.status_code == 200
            assert "ticketing_rpc_handled" in scraped.text


REFLECTION_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def silent_reflection_stream(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall[bytes, bytes]:
    """A reflection stream that never sends a request."""
    open_stream: grpc.aio.StreamStreamMultiCallable[bytes, bytes]
    open_stream = channel.stream_stream(REFLECTION_INFO, request_serializer=bytes)
    return open_stream(never_sent())


async def test_reflection_streams_left_open_are_bounded_per_client_host(
    shared_pgdata: Path,
) -> None:
    async with crowding_host(shared_pgdata) as crowd:
        streams = crowd.fill_each_connection(silent_reflection_stream)
        # Open to anyone, each sending nothing. Before, all stayed open, each holding ~20 KB.
        await only_the_fifth_connection_refused(streams)
        # Another host still lists the services.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{crowd.port}") as direct:
            listing = reflection_pb2.ServerReflectionRequest(list_services="")
            stub = reflection_pb2_grpc.ServerReflectionStub(direct)
            names = [
                service.name
                async for answer in stub.ServerReflectionInfo(iter([listing]))
                for service in answer.list_services_response.service
            ]
        assert "moim.ticketing.v1.TicketingService" in names
        for stream in streams:
            stream.cancel()


async def no_request() -> AsyncIterator[bytes]:
    """A request stream that ends at once, without a message."""
    return
    yield b""  # makes this an async generator


async def test_a_call_that_ends_without_its_request_is_answered_at_once(
    shared_pgdata: Path,
) -> None:
    with serve_process(shared_pgdata) as process:
        port = int(wait_for_line(process, SERVING_LINE).group(1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for method in (GET_SETTINGS, "/grpc.health.v1.Health/Check"):
                send: grpc.aio.StreamUnaryMultiCallable[bytes, bytes]
                send = channel.stream_unary(method, request_serializer=bytes)
                call = send(no_request())
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await asyncio.wait_for(call, 10)  # never answered before
                error = rich_error(caught.value)
                assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["request"])
        process.send_signal(signal.SIGTERM)
        assert process.stderr is not None
        logged = process.stderr.read()
    assert "GetTicketingSettings INVALID_ARGUMENT" in logged


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_serve_refuses_a_reachable_address_with_neither_token_nor_mutual_tls(
    tmp_path: Path, listen: str
) -> None:
    result = run_serve(tmp_path, "--listen", listen)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"refusing to serve {listen} to the network unauthenticated" in line
    assert "TICKETING_GRPC_TOKEN" in line
    assert "TICKETING_TLS_CLIENT_CA" in line
    assert "--insecure" in line


@pytest.mark.parametrize("flag", ["--grpc-listen", "--webhook-listen", "--sandbox-listen"])
def test_dev_refuses_a_reachable_address(tmp_path: Path, flag: str) -> None:
    # It served every call unauthenticated on 0.0.0.0 (its banner said 127.0.0.1), even with
    # TICKETING_GRPC_TOKEN set, which dev does not read.
    result = run_command(tmp_path, "dev", flag, "0.0.0.0:0", TICKETING_GRPC_TOKEN="token")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("ticketing-service: refusing to serve 0.0.0.0:0 to the network: dev")
    assert "--insecure" in line
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres


@pytest.mark.parametrize(
    ("args", "env", "warned"),
    [
        (("--insecure",), {}, True),
        ((), {"TICKETING_GRPC_TOKEN": "new-token,old-token"}, False),
    ],
)
def test_serve_takes_a_reachable_address_with_a_token_or_when_told_it_is_insecure(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], warned: bool
) -> None:
    serving = re.compile(r"TicketingService on 0\.0\.0\.0:(\d+)")
    with serve_process(tmp_path / "pgdata", "--listen", "0.0.0.0:0", *args, **env) as process:
        assert process.stderr is not None
        logged = []
        for line in process.stderr:  # ends when the process exits: never waits forever
            logged.append(line)
            if match := serving.search(line):
                break
        assert match, "".join(logged)
        with grpc.insecure_channel(f"127.0.0.1:{match.group(1)}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=START_TIMEOUT_SECONDS) == 0
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert any("neither a token nor mutual TLS (--insecure)" in line for line in logged) == warned


def _other_files(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("not a database")
    return path


def _a_file(path: Path) -> Path:
    path.write_text("not a directory")
    return path


def _under_a_file(path: Path) -> Path:
    return _a_file(path) / "pgdata"


def _no_postgres_of_ours(path: Path) -> Path:
    path.mkdir()
    (path / "PG_VERSION").write_text("9\n")  # what a data directory of Postgres 9 starts with
    return path


@pytest.mark.parametrize(
    ("make_data_dir", "says"),
    [
        (_other_files, "holds files but no Postgres data"),
        (_a_file, "is a file, not a directory"),
        (_under_a_file, "Could not create the embedded Postgres's data directory"),
        (_no_postgres_of_ours, "did not start: pg_ctl exited with"),
    ],
)
def test_a_data_dir_that_cannot_hold_the_embedded_postgres_fails_in_one_line_touching_nothing(
    tmp_path: Path, make_data_dir: Callable[[Path], Path], says: str
) -> None:
    data_dir = make_data_dir(tmp_path / "data")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = run_serve(tmp_path, TICKETING_DATA_DIR=str(data_dir))
    assert result.returncode == 2
    line = our_line(result)  # and no traceback
    assert says in line
    assert line.endswith("Set TICKETING_DATA_DIR to a new or empty directory, or DATABASE_URL.")
    if "its output is logged above" in line:  # pgserver's errors pass, its steps do not
        logged = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{")]
        assert {(r["logger"], r["level"]) for r in logged} == {("pgserver", "ERROR")}
        assert any("could not access the server configuration file" in r["message"] for r in logged)
    assert {p: p.read_bytes() for p in before} == before
    assert not list(tmp_path.rglob("postgresql.conf"))  # no database was initialised anywhere


def test_a_first_start_logs_what_the_service_does_not_each_step_of_its_libraries(
    tmp_path: Path,
) -> None:
    # Before: pgserver logged each step of starting the embedded Postgres at INFO, initdb's
    # whole output included, and Alembic each of its plugins: 60 lines before the service's.
    data_dir = tmp_path / "pgdata"
    result = run_command(tmp_path, "migrate", TICKETING_DATA_DIR=str(data_dir))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert {r["logger"] for r in records} == {
        "ticketing_service",
        "ticketing_service.adapters.embedded_postgres",
        "alembic.runtime.migration",
    }
    messages = [r["message"] for r in records]
    embedded = f"DATABASE_URL is unset: the embedded Postgres serves, its data in {data_dir}"
    assert messages[0] == embedded
    assert any(f" -> {SCHEMA_REVISION}, " in m for m in messages if m.startswith("Running upgrade"))
    assert messages[-1] == "migrations applied"
    assert [m for m in messages if "\n" in m] == []  # each one line on a terminal too


def test_the_embedded_postgres_is_stopped_again_after_a_process_using_it_was_killed(
    tmp_path: Path,
) -> None:
    # pgserver stops its Postgres when the last process using it exits, and counts those
    # processes in a file. One killed (SIGKILL, a crash, a reboot) stayed counted, so before
    # this no later process stopped that Postgres when it exited: it ran on in the background.
    data_dir = tmp_path / "pgdata"
    postmaster = data_dir / "postmaster.pid"
    try:
        with serve(data_dir) as (_, killed):
            killed.kill()
            killed.wait(timeout=START_TIMEOUT_SECONDS)
        assert postmaster.exists()  # its Postgres runs on
        later = run_command(tmp_path, "reconcile", TICKETING_DATA_DIR=str(data_dir))
        assert later.returncode == 0, later.stderr
        assert not postmaster.exists()  # the last process using it stopped it
    finally:
        stop_postgres_left_running(postmaster)


def test_the_last_process_to_exit_stops_the_embedded_postgres_after_another_was_killed(
    tmp_path: Path,
) -> None:
    # Only a process starting dropped the killed ones from pgserver's list: the last of those
    # already running counted the killed one as still using the Postgres, and left it running.
    data_dir = tmp_path / "pgdata"
    postmaster = data_dir / "postmaster.pid"
    try:
        with serve(data_dir) as (_, last):
            with serve(data_dir) as (_, killed):
                killed.kill()
                killed.wait(timeout=START_TIMEOUT_SECONDS)  # reaped: no longer a process at all
            assert postmaster.exists()  # the one still serving uses it
        assert last.returncode == 0
        # pgserver stops the Postgres with `pg_ctl -w`, which returns once its pid file is gone.
        assert not postmaster.exists()
    finally:
        stop_postgres_left_running(postmaster)


def test_a_data_dir_deleted_under_a_running_server_fails_in_one_line_then_starts_afresh(
    tmp_path: Path,
) -> None:
    # A fresh start after `rm -rf` while the old server still runs: pgserver kills the old
    # Postgres, then asserts it is gone, mostly before the kill took effect (6 runs in 7 here).
    # That was a traceback; it is one line now. When the kill wins, the command starts afresh.
    data_dir = tmp_path / "pgdata"
    no_schema = "The database has no schema yet: run `ticketing-service migrate` first."
    with serve(data_dir) as (_, old):
        shutil.rmtree(data_dir)
        first = run_command(tmp_path, "reconcile", TICKETING_DATA_DIR=str(data_dir))
        again = run_command(tmp_path, "reconcile", TICKETING_DATA_DIR=str(data_dir))
        # Killed: this test is about the commands run after the deletion, not about how a
        # server whose Postgres was killed under it stops (once, under load, over a minute).
        old.kill()
    if first.returncode == 2:
        assert our_line(first) == (
            f"ticketing-service: The embedded Postgres in {data_dir} did not start: a Postgres "
            "still running for a data directory deleted at this path was being stopped. "
            "Run the command again."
        )
    else:
        assert first.returncode == 1
        assert our_line(first).endswith(no_schema)
    assert again.returncode == 1  # a new Postgres serves: it has no schema yet
    assert our_line(again).endswith(no_schema)


def test_an_embedded_postgres_whose_creation_was_cut_short_is_named_and_how_to_mend_it(
    tmp_path: Path,
) -> None:
    # A signal while initdb ran at the first start left template1 alone in base/: Postgres then
    # started, and every command failed for good saying to check DATABASE_URL, which was unset.
    data_dir = tmp_path / "pgdata"
    assert run_command(tmp_path, "migrate", TICKETING_DATA_DIR=str(data_dir)).returncode == 0
    databases = sorted((data_dir / "base").iterdir(), key=lambda d: int(d.name))
    for database in databases[1:3]:  # template0 and postgres, made after template1
        shutil.rmtree(database)

    result = run_command(tmp_path, "migrate", TICKETING_DATA_DIR=str(data_dir))

    assert result.returncode == 2, result.stderr
    assert our_line(result) == (
        f"ticketing-service: The embedded Postgres in {data_dir} is incomplete: it was stopped"
        " while it was first being created, and holds no data. Delete the directory and run the"
        " command again."
    )
    assert not (data_dir / "postmaster.pid").exists()  # the Postgres it started is stopped


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "hangup"])
def test_ctrl_c_or_a_hangup_while_the_command_loads_ends_it_quietly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # Loading the CLI's modules takes a second or more; Ctrl-C then was a traceback. A hangup
    # (the terminal closed) killed the command outright, its embedded Postgres left running.
    # `-X importtime` writes a line to stderr as each import completes.
    command = python_from_a_terminal("-X", "importtime", "-m", "ticketing_service", "migrate")
    env = {**os.environ, "TICKETING_DATA_DIR": str(tmp_path / "pgdata")}
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, env=env, stderr=subprocess.PIPE, text=True
    )
    # The Ctrl-C lands once the CLI has begun to load (its first package is in), so Python's own
    # handler is in place: a fixed sleep landed before it on a busy machine, and the signal
    # killed the interpreter outright. Loading the rest takes a second or more; if the Ctrl-C
    # lands later, in the command, that ends quietly as well.
    assert process.stderr is not None
    for line in process.stderr:
        if line.rsplit("|", 1)[-1].strip() == "ticketing_service.entrypoints":
            break
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=START_TIMEOUT_SECONDS)
    assert process.returncode == 128 + sig  # a shell's status for the signal
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == STOPPED


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["sigterm", "ctrl-c-at-a-terminal"],
)
def test_a_stop_signal_as_the_embedded_postgres_starts_stops_the_command_and_that_postgres(
    tmp_path: Path, sig: signal.Signals, whole_group: bool
) -> None:
    # pgserver starts its Postgres, then lists the process as one using it; at exit it stops
    # the Postgres only for a listed process. A SIGTERM or SIGHUP between the two (about 1 s in)
    # ended the command and left the Postgres running, listed as used by nobody (SIGTERM here:
    # under `nohup` a SIGHUP is ignored). Ctrl-C reaches the whole process group, pg_ctl too: its
    # death by SIGINT was reported as a Postgres that "did not start", with advice to use
    # another data directory.
    data_dir = tmp_path / "pgdata"
    assert run_command(tmp_path, "migrate", TICKETING_DATA_DIR=str(data_dir)).returncode == 0
    postmaster = data_dir / "postmaster.pid"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"TICKETING_DATA_DIR": str(data_dir), **REFUSED_PAYMENT_SERVICE}
    command = [sys.executable, "-m", "ticketing_service", "serve", "--listen", "127.0.0.1:0"]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        # A starting Postgres writes it before it is ready, while pg_ctl waits: asked often, so
        # that the signal lands in that window.
        assert wait_until(postmaster.exists, START_TIMEOUT_SECONDS, every=0.002)
        if whole_group:
            os.killpg(process.pid, sig)  # as a terminal's Ctrl-C: its own session's group
        else:
            process.send_signal(sig)
        stderr = process.communicate(timeout=START_TIMEOUT_SECONDS)[1]
        if whole_group:
            # The Postgres got the Ctrl-C too, and ends by itself (a fast shutdown) as the
            # command exits: nothing listed it to wait for.
            wait_until(lambda: not postmaster.exists(), START_TIMEOUT_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
        left_running = stop_postgres_left_running(postmaster)
    assert process.returncode == 128 + sig, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1] == STOPPED
    assert not left_running, "the embedded Postgres is still running"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "hangup"])
def test_a_stop_signal_sent_once_serve_says_it_serves_stops_it_and_its_postgres_gracefully(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # Closing the terminal that runs `serve` (or `dev`) killed it outright: no graceful stop,
    # and its embedded Postgres ran on in the background. And `serve` logged that it serves
    # before it handled SIGTERM: a SIGTERM sent right then killed it the same way.
    data_dir = tmp_path / "pgdata"
    command = python_from_a_terminal("-m", "ticketing_service", "serve", "--listen", "127.0.0.1:0")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"TICKETING_DATA_DIR": str(data_dir), **REFUSED_PAYMENT_SERVICE}
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        command, env=env, stderr=subprocess.PIPE, text=True
    )
    postmaster = data_dir / "postmaster.pid"
    try:
        wait_for_line(process, SERVING_LINE)
        process.send_signal(sig)
        stderr = process.communicate(timeout=START_TIMEOUT_SECONDS)[1]
    finally:
        if process.poll() is None:
            process.kill()
        left_running = stop_postgres_left_running(postmaster)
    assert process.returncode == 0
    assert "stopping: finishing in-flight calls" in stderr
    assert "Traceback" not in stderr, stderr
    assert not left_running, "the embedded Postgres is still running"


def test_a_data_dir_whose_path_holds_a_space_fails_in_one_line_saying_so(tmp_path: Path) -> None:
    # Before: pgserver started postgres with the path split at the space, and the line said
    # to use "a new or empty directory", which it was.
    data_dir = tmp_path / "My Projects" / "pgdata"
    result = run_serve(tmp_path, TICKETING_DATA_DIR=str(data_dir))
    assert result.returncode == 2
    assert our_line(result) == (
        f"ticketing-service: The embedded Postgres cannot use {data_dir}: pgserver cannot "
        "start one in a path that holds a space. Set TICKETING_DATA_DIR to a path without "
        "spaces, or DATABASE_URL."
    )
    assert not data_dir.exists()


# One case per way an address arrives; every malformed shape is in the unit tests of
# parse_host_port and Config.
@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (("serve", "--listen", "127.0.0.1:99999"), {}, "--listen"),  # gRPC took it as 34463
        (("serve",), {"TICKETING_HEALTH_LISTEN": "127.0.0.1:"}, "TICKETING_HEALTH_LISTEN"),
        (("dev", "--grpc-listen", "127.0.0.1:70000"), {}, "--grpc-listen"),
        (("webhook",), {"TICKETING_METRICS_LISTEN": "[::1]:-1"}, "TICKETING_METRICS_LISTEN"),
    ],
)
def test_an_address_that_is_not_host_and_port_fails_at_start_naming_it(
    tmp_path: Path, argv: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    result = run_command(tmp_path, *argv, **env)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ticketing-service: {named} must be HOST:PORT with a port up to 65535")
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (("serve", "--listen", "{taken}"), {}, "Could not listen on {taken};"),
        (("serve", "--workers", "2", "--listen", "{taken}"), {}, "Could not listen on {taken};"),
        (
            ("serve", "--listen", "127.0.0.1:0"),
            {"TICKETING_HEALTH_LISTEN": "{taken}"},
            "Could not listen on {taken} for health probes;",
        ),
        (
            ("serve", "--listen", "127.0.0.1:0"),
            {"TICKETING_METRICS_LISTEN": "{taken}"},
            "cannot listen on {taken} for metrics: Address already in use.",
        ),
        (
            ("dev", "--webhook-listen", "{taken}", "--sandbox-listen", "127.0.0.1:0"),
            {},
            "cannot listen on {taken}: Address already in use.",
        ),
        (
            ("webhook", "--listen", "127.0.0.1:0"),
            {"TICKETING_METRICS_LISTEN": "{taken}"},
            "cannot listen on {taken} for metrics: Address already in use.",
        ),
    ],
)
def test_an_address_already_in_use_fails_in_one_line(
    shared_pgdata: Path, argv: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as holder:
        taken = f"127.0.0.1:{holder.getsockname()[1]}"
        result = run_command(
            shared_pgdata,
            *(arg.format(taken=taken) for arg in argv),
            **{name: value.format(taken=taken) for name, value in env.items()},
        )
    assert result.returncode == 1
    ours = [line for line in result.stderr.splitlines() if line.startswith("ticketing-service:")]
    assert ours, result.stderr  # one line; `--workers 2`: one from each worker
    assert all(says.format(taken=taken) in line for line in ours), ours
    assert "Traceback" not in result.stderr
