"""UpdateTicketingSettings and GetTicketingSettings through the real server on real Postgres."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb

from tests.integration.conftest import DEFAULT_ACCOUNT
from tests.postgres import sql
from tests.rich_errors import rich_error

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import (
        TicketingServiceAsyncStub as Stub,
    )


def tier(tier_id: str, price: int = 0, capacity: int | None = None) -> settings_pb2.TierInput:
    message = settings_pb2.TierInput(tier_id=tier_id, name=f"Tier {tier_id}", price_amount=price)
    if capacity is not None:
        message.capacity = capacity
    return message


async def update(stub: Stub, **fields: object) -> pb.UpdateTicketingSettingsResponse:
    fields.setdefault("event_id", "event-1")
    request = pb.UpdateTicketingSettingsRequest(**fields)  # type: ignore[arg-type]  # fields of mixed types, checked by protobuf at runtime
    return await stub.UpdateTicketingSettings(request)


async def test_a_paid_tier_makes_the_event_paid_with_the_requested_account_and_currency(
    stub: Stub,
) -> None:
    response = await update(
        stub,
        tiers=[tier("free"), tier("vip", price=1050, capacity=20)],
        currency_code="USD",
        provider_account_id="acct-1",
    )
    settings = response.settings
    assert settings.mode == settings_pb2.TICKETING_MODE_PAID
    assert (settings.provider, settings.provider_account_id) == ("portone", "acct-1")
    assert (settings.currency_code, settings.enabled, settings.legacy) == ("USD", True, False)
    assert [(t.tier_id, t.price_amount) for t in settings.tiers] == [("free", 0), ("vip", 1050)]
    assert settings.tiers[1].capacity == 20
    assert not settings.tiers[0].HasField("capacity")


async def test_a_paid_event_defaults_to_krw_and_the_default_account(stub: Stub) -> None:
    settings = (await update(stub, tiers=[tier("general", price=15000)])).settings
    assert (settings.currency_code, settings.provider_account_id) == ("KRW", DEFAULT_ACCOUNT)


async def test_only_free_tiers_make_the_event_free_without_provider_account_or_currency(
    stub: Stub,
) -> None:
    settings = (await update(stub, tiers=[tier("a"), tier("b")], currency_code="USD")).settings
    assert settings.mode == settings_pb2.TICKETING_MODE_FREE
    assert (settings.provider, settings.provider_account_id, settings.currency_code) == ("", "", "")
    assert not settings.enabled


async def test_a_non_empty_external_url_makes_the_event_external(stub: Stub) -> None:
    settings = (
        await update(stub, tiers=[tier("paid", 5000)], external_url="https://tickets.example/e1")
    ).settings
    assert settings.mode == settings_pb2.TICKETING_MODE_EXTERNAL
    assert settings.external_url == "https://tickets.example/e1"
    assert settings.provider == ""


async def test_an_external_event_stays_external_when_external_url_is_not_set(stub: Stub) -> None:
    await update(stub, tiers=[tier("a")], external_url="https://tickets.example/e1")
    settings = (await update(stub, tiers=[tier("b", 3000)])).settings
    assert settings.mode == settings_pb2.TICKETING_MODE_EXTERNAL
    assert settings.external_url == "https://tickets.example/e1"
    assert [t.tier_id for t in settings.tiers] == ["b"]


async def test_an_explicit_empty_external_url_moves_the_event_off_external(stub: Stub) -> None:
    await update(stub, tiers=[tier("a")], external_url="https://tickets.example/e1")
    settings = (await update(stub, tiers=[tier("b", 3000)], external_url="")).settings
    assert settings.mode == settings_pb2.TICKETING_MODE_PAID
    assert settings.external_url == ""


def insert_legacy_settings(database_url: str, event_id: str) -> None:
    sql(
        database_url,
        "INSERT INTO ticketing_settings (event_id, mode, provider, provider_account_id,"
        " currency_code, enabled, legacy) VALUES ($1, 'paid', 'portone', 'legacy-acct',"
        " 'KRW', true, true)",
        event_id,
    )


async def test_a_legacy_event_keeps_mode_provider_account_and_flag_when_tiers_change(
    stub: Stub, database_url: str
) -> None:
    insert_legacy_settings(database_url, "event-1")
    settings = (await update(stub, tiers=[tier("free-only")], provider_account_id="new")).settings
    assert settings.mode == settings_pb2.TICKETING_MODE_PAID
    assert (settings.provider, settings.provider_account_id) == ("portone", "legacy-acct")
    assert settings.legacy
    assert [t.tier_id for t in settings.tiers] == ["free-only"]


async def test_an_explicit_empty_external_url_clears_the_legacy_flag(
    stub: Stub, database_url: str
) -> None:
    insert_legacy_settings(database_url, "event-1")
    settings = (await update(stub, tiers=[tier("a")], external_url="")).settings
    assert settings.mode == settings_pb2.TICKETING_MODE_FREE
    assert not settings.legacy
    assert settings.provider_account_id == ""


def add_reservation(
    database_url: str, tier_id: str, status: str, expires_in: timedelta
) -> tuple[uuid.UUID, str]:
    reservation_id, user_id = uuid.uuid4(), f"user-{uuid.uuid4()}"
    sql(
        database_url,
        "INSERT INTO reservations (reservation_id, event_id, tier_id, user_id, status, amount,"
        " currency_code, provider, success_url, cancel_url, expire_time)"
        " VALUES ($1, 'event-1', $2, $3, $4, 1000, 'KRW', 'portone', 'https://s', 'https://c',"
        " now() + $5)",
        reservation_id,
        tier_id,
        user_id,
        status,
        expires_in,
    )
    return reservation_id, user_id


def mark_accepted(database_url: str, tier_id: str) -> None:
    reservation_id, user_id = add_reservation(database_url, tier_id, "confirmed", timedelta(0))
    sql(
        database_url,
        "INSERT INTO registrations (registration_id, reservation_id, event_id, tier_id,"
        " user_id, status) VALUES ($1, $2, 'event-1', $3, $4, 'accepted')",
        uuid.uuid4(),
        reservation_id,
        tier_id,
        user_id,
    )


async def test_a_removed_tier_with_a_live_hold_or_a_registration_is_retained_not_on_sale(
    stub: Stub, database_url: str
) -> None:
    tiers = [tier(t, 1000) for t in ("held", "sold", "expired-hold", "cancelled", "unused")]
    await update(stub, tiers=tiers)
    add_reservation(database_url, "held", "pending_payment", timedelta(minutes=5))
    mark_accepted(database_url, "sold")
    add_reservation(database_url, "expired-hold", "pending_payment", timedelta(minutes=-1))
    add_reservation(database_url, "cancelled", "cancelled", timedelta(minutes=5))

    response = await update(stub, tiers=[tier("new", 2000)])

    assert sorted(response.retained_tier_ids) == ["held", "sold"]
    kept = {t.tier_id: t.retained for t in response.settings.tiers}
    assert kept == {"new": False, "held": True, "sold": True}
    fetched = await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id="event-1"))
    assert fetched.settings == response.settings


async def test_a_retained_tier_offered_again_is_on_sale_again(
    stub: Stub, database_url: str
) -> None:
    await update(stub, tiers=[tier("held", 1000)])
    add_reservation(database_url, "held", "pending_payment", timedelta(minutes=5))
    await update(stub, tiers=[])
    settings = (await update(stub, tiers=[tier("held", 1200)])).settings
    assert [(t.tier_id, t.retained, t.price_amount) for t in settings.tiers] == [
        ("held", False, 1200)
    ]


async def test_a_deleted_tier_with_old_reservations_can_be_deleted_and_offered_again(
    stub: Stub, database_url: str
) -> None:
    await update(stub, tiers=[tier("old", 1000)])
    add_reservation(database_url, "old", "expired", timedelta(minutes=-5))
    assert [t.tier_id for t in (await update(stub, tiers=[])).settings.tiers] == []
    again = (await update(stub, tiers=[tier("old", 500)])).settings
    assert [(t.tier_id, t.price_amount) for t in again.tiers] == [("old", 500)]


async def test_sale_window_and_update_time_round_trip(stub: Stub) -> None:
    start = datetime(2030, 1, 1, 9, tzinfo=UTC)
    message = tier("early", 1000)
    message.sale_start_time.FromDatetime(start)
    message.sale_end_time.FromDatetime(start + timedelta(days=7))
    settings = (await update(stub, tiers=[message])).settings
    assert settings.tiers[0].sale_start_time.ToDatetime(tzinfo=UTC) == start
    assert settings.tiers[0].sale_end_time.ToDatetime(tzinfo=UTC) == start + timedelta(days=7)
    assert settings.update_time.seconds > 0


async def test_getting_settings_of_an_unknown_event_is_event_not_found(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id="nope"))
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "EVENT_NOT_FOUND")
    assert (error.domain, error.metadata) == ("ticketing.moim.social", {"eventId": "nope"})


def rule(hours: int, percent: int) -> settings_pb2.RefundRule:
    return settings_pb2.RefundRule(min_hours_before_start=hours, percent=percent)


async def test_the_event_start_and_refund_policy_round_trip_and_are_replaced_by_each_update(
    stub: Stub,
) -> None:
    start = Timestamp(seconds=1_800_000_000)
    policy = [rule(48, 100), rule(0, 20)]
    saved = await update(
        stub, tiers=[tier("vip", price=100)], event_start_time=start, refund_policy=policy
    )
    read = await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id="event-1"))
    for settings in (saved.settings, read.settings):
        assert settings.event_start_time == start
        assert list(settings.refund_policy) == policy

    again = (await update(stub, tiers=[tier("vip", price=100)])).settings

    assert not again.HasField("event_start_time")
    assert list(again.refund_policy) == []  # Moim's published policy


def far_timestamp() -> Timestamp:
    return Timestamp(seconds=253402300800 + 10)  # past year 9999


YEAR_ONE = Timestamp(seconds=-62135596800)  # 0001-01-01T00:00:00Z
LAST_NANOSECOND = Timestamp(seconds=253402300799, nanos=999_999_999)  # of 9999


def timed_tier(
    start: Timestamp | None = None, end: Timestamp | None = None
) -> settings_pb2.TierInput:
    return settings_pb2.TierInput(
        tier_id="a", name="A", price_amount=1000, sale_start_time=start, sale_end_time=end
    )


INVALID_UPDATES: list[tuple[dict[str, object], list[str]]] = [
    ({"event_id": ""}, ["event_id"]),
    ({"event_id": "x" * 129}, ["event_id"]),
    ({"event_id": " padded "}, ["event_id"]),
    ({"tiers": [tier("a", price=-1)]}, ["tiers[0].price_amount"]),
    ({"tiers": [tier("a", price=2**60)]}, ["tiers[0].price_amount"]),
    ({"tiers": [tier("")]}, ["tiers[0].tier_id"]),
    ({"tiers": [settings_pb2.TierInput(tier_id="a", name=" ")]}, ["tiers[0].name"]),
    ({"tiers": [tier("a"), tier("a")]}, ["tiers[1].tier_id"]),
    ({"tiers": [tier(str(i)) for i in range(101)]}, ["tiers"]),
    ({"currency_code": "XYZ"}, ["currency_code"]),
    ({"currency_code": "krw"}, ["currency_code"]),
    ({"external_url": "javascript:alert(1)"}, ["external_url"]),
    ({"provider_account_id": "a" * 129}, ["provider_account_id"]),
    ({"event_title": "t" * 301}, ["event_title"]),
    (
        {
            "tiers": [
                settings_pb2.TierInput(
                    tier_id="a",
                    name="A",
                    sale_start_time=Timestamp(seconds=2000),
                    sale_end_time=Timestamp(seconds=1000),
                )
            ]
        },
        ["tiers[0].sale_end_time"],
    ),
    (
        {"tiers": [settings_pb2.TierInput(tier_id="a", name="A", sale_start_time=far_timestamp())]},
        ["tiers[0].sale_start_time"],
    ),
    ({"event_id": "", "tiers": [tier("a", price=-5)]}, ["event_id", "tiers[0].price_amount"]),
    ({"event_start_time": Timestamp(seconds=-1)}, ["event_start_time"]),
    # Postgres keeps these two as -infinity and infinity, read back naive: every hold of the
    # tier then failed INTERNAL.
    ({"tiers": [timed_tier(start=YEAR_ONE)]}, ["tiers[0].sale_start_time"]),
    ({"tiers": [timed_tier(end=LAST_NANOSECOND)]}, ["tiers[0].sale_end_time"]),
    ({"event_start_time": LAST_NANOSECOND}, ["event_start_time"]),
    ({"refund_policy": [rule(24, 50), rule(24, 70)]}, ["refund_policy"]),
    ({"refund_policy": [rule(24, 101)]}, ["refund_policy"]),
    ({"refund_policy": [rule(-1, 50)]}, ["refund_policy"]),
    ({"refund_policy": [rule(h, 10) for h in range(21)]}, ["refund_policy"]),
    (
        {"event_title": "a\x00", "tiers": [tier("b\x00")]},
        ["event_title", "tiers[0].name", "tiers[0].tier_id"],
    ),
]


@pytest.mark.parametrize(("fields", "bad_fields"), INVALID_UPDATES)
async def test_invalid_updates_are_invalid_argument_with_field_violations_and_store_nothing(
    stub: Stub, fields: dict[str, object], bad_fields: list[str]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await update(stub, **fields)
    error = rich_error(caught.value)
    assert (error.code, error.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert sorted(set(error.fields)) == sorted(bad_fields)
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id="event-1"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("event_id", ["", "y" * 129])
async def test_getting_settings_with_a_bad_event_id_is_invalid_argument(
    stub: Stub, event_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id=event_id))
    error = rich_error(caught.value)
    assert (error.code, error.fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["event_id"])


async def test_zero_or_negative_capacity_means_unlimited(stub: Stub) -> None:
    settings = (await update(stub, tiers=[tier("a", 100, capacity=0), tier("b", 100, -3)])).settings
    assert [t.HasField("capacity") for t in settings.tiers] == [False, False]
