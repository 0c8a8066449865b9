"""Request ids, one log line and metrics per gRPC call, on a real grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from ticketing_service.domain.errors import ConcurrentUpdate, ReservationNotFound
from ticketing_service.entrypoints.grpc.arrival import RequestArrival
from ticketing_service.entrypoints.grpc.auth import BearerToken
from ticketing_service.entrypoints.grpc.decoding import RequestDecoding
from ticketing_service.entrypoints.grpc.errors import abort
from ticketing_service.entrypoints.metrics_endpoint import start_metrics_server
from ticketing_service.entrypoints.observability.interceptor import ObservingInterceptor
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics
from ticketing_service.entrypoints.observability.sampling import CALLER_NOISE_FLAG

SERVICE = "moim.ticketing.v1.TicketingService"
TOKEN = "observability-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SECRET = "never-in-a-log-line"
RESERVATION = "6f1d3c2a-8f0e-4a51-9a5e-0c7b2d1e4f6a"
handler_log = logging.getLogger("ticketing_service.test_handler")
Context = grpc.aio.ServicerContext[Any, Any]


async def get_settings(
    request: pb.GetTicketingSettingsRequest, context: Context
) -> pb.GetTicketingSettingsResponse:
    handler_log.info("looking up %s", request.event_id)
    if request.event_id == "busy":
        await abort(context, ConcurrentUpdate("A lock timed out; retry."))
    if request.event_id == "boom":
        raise RuntimeError(f"bug with token={SECRET}")
    return pb.GetTicketingSettingsResponse()


async def get_reservation(
    request: pb.GetReservationRequest, context: Context
) -> pb.GetReservationResponse:
    handler_log.info("reading the reservation")
    if request.reservation_id != RESERVATION:
        await abort(context, ReservationNotFound("No such reservation."))
    response = pb.GetReservationResponse()
    response.reservation.reservation_id = request.reservation_id
    return response


async def watch(
    request: pb.WatchRegistrationEventsRequest, context: Context
) -> AsyncIterator[pb.WatchRegistrationEventsResponse]:
    for sequence in (1, 2):
        response = pb.WatchRegistrationEventsResponse()
        response.event.sequence = sequence
        yield response
    if request.after_sequence == 99:  # a watcher that stays until the client leaves
        await asyncio.Event().wait()


def _handlers() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "GetTicketingSettings": grpc.unary_unary_rpc_method_handler(
                get_settings,
                pb.GetTicketingSettingsRequest.FromString,
                pb.GetTicketingSettingsResponse.SerializeToString,
            ),
            "GetReservation": grpc.unary_unary_rpc_method_handler(
                get_reservation,
                pb.GetReservationRequest.FromString,
                pb.GetReservationResponse.SerializeToString,
            ),
            "WatchRegistrationEvents": grpc.unary_stream_rpc_method_handler(
                watch,
                pb.WatchRegistrationEventsRequest.FromString,
                pb.WatchRegistrationEventsResponse.SerializeToString,
            ),
        },
    )


class LineWaiter(logging.Handler):
    """Wakes a test when a given number of RPC lines were logged."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == "ticketing_service.rpc":
            self.count += 1
            self.changed.set()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(10):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


class CountingMetrics(TicketingMetrics):
    """The metrics, telling a test when the server has counted calls: it counts a call after
    the client has its answer."""

    def __init__(self) -> None:
        super().__init__(process_collectors=False)
        self.calls = 0
        self.counted = asyncio.Event()

    def rpc_served(self, method: str, code: grpc.StatusCode, reason: str, seconds: float) -> None:
        super().rpc_served(method, code, reason, seconds)
        self.calls += 1
        self.counted.set()

    async def wait_for_calls(self, count: int) -> None:
        async with asyncio.timeout(10):
            while self.calls < count:
                self.counted.clear()
                await self.counted.wait()


@dataclass
class Served:
    stub: Any
    metrics: CountingMetrics
    logs: io.StringIO
    waiter: LineWaiter
    health: Any
    channel: grpc.aio.Channel

    def lines(self, logger: str = "ticketing_service.rpc") -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in self.logs.getvalue().splitlines()]
        return [entry for entry in entries if entry["logger"] == logger]


@pytest.fixture
async def served(captured_logs: io.StringIO) -> AsyncIterator[Served]:
    metrics = CountingMetrics()
    server = grpc.aio.server(
        interceptors=[
            # As in the real server: the token is checked before the request is waited for.
            RequestArrival(per_address=8, token=BearerToken([TOKEN])),
            ObservingInterceptor(metrics),
            RequestDecoding(),
        ]
    )
    server.add_generic_rpc_handlers([_handlers()])
    health_servicer = health.aio.HealthServicer()  # as in the real server
    await health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    waiter = LineWaiter()
    logging.getLogger("ticketing_service.rpc").addHandler(waiter)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Served(
            pb_grpc.TicketingServiceStub(channel),
            metrics,
            captured_logs,
            waiter,
            health_pb2_grpc.HealthStub(channel),
            channel,
        )
    logging.getLogger("ticketing_service.rpc").removeHandler(waiter)
    await server.stop(0)


async def failed(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_each_call_logs_one_line_with_method_code_and_duration(served: Served) -> None:
    await served.stub.GetTicketingSettings(
        pb.GetTicketingSettingsRequest(event_id="e"), metadata=AUTH
    )
    [line] = served.lines()
    assert line["message"].startswith("GetTicketingSettings OK in ")
    assert (line["rpc"], line["grpc_code"]) == ("GetTicketingSettings", "OK")
    assert isinstance(line["duration_ms"], float)


async def test_the_callers_request_id_names_every_line_the_call_causes(served: Served) -> None:
    metadata = (*AUTH, ("x-request-id", "req-from-moim"))
    await served.stub.GetTicketingSettings(
        pb.GetTicketingSettingsRequest(event_id="e"), metadata=metadata
    )
    [inside] = served.lines("ticketing_service.test_handler")
    [finished] = served.lines()
    assert inside["request_id"] == finished["request_id"] == "req-from-moim"
    assert inside["rpc"] == "GetTicketingSettings"


async def test_a_call_without_a_request_id_gets_a_fresh_uuid_per_call(served: Served) -> None:
    request = pb.GetTicketingSettingsRequest(event_id="e")
    await served.stub.GetTicketingSettings(request, metadata=AUTH)
    await served.stub.GetTicketingSettings(request, metadata=AUTH)
    first, second = (line["request_id"] for line in served.lines())
    assert first != second
    assert uuid.UUID(first).version == uuid.UUID(second).version == 4


async def test_the_reservation_of_the_request_names_the_lines(served: Served) -> None:
    await served.stub.GetReservation(
        pb.GetReservationRequest(reservation_id=RESERVATION), metadata=AUTH
    )
    [inside] = served.lines("ticketing_service.test_handler")
    [finished] = served.lines()
    assert inside["reservation_id"] == finished["reservation_id"] == RESERVATION


@pytest.mark.parametrize(
    ("request_id", "reservation_id"),
    [
        ("evt-4242-4242-4242-4242", "whsec_c2lnbmluZy1rZXk="),
        ("Bearer sk_live_X", "4242 4242 4242 4242"),
        (f"a rpc=CancelEvent reservation_id={RESERVATION}", RESERVATION.upper()),
    ],
)
async def test_the_per_call_line_never_carries_a_callers_secret_from_its_id_or_request(
    served: Served, request_id: str, reservation_id: str
) -> None:
    # The per-call line skips redaction: what it takes from the caller must be safe as it is.
    metadata = (*AUTH, ("x-request-id", request_id))
    call = served.stub.GetReservation(
        pb.GetReservationRequest(reservation_id=reservation_id), metadata=metadata
    )
    assert await failed(call) == grpc.StatusCode.NOT_FOUND
    await served.waiter.wait_for(1)  # an aborted call's status can reach the client first
    [line] = served.lines()
    assert uuid.UUID(line["request_id"]).version == 4
    assert "reservation_id" not in line
    assert reservation_id not in served.logs.getvalue()
    assert "4242" not in served.logs.getvalue()


async def test_a_refused_call_logs_its_code_and_reason(served: Served) -> None:
    busy = served.stub.GetTicketingSettings(
        pb.GetTicketingSettingsRequest(event_id="busy"), metadata=AUTH
    )
    assert await failed(busy) == grpc.StatusCode.ABORTED
    await served.waiter.wait_for(1)  # an aborted call's status can reach the client first
    [line] = served.lines()
    assert (line["grpc_code"], line["reason"], line["level"]) == (
        "ABORTED",
        "CONCURRENT_UPDATE",
        "INFO",
    )


async def test_a_call_refused_by_the_token_check_is_logged_too(served: Served) -> None:
    call = served.stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id="e"))
    assert await failed(call) == grpc.StatusCode.UNAUTHENTICATED
    await served.waiter.wait_for(1)  # an aborted call's status can reach the client first
    [line] = served.lines()
    assert (line["grpc_code"], line["reason"]) == ("UNAUTHENTICATED", "UNAUTHENTICATED")
    assert served.lines("ticketing_service.test_handler") == []


async def test_only_a_call_refused_unread_for_its_caller_s_doing_is_sampled(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "ticketing_service.rpc")
    calls = {
        "UNAUTHENTICATED": pb.GetTicketingSettingsRequest(event_id="e"),
        "OK": pb.GetTicketingSettingsRequest(event_id="e"),
        "ABORTED": pb.GetTicketingSettingsRequest(event_id="busy"),
        "UNKNOWN": pb.GetTicketingSettingsRequest(event_id="boom"),
    }
    for code, request in calls.items():
        metadata = () if code == "UNAUTHENTICATED" else AUTH
        with contextlib.suppress(grpc.aio.AioRpcError):
            await served.stub.GetTicketingSettings(request, metadata=metadata)
    await served.waiter.wait_for(len(calls))  # an aborted call's status can reach the client first
    marked = {
        vars(record)["grpc_code"]: vars(record).get(CALLER_NOISE_FLAG, False)
        for record in caplog.records
        if record.name == "ticketing_service.rpc"
    }
    assert marked == {"UNAUTHENTICATED": True, "OK": False, "ABORTED": False, "UNKNOWN": False}


async def test_an_unexpected_failure_is_a_warning_without_the_secret(served: Served) -> None:
    boom = served.stub.GetTicketingSettings(
        pb.GetTicketingSettingsRequest(event_id="boom"), metadata=AUTH
    )
    assert await failed(boom) == grpc.StatusCode.UNKNOWN
    [line] = served.lines()
    assert (line["grpc_code"], line["level"]) == ("UNKNOWN", "WARNING")
    assert SECRET not in served.logs.getvalue()


async def test_a_stream_logs_one_line_when_it_ends(served: Served) -> None:
    call = served.stub.WatchRegistrationEvents(
        pb.WatchRegistrationEventsRequest(after_sequence=0), metadata=AUTH
    )
    assert [r.event.sequence async for r in call] == [1, 2]
    [line] = served.lines()
    assert (line["rpc"], line["grpc_code"]) == ("WatchRegistrationEvents", "OK")


async def test_a_stream_the_client_leaves_is_logged_as_cancelled(served: Served) -> None:
    call = served.stub.WatchRegistrationEvents(
        pb.WatchRegistrationEventsRequest(after_sequence=99), metadata=AUTH
    )
    assert (await call.read()).event.sequence == 1
    call.cancel()
    await served.waiter.wait_for(1)
    [line] = served.lines()
    assert (line["rpc"], line["grpc_code"]) == ("WatchRegistrationEvents", "CANCELLED")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint, keyed by name and sorted labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


async def test_calls_are_counted_and_timed_by_method_and_code_on_the_metrics_port(
    served: Served,
) -> None:
    ok = pb.GetTicketingSettingsRequest(event_id="e")
    await served.stub.GetTicketingSettings(ok, metadata=AUTH)
    await served.stub.GetTicketingSettings(ok, metadata=AUTH)
    busy = pb.GetTicketingSettingsRequest(event_id="busy")
    await failed(served.stub.GetTicketingSettings(busy, metadata=AUTH))
    missing = pb.GetReservationRequest(reservation_id="00000000-0000-4000-8000-000000000000")
    await failed(served.stub.GetReservation(missing, metadata=AUTH))
    await served.metrics.wait_for_calls(4)  # an aborted call's status can reach the client first

    endpoint = start_metrics_server("127.0.0.1:0", served.metrics.registry)
    try:
        samples = await asyncio.to_thread(scrape, endpoint.port)
    finally:
        endpoint.close()

    settings = {"service": SERVICE, "method": "GetTicketingSettings"}
    assert samples["ticketing_rpc_handled_total", labels(**settings, code="OK")] == 2
    assert samples["ticketing_rpc_handled_total", labels(**settings, code="ABORTED")] == 1
    assert samples["ticketing_rpc_duration_seconds_count", labels(**settings, code="OK")] == 2
    assert samples["ticketing_lock_timeouts_total", labels(method="GetTicketingSettings")] == 1
    reservation = {"service": SERVICE, "method": "GetReservation"}
    assert (
        samples["ticketing_rpc_errors_total", labels(**reservation, reason="RESERVATION_NOT_FOUND")]
        == 1
    )


async def test_the_health_check_works_behind_the_interceptors_and_is_not_logged(
    served: Served,
) -> None:
    check = await served.health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    handled = {"service": "grpc.health.v1.Health", "method": "Check", "code": "OK"}
    await served.metrics.wait_for_calls(1)
    assert served.metrics.registry.get_sample_value("ticketing_rpc_handled_total", handled) == 1
    assert served.lines() == []  # probes are logged at DEBUG only


async def test_a_health_watch_streams_behind_the_interceptors_and_is_counted(
    served: Served,
) -> None:
    # Watch is a stream written with `context.write`, not an async generator.
    watch = served.health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    handled = {"service": "grpc.health.v1.Health", "method": "Watch", "code": "CANCELLED"}
    await served.metrics.wait_for_calls(1)
    assert served.metrics.registry.get_sample_value("ticketing_rpc_handled_total", handled) == 1


async def test_a_code_the_health_servicer_answers_is_counted(served: Served) -> None:
    unknown = served.health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert await failed(unknown) == grpc.StatusCode.NOT_FOUND
    handled = {"service": "grpc.health.v1.Health", "method": "Check", "code": "NOT_FOUND"}
    await served.metrics.wait_for_calls(1)
    assert served.metrics.registry.get_sample_value("ticketing_rpc_handled_total", handled) == 1


async def test_a_call_to_a_method_nobody_serves_is_not_observed_so_its_path_is_never_logged(
    served: Served,
) -> None:
    # The per-call line skips redaction because it holds only a registered method's path.
    unknown: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = served.channel.unary_unary(
        f"/x/Bearer {SECRET}"
    )
    assert await failed(unknown(b"", metadata=AUTH)) == grpc.StatusCode.UNIMPLEMENTED
    assert served.lines() == []
    assert SECRET not in served.logs.getvalue()
