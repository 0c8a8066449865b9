"""The Python client's retries, against a small in-process gRPC server that fails on purpose.

The server's GetTicketingSettings fails a set number of times with a given code and ErrorInfo
reason, then answers; it counts the attempts and notes the deadline each one carried. The
policies here wait 0 s between attempts unless a test is about the deadline, so every test
counts attempts rather than timing them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from moim.ticketing.client import (
    NO_RETRY,
    RetryPolicy,
    TicketingClient,
    TicketingError,
    reconnect_options,
)
from moim.ticketing.v1 import ticketing_service_pb2 as pb

SERVICE = "moim.ticketing.v1.TicketingService"
GET = pb.GetTicketingSettingsRequest(event_id="event-1")
# Retries at once: the tests count attempts, they never wait for a back-off.
AT_ONCE = RetryPolicy(initial_backoff_seconds=0, max_backoff_seconds=0)


def failure(code: grpc.StatusCode, reason: str = "") -> grpc.Status:
    """A status as the service sends it: the code, and an ErrorInfo when there is a reason."""
    details = []
    if reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="ticketing.moim"))
        details.append(packed)
    status = status_pb2.Status(code=code.value[0], message="Failed on purpose.", details=details)
    return cast(grpc.Status, rpc_status.to_status(status))


class FlakyService:
    """Fails the first `failures` calls with `status`, then answers; counts every attempt."""

    def __init__(self, status: grpc.Status, failures: int) -> None:
        self.status = status
        self.failures = failures
        self.attempts = 0
        # Per attempt: the deadline it carried, on this process's monotonic clock.
        self.deadlines: list[float] = []

    async def get(self, request: pb.GetTicketingSettingsRequest, context: Any) -> Any:
        self.attempts += 1
        self.deadlines.append(time.monotonic() + context.time_remaining())
        if self.attempts <= self.failures:
            await context.abort_with_status(self.status)
        return pb.GetTicketingSettingsResponse()

    async def watch(self, request: pb.WatchRegistrationEventsRequest, context: Any) -> None:
        self.attempts += 1
        await context.abort_with_status(self.status)


@asynccontextmanager
async def serving(service: FlakyService) -> AsyncIterator[str]:
    """The service on a port of its own; yields its address."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "GetTicketingSettings": grpc.unary_unary_rpc_method_handler(
            service.get,
            request_deserializer=pb.GetTicketingSettingsRequest.FromString,
            response_serializer=pb.GetTicketingSettingsResponse.SerializeToString,
        ),
        "WatchRegistrationEvents": grpc.unary_stream_rpc_method_handler(
            service.watch,
            request_deserializer=pb.WatchRegistrationEventsRequest.FromString,
            response_serializer=pb.WatchRegistrationEventsResponse.SerializeToString,
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def attempts_of_a_call(
    service: FlakyService, retry: RetryPolicy = AT_ONCE, deadline: float = 10.0
) -> TicketingError | None:
    """Make one GetTicketingSettings call; its error, or None when it was answered."""
    async with (
        serving(service) as target,
        TicketingClient.connect(target, timeout=deadline, retry=retry) as client,
    ):
        try:
            await client.get_ticketing_settings(GET)
        except TicketingError as error:
            return error
    return None


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, ""),
        (grpc.StatusCode.UNAVAILABLE, "SERVER_STOPPING"),
        (grpc.StatusCode.ABORTED, "CONCURRENT_UPDATE"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY"),
        (grpc.StatusCode.CANCELLED, ""),
    ],
)
async def test_a_failure_a_retry_may_fix_is_retried_until_answered(
    code: grpc.StatusCode, reason: str
) -> None:
    service = FlakyService(failure(code, reason), failures=3)

    error = await attempts_of_a_call(service)

    assert error is None
    assert service.attempts == 4


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        # Another RESOURCE_EXHAUSTED (a message over the size limit, or too many watchers)
        # would only fail again.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_WATCHERS"),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (grpc.StatusCode.FAILED_PRECONDITION, "SOLD_OUT"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ""),
    ],
)
async def test_a_failure_a_retry_cannot_fix_is_raised_at_once(
    code: grpc.StatusCode, reason: str
) -> None:
    service = FlakyService(failure(code, reason), failures=1)

    error = await attempts_of_a_call(service)

    assert error is not None
    assert (error.code, error.reason) == (code, reason)
    assert service.attempts == 1


async def test_the_attempts_are_capped_and_the_last_failure_is_raised() -> None:
    service = FlakyService(failure(grpc.StatusCode.UNAVAILABLE, "SERVER_STOPPING"), failures=100)

    error = await attempts_of_a_call(service)

    assert error is not None
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_STOPPING")
    assert service.attempts == RetryPolicy().max_attempts == 4


async def test_one_attempt_means_no_retry() -> None:
    service = FlakyService(failure(grpc.StatusCode.UNAVAILABLE), failures=1)

    error = await attempts_of_a_call(service, retry=NO_RETRY)

    assert error is not None
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert service.attempts == 1


async def test_every_attempt_carries_what_is_left_of_the_one_deadline() -> None:
    # Retries without end but for the deadline, each after a short random wait.
    endless = RetryPolicy(
        max_attempts=1_000_000, initial_backoff_seconds=0.05, max_backoff_seconds=0.05
    )
    service = FlakyService(failure(grpc.StatusCode.UNAVAILABLE), failures=1_000_000)

    error = await attempts_of_a_call(service, retry=endless, deadline=1.0)

    # It stopped retrying while there was time left, so the failure worth reporting is raised
    # rather than a DEADLINE_EXCEEDED of an attempt begun too late.
    assert error is not None
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert 1 < service.attempts < endless.max_attempts
    # Every attempt carried the first one's deadline, not a whole timeout from its own start
    # (which would have moved each one later by the time spent so far, up to 1 s).
    first = service.deadlines[0]
    assert all(math.isclose(d, first, abs_tol=0.1) for d in service.deadlines)


async def test_the_feed_stream_is_never_retried() -> None:
    service = FlakyService(failure(grpc.StatusCode.UNAVAILABLE), failures=100)

    async with (
        serving(service) as target,
        TicketingClient.connect(target, retry=AT_ONCE) as client,
    ):
        events = client.watch_registration_events(pb.WatchRegistrationEventsRequest())
        with pytest.raises(TicketingError) as caught:
            await anext(events)

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert service.attempts == 1


def test_each_back_off_is_at_most_its_doubling_ceiling() -> None:
    policy = RetryPolicy(initial_backoff_seconds=0.1, max_backoff_seconds=0.5)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (10, 0.5)]:
        waits = [policy.backoff_seconds(retry) for _ in range(100)]
        assert all(0 <= wait <= ceiling for wait in waits)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"initial_backoff_seconds": -0.1}, "initial_backoff_seconds"),
        ({"initial_backoff_seconds": math.nan}, "initial_backoff_seconds"),
        ({"max_backoff_seconds": math.inf}, "max_backoff_seconds"),
        ({"initial_backoff_seconds": 3.0, "max_backoff_seconds": 2.0}, "max_backoff_seconds"),
    ],
)
def test_a_retry_policy_refuses_values_it_cannot_follow(
    arguments: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        RetryPolicy(**arguments)


async def test_a_client_closed_while_it_waits_to_retry_raises_the_last_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Before, the retry called the closed channel: grpc.aio.UsageError, not a TicketingError.
    waiting = asyncio.Event()

    def back_off(policy: RetryPolicy, retry: int) -> float:
        waiting.set()
        return 2.0  # time enough to close the client before the retry

    monkeypatch.setattr(RetryPolicy, "backoff_seconds", back_off)
    service = FlakyService(failure(grpc.StatusCode.UNAVAILABLE), failures=100)
    async with serving(service) as target:
        client = TicketingClient.connect(target, timeout=30)
        call = asyncio.ensure_future(client.get_ticketing_settings(GET))
        await waiting.wait()
        await client.aclose()
        with pytest.raises(TicketingError) as caught:
            await call

    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert service.attempts == 1


@pytest.mark.parametrize("seconds", [0, -1, float("nan"), float("inf")])
def test_reconnect_options_refuse_a_back_off_that_is_not_a_positive_time(seconds: float) -> None:
    with pytest.raises(ValueError, match="max_seconds"):
        reconnect_options(seconds)
