"""`serve` against connections that carry no calls (a flood of them, ones left idle), and out
of files."""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from moim.ticketing.v1 import registration_event_pb2, settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.end_to_end.serving import serve_process, wait_for_line
from tests.end_to_end.test_serve_command import SERVING_LINE
from tests.idle_connections import HTTP2_HELLO, idle_connections
from tests.integration.payment_fake import TOKEN, running_fake
from tests.rich_errors import rich_error
from ticketing_service.entrypoints.grpc.server import MAX_METADATA_BYTES

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub

ANSWER_SECONDS = 10


@pytest.fixture(scope="module")
def pgdata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the module: each `serve` reuses it, not running initdb."""
    return tmp_path_factory.mktemp("pgdata")


@asynccontextmanager
async def serving(pgdata: Path, **env: str) -> AsyncIterator[tuple[int, int]]:
    """`serve` opening checkouts at the payment service fake: its port and process id."""
    async with running_fake() as fake:
        payment = {"TICKET_PAYMENT_SERVICE_URL": fake.url, "TICKET_PAYMENT_SERVICE_TOKEN": TOKEN}
        with serve_process(pgdata, **payment, **env) as process:
            yield int(wait_for_line(process, SERVING_LINE).group(1)), process.pid


def paid_tier(event_id: str) -> pb.UpdateTicketingSettingsRequest:
    tier = settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=30000, capacity=50)
    return pb.UpdateTicketingSettingsRequest(event_id=event_id, event_title="Gig", tiers=[tier])


async def hold_a_seat(stub: TicketingServiceAsyncStub, event_id: str) -> str:
    """A paid registration for `event_id`, its tier saved first: the checkout's URL."""
    await stub.UpdateTicketingSettings(paid_tier(event_id), timeout=ANSWER_SECONDS)
    return await open_checkout(stub, event_id)


async def open_checkout(stub: TicketingServiceAsyncStub, event_id: str) -> str:
    """A paid registration for the saved `event_id`, its checkout opened: the checkout's URL."""
    request = pb.StartPaidRegistrationRequest(event_id=event_id, tier_id="vip", user_id="u-1")
    held = await stub.StartPaidRegistration(request, timeout=ANSWER_SECONDS)
    return str(held.reservation.checkout_url)


async def test_a_flood_of_idle_connections_leaves_the_process_its_file_descriptors(
    pgdata: Path,
) -> None:
    open_files, cap = 256, 16
    async with serving(pgdata, TICKETING_GRPC_MAX_CONNECTIONS=str(cap)) as (port, pid):
        # As under `ulimit -n 256`; the server has opened its pool and its listeners already.
        _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (open_files, hard))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.TicketingServiceStub(channel)
            await stub.UpdateTicketingSettings(paid_tier("flood"), timeout=ANSWER_SECONDS)
            # Twice the process's files: without a cap, the server took connections until it
            # had no file left, and took no more (nor could it reach the payment service).
            with idle_connections(port, 2 * open_files) as closed:
                assert closed >= 2 * open_files - cap  # the rest, refused at once
                # A caller already connected opens the process's first checkout: it has files.
                assert await open_checkout(stub, "flood")
        # Once the flood is gone, new connections are taken again (as soon as the server has
        # seen the flood's close: until then the channel's attempts are refused, and it retries).
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            stub = pb_grpc.TicketingServiceStub(channel)
            assert await hold_a_seat(stub, "after-the-flood")


async def test_a_connection_without_calls_is_closed_after_the_idle_time_not_one_watching(
    pgdata: Path,
) -> None:
    async with (
        serving(pgdata, TICKETING_GRPC_MAX_CONNECTION_IDLE_SECONDS="1") as (port, _),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as watching,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as calling,
    ):
        watch = pb_grpc.TicketingServiceStub(watching).WatchRegistrationEvents(
            pb.WatchRegistrationEventsRequest(), timeout=60
        )
        stub = pb_grpc.TicketingServiceStub(calling)
        request = pb.GetTicketingSettingsRequest(event_id="nothing-saved")
        with pytest.raises(grpc.aio.AioRpcError):  # NOT_FOUND: the connection is open
            await stub.GetTicketingSettings(request, timeout=ANSWER_SECONDS)
        assert calling.get_state() == grpc.ChannelConnectivity.READY
        # The server closes the idle connection (an HTTP/2 GOAWAY) ...
        await asyncio.wait_for(calling.wait_for_state_change(grpc.ChannelConnectivity.READY), 30)
        # ... and the client's next call opens another, unaware.
        assert await hold_a_seat(stub, "after-idling")

        # The watcher's connection, open all along with a call on it, still streams.
        async def watched_event() -> pb.WatchRegistrationEventsResponse:
            async for message in watch:
                if message.event.reservation.event_id == "after-idling":
                    return message
            raise AssertionError("the watch ended")

        seen = await asyncio.wait_for(watched_event(), 30)
        assert seen.event.type == registration_event_pb2.REGISTRATION_EVENT_TYPE_RESERVATION_CREATED
        watch.cancel()


async def test_a_process_out_of_files_answers_unavailable_and_the_retry_completes(
    pgdata: Path,
) -> None:
    async with (
        serving(pgdata) as (port, pid),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = pb_grpc.TicketingServiceStub(channel)
        await stub.UpdateTicketingSettings(paid_tier("out-of-files"), timeout=ANSWER_SECONDS)
        soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        # No new file at all (0-2 are its standard streams): the first checkout needs a socket.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, hard))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await open_checkout(stub, "out-of-files")
        error = rich_error(caught.value)  # INTERNAL before, from an OSError httpx let through
        assert (error.code, error.reason) == (
            grpc.StatusCode.UNAVAILABLE,
            "PAYMENT_SERVICE_UNAVAILABLE",
        )
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        assert await open_checkout(stub, "out-of-files")  # the seat it kept, checkout opened


async def test_metadata_up_to_its_bound_is_served_each_time_and_more_refused_its_connection_kept(
    pgdata: Path,
) -> None:
    async with (
        serving(pgdata) as (port, _),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()

        async def checked(padding: int) -> health_pb2.HealthCheckResponse:
            metadata = (("x-padding", "a" * padding),)
            return await health.Check(check, metadata=metadata, timeout=ANSWER_SECONDS)

        # Three quarters of the bound, the client's own headers aside: between gRPC's default
        # soft and hard bounds (8 and 16 KiB) about half of these calls were refused, at random.
        for _ in range(20):
            answer = await checked(MAX_METADATA_BYTES * 3 // 4)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        for padding in (MAX_METADATA_BYTES, 1024 * 1024):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await checked(padding)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "metadata size exceeds" in str(caught.value.details())
        # The connection that sent them is kept, and serves the next call.
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        assert (await checked(0)).status == health_pb2.HealthCheckResponse.SERVING


# A GOAWAY with an error (PROTOCOL_ERROR), as a client sends that closes its connection on one,
# and any client may; a PING, and its answer.
GOAWAY = b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" + bytes(7) + b"\x01"
PING = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"goodbye!"
PING_ACK = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + b"goodbye!"
GOAWAY_TYPE = 7
PING_TYPE_ANSWER = -6  # what frame_types counts a PING frame with the ACK flag as


def ping_answered(connection: socket.socket) -> bool:
    """Read what the server sends until it answers PING; False if it closes first."""
    connection.settimeout(ANSWER_SECONDS)
    received = b""
    while PING_ACK not in received:
        chunk = connection.recv(65536)
        if not chunk:
            return False
        received += chunk
    return True


def test_clients_closing_their_connections_on_an_error_leave_only_json_lines_in_the_log(
    pgdata: Path,
) -> None:
    with serve_process(pgdata) as process:
        port = int(wait_for_line(process, SERVING_LINE).group(1))
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as connection:
                connection.sendall(HTTP2_HELLO + GOAWAY + PING)
                # Frames are read in order: once the ping is answered, the GOAWAY has been read.
                assert ping_answered(connection)
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=ANSWER_SECONDS * 3)
    assert json.loads(rest.splitlines()[-1])  # the process's own last line, at its stop
    # gRPC wrote an "I1206 ... chttp2_transport.cc] ...: Got goaway [1] ..." line for each.
    assert [line for line in rest.splitlines() if not line.startswith("{")] == []


def frame_types(connection: socket.socket, pings: int) -> list[int]:
    """The types of the frames the server sends, until it has answered `pings` pings or closes."""
    connection.settimeout(ANSWER_SECONDS)
    received, types = b"", list[int]()
    while types.count(PING_TYPE_ANSWER) < pings and (chunk := connection.recv(65536)):
        received += chunk
        while len(received) >= 9 and len(received) >= (end := 9 + int.from_bytes(received[:3])):
            kind, flags = received[3], received[4]
            types.append(PING_TYPE_ANSWER if (kind, flags) == (6, 1) else kind)
            received = received[end:]
    return types


def test_a_burst_of_pings_is_answered_each_its_connection_kept(pgdata: Path) -> None:
    with serve_process(pgdata) as process:
        port = int(wait_for_line(process, SERVING_LINE).group(1))
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.sendall(HTTP2_HELLO + PING * 1000)
            types = frame_types(connection, 1000)
    # gRPC's ping policy answered the third with a GOAWAY "too_many_pings" and went on reading
    # and answering the rest, at half a core while a client kept sending them.
    assert GOAWAY_TYPE not in types
    assert types.count(PING_TYPE_ANSWER) == 1000
