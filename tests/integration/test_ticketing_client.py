"""The hand-written TicketingClient against the real server: token, deadlines, rich errors."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from moim.ticketing.client import RetryPolicy, TicketingClient, TicketingError
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.postgres import open_transaction
from tests.tcp_proxy import SilentProxy, from_another_host
from ticketing_service.entrypoints.grpc.errors import ERROR_DOMAIN
from ticketing_service.entrypoints.grpc.server import RunningServer, ServerLimits, start_server
from ticketing_service.service_layer.dependencies import Dependencies

TOKEN = "client-token"
BURST = 100
# More attempts than the default 4, over a longer deadline: on a machine loaded by other work the
# server took long enough to work through the burst that 4 of 100 calls used up 4 attempts.
PATIENT = RetryPolicy(max_attempts=10)


@pytest.fixture
async def guarded_server(deps: Dependencies) -> AsyncIterator[RunningServer]:
    running = await start_server(deps, "127.0.0.1:0", tokens=[TOKEN])
    yield running
    await running.stop(0)


@pytest.fixture
async def client(guarded_server: RunningServer) -> AsyncIterator[TicketingClient]:
    async with TicketingClient.connect(f"127.0.0.1:{guarded_server.port}", token=TOKEN) as client:
        yield client


async def test_calls_carry_the_token_and_return_typed_responses(client: TicketingClient) -> None:
    tier = settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=1000, capacity=1)
    await client.update_ticketing_settings(
        pb.UpdateTicketingSettingsRequest(event_id="event-1", tiers=[tier])
    )
    started = await client.start_paid_registration(
        pb.StartPaidRegistrationRequest(event_id="event-1", tier_id="vip", user_id="user-1")
    )
    read = await client.get_reservation(
        pb.GetReservationRequest(reservation_id=started.reservation.reservation_id)
    )
    assert read.reservation == started.reservation


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        (f"{TOKEN}, retired", "EVENT_NOT_FOUND"),
        (f"retired,{TOKEN}", "UNAUTHENTICATED"),
        # Blank entries are skipped, as the server and the shim read the list.
        (f" ,{TOKEN}", "EVENT_NOT_FOUND"),
    ],
)
async def test_a_rotation_list_sends_its_first_token(
    guarded_server: RunningServer, tokens: str, reason: str
) -> None:
    target = f"127.0.0.1:{guarded_server.port}"
    async with TicketingClient.connect(target, token=tokens) as client:
        with pytest.raises(TicketingError) as caught:
            await client.get_ticketing_settings(pb.GetTicketingSettingsRequest(event_id="e"))
    assert caught.value.reason == reason


async def test_a_missing_token_is_unauthenticated(guarded_server: RunningServer) -> None:
    async with TicketingClient.connect(f"127.0.0.1:{guarded_server.port}") as client:
        with pytest.raises(TicketingError) as caught:
            await client.get_ticketing_settings(pb.GetTicketingSettingsRequest(event_id="e"))
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


async def test_a_not_found_carries_its_reason_domain_and_metadata(client: TicketingClient) -> None:
    reservation_id = str(uuid.uuid4())
    with pytest.raises(TicketingError) as caught:
        await client.get_reservation(pb.GetReservationRequest(reservation_id=reservation_id))
    error = caught.value
    assert (error.code, error.reason, error.domain) == (
        grpc.StatusCode.NOT_FOUND,
        "RESERVATION_NOT_FOUND",
        ERROR_DOMAIN,
    )
    assert error.metadata == {"reservationId": reservation_id}
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)


async def test_invalid_input_lists_the_bad_fields(client: TicketingClient) -> None:
    with pytest.raises(TicketingError) as caught:
        await client.confirm_payment(pb.ConfirmPaymentRequest(reservation_id="nope", amount=-1))
    error = caught.value
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    fields = {violation.field for violation in error.field_violations}
    assert {"reservation_id", "checkout_id", "amount"} <= fields
    assert all(violation.description for violation in error.field_violations)


async def test_an_unreachable_server_is_unavailable_without_a_reason() -> None:
    async with TicketingClient.connect("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(TicketingError) as caught:
            await client.get_ticketing_settings(pb.GetTicketingSettingsRequest(event_id="e"))
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "")


async def test_a_call_past_its_deadline_is_deadline_exceeded(
    client: TicketingClient, guarded_server: RunningServer, database_url: str
) -> None:
    tier = settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=1000, capacity=1)
    await client.update_ticketing_settings(
        pb.UpdateTicketingSettingsRequest(event_id="event-1", tiers=[tier])
    )
    target = f"127.0.0.1:{guarded_server.port}"
    # The tier's row is locked, so the server cannot answer before its 2 s lock timeout.
    async with (
        open_transaction(database_url) as holder,
        TicketingClient.connect(target, token=TOKEN, timeout=0.2) as hurried,
    ):
        await holder.execute("SELECT 1 FROM tiers WHERE tier_id = 'vip' FOR UPDATE")
        with pytest.raises(TicketingError) as caught:
            await hurried.start_paid_registration(
                pb.StartPaidRegistrationRequest(event_id="event-1", tier_id="vip", user_id="u")
            )
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_timeout_must_be_positive() -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(ValueError, match="timeout"):
            TicketingClient(channel, timeout=0)


@pytest.mark.parametrize("token", ["\u2026", "tok\u200b", "new tok,old-tok", "caf\u00e9"])
async def test_a_token_a_header_cannot_carry_is_refused_at_construction(token: str) -> None:
    with pytest.raises(ValueError, match="visible ASCII") as refused:
        TicketingClient.connect("127.0.0.1:1", token=token)
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:
        with pytest.raises(ValueError, match="visible ASCII"):
            TicketingClient(channel, token=token)

    assert token.split(",")[0].strip() not in str(refused.value)


async def test_the_refund_calls_are_typed_and_carry_their_reasons(client: TicketingClient) -> None:
    tier = settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=1000, capacity=1)
    await client.update_ticketing_settings(
        pb.UpdateTicketingSettingsRequest(event_id="event-1", tiers=[tier])
    )
    started = await client.start_paid_registration(
        pb.StartPaidRegistrationRequest(event_id="event-1", tier_id="vip", user_id="user-1")
    )

    with pytest.raises(TicketingError) as unpaid:
        await client.cancel_registration(
            pb.CancelRegistrationRequest(
                reservation_id=started.reservation.reservation_id, user_id="user-1"
            )
        )
    cancelled = await client.cancel_event(pb.CancelEventRequest(event_id="event-1"))
    progress = await client.get_event_cancellation(
        pb.GetEventCancellationRequest(event_id="event-1")
    )
    with pytest.raises(TicketingError) as unknown:
        await client.refresh_refund(pb.RefreshRefundRequest(refund_id=str(uuid.uuid4())))

    assert unpaid.value.reason == "REGISTRATION_NOT_CANCELLABLE"
    assert cancelled.cancellation.reservations_total == 1  # the live hold
    assert progress.cancellation.event_id == "event-1"
    assert unknown.value.reason == "REFUND_NOT_FOUND"


async def test_a_quiet_feed_stream_ends_unavailable_once_the_server_stops_answering_pings(
    deps: Dependencies,
) -> None:
    # The stream has no deadline: to a server whose machine died, or whose network dropped
    # without a reset, a feed stream with nothing to say waited forever.
    running = await start_server(deps, "127.0.0.1:0", tokens=[TOKEN])
    try:
        async with SilentProxy(from_another_host(running.port)).running() as proxy:
            target = f"127.0.0.1:{proxy.port}"
            async with TicketingClient.connect(target, token=TOKEN, keepalive_seconds=2) as client:
                page = await client.list_registration_events(pb.ListRegistrationEventsRequest())
                events = client.watch_registration_events(
                    pb.WatchRegistrationEventsRequest(after_sequence=page.next_sequence)
                )
                proxy.silence_open_connections()
                with pytest.raises(TicketingError) as caught:
                    async with asyncio.timeout(30):
                        await anext(events)
    finally:
        await running.stop(0)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_a_cold_burst_past_the_servers_limits_is_answered_in_full(
    deps: Dependencies,
) -> None:
    # A server that runs 4 calls at once takes 8 streams per connection. A fresh client sends
    # the whole burst before it learns that: the streams past 8 are refused (REFUSED_STREAM,
    # UNAVAILABLE), and the calls past 4 running are refused SERVER_BUSY. Nothing of a refused
    # call ran, so the client's retries answer them all; without them 77-92 failed.
    limits = ServerLimits(max_concurrent_rpcs=4)
    running = await start_server(deps, "127.0.0.1:0", tokens=[TOKEN], limits=limits)
    target = f"127.0.0.1:{running.port}"
    tier = settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=1000)
    get = pb.GetTicketingSettingsRequest(event_id="event-1")
    try:
        async with TicketingClient.connect(target, token=TOKEN) as setup:
            await setup.update_ticketing_settings(
                pb.UpdateTicketingSettingsRequest(event_id="event-1", tiers=[tier])
            )
        async with TicketingClient.connect(target, token=TOKEN, timeout=60, retry=PATIENT) as fresh:
            answers = await asyncio.gather(
                *(fresh.get_ticketing_settings(get) for _ in range(BURST)), return_exceptions=True
            )
    finally:
        await running.stop(0)
    failures = Counter(
        f"{answer.code.name} {answer.reason}".strip()
        if isinstance(answer, TicketingError)
        else repr(answer)
        for answer in answers
        if isinstance(answer, BaseException)
    )
    assert failures == Counter()
