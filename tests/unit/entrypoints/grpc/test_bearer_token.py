"""BearerToken: which calls need the token, and which metadata carries it."""

from __future__ import annotations

import pytest

from ticketing_service.entrypoints.grpc.auth import BearerToken

TOKEN = "correct-horse"
ROTATED = "battery-staple"


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}",
        f"bearer {TOKEN}",  # schemes are case-insensitive (RFC 7235 §2.1): it was refused
        f"BEARER {TOKEN}",
        f"Bearer {ROTATED}",
        f"Bearer {TOKEN}".encode(),
    ],
)
def test_the_token_after_the_bearer_scheme_in_any_case_is_carried(value: str | bytes) -> None:
    assert BearerToken([TOKEN, ROTATED]).carried_by([("authorization", value)])


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        [("authorization", "Bearer wrong")],
        [("authorization", TOKEN)],
        [("authorization", f"Basic {TOKEN}")],
        [("authorization", f"Bearer {TOKEN.upper()}")],  # the token itself is exact
        [("authorization", f"Bearer {TOKEN} ")],
        [("x-token", TOKEN)],
        # Only the first `authorization` counts.
        [("authorization", "Bearer wrong"), ("authorization", f"Bearer {TOKEN}")],
    ],
)
def test_metadata_without_the_token_is_refused(metadata: list[tuple[str, str]]) -> None:
    assert not BearerToken([TOKEN]).carried_by(metadata)


def test_only_ticketing_calls_need_the_token() -> None:
    assert BearerToken.guards("/moim.ticketing.v1.TicketingService/GetReservation")
    assert not BearerToken.guards("/grpc.health.v1.Health/Check")
    assert not BearerToken.guards("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")


def test_no_token_or_an_empty_one_is_a_mistake() -> None:
    for tokens in ([], [""], [TOKEN, ""]):
        with pytest.raises(ValueError, match="non-empty token"):
            BearerToken(tokens)
