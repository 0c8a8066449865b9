"""The handlers on fakes of their ports: every branch, in milliseconds."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.fakes import FakeCheckouts, FakeDatabase
from ticketing_service.domain.refunds import RefundRetryPolicy
from ticketing_service.domain.reservations import Answer
from ticketing_service.domain.settings import Settings, TicketingMode, Tier
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.registration_handlers import StartRegistration

EVENT = "launch-party"
PRICE = 30000


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def checkouts() -> FakeCheckouts:
    return FakeCheckouts()


@pytest.fixture
def deps(database: FakeDatabase, checkouts: FakeCheckouts) -> Dependencies:
    return Dependencies(
        uow=database,
        payment_service=checkouts,
        default_provider_account_id="default-account",
        hold_seconds=600,
        public_base_url="https://moim.example",
    )


# The refund sender's retries, shortened: three sends, 30 s apart and doubling.
POLICY = RefundRetryPolicy(backoff=timedelta(seconds=30), max_attempts=3)


@pytest.fixture
def retrying(deps: Dependencies) -> Dependencies:
    """`deps` with the refund sender retrying as POLICY says."""
    return replace(deps, refund_retry=POLICY)


def paid_event(*tiers: Tier, **changes: object) -> Settings:
    """An event selling `tiers` (one VIP tier of 2 seats by default) through the service."""
    settings = Settings(
        event_id=EVENT,
        event_title="Launch party",
        mode=TicketingMode.PAID,
        provider="portone",
        provider_account_id="account",
        currency_code="KRW",
        enabled=True,
        legacy=False,
        external_url=None,
        tiers=tiers or (Tier("vip", "VIP", PRICE, capacity=2),),
    )
    return replace(settings, **changes)  # type: ignore[arg-type]  # Settings fields by name


def registration(user_id: str, tier_id: str = "vip", **changes: object) -> StartRegistration:
    command = StartRegistration(
        event_id=EVENT,
        tier_id=tier_id,
        user_id=user_id,
        customer_name=None,
        customer_email=None,
        answers=(Answer("q1", "Vegan"), Answer("q2", "  ")),
        success_url=None,
        cancel_url=None,
    )
    return replace(command, **changes)  # type: ignore[arg-type]  # StartRegistration fields


def later(database: FakeDatabase, seconds: float) -> None:
    """Move the database's clock on."""
    database.store.now += timedelta(seconds=seconds)
