"""Request ids: the caller's when usable, otherwise a fresh random UUID."""

from __future__ import annotations

import uuid

import pytest

from ticketing_service.entrypoints.observability.request_context import (
    begin_request,
    current_request,
    end_request,
    new_request_id,
    note_reservation,
)

RESERVATION = "6f1d3c2a-8f0e-4a51-9a5e-0c7b2d1e4f6a"


@pytest.mark.parametrize(
    "given", ["req-42", "  trace-7  ", "a" * 128, "msg_2a8e4Lk", "evt-9", RESERVATION]
)
def test_a_usable_id_from_the_caller_is_kept(given: str) -> None:
    assert new_request_id(given) == given.strip()


@pytest.mark.parametrize(
    "given",
    [
        None,
        "",
        "   ",
        "a" * 129,
        "요청",
        "bad\nid",
        # The server's per-call line, which redaction skips, carries the id: nothing redaction
        # would mask is kept, and no space, which could add a field to a console line.
        "4242 4242 4242 4242",
        "evt-4242-4242-4242-4242",
        "trace-token=abc",
        "postgresql://user:pw@db",
        "whsec_c2lnbmluZy1rZXk=",
        f"a rpc=CancelEvent reservation_id={RESERVATION}",
    ],
)
def test_otherwise_the_id_is_a_fresh_version_4_uuid_in_its_usual_text(given: str | None) -> None:
    made = {new_request_id(given) for _ in range(200)}
    assert len(made) == 200
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text


@pytest.mark.parametrize(
    "given",
    [
        "whsec_c2lnbmluZy1rZXk=",
        "4242424242424242",
        RESERVATION.upper(),  # valid in a request, but not the form the service writes
        RESERVATION.replace("-", ""),
        f"{RESERVATION} ",
    ],
)
def test_a_request_names_a_reservation_only_by_a_canonical_uuid(given: str) -> None:
    token = begin_request("req-1", reservation_id=given)
    try:
        assert current_request().reservation_id == ""
        note_reservation(given)
        assert current_request().reservation_id == ""
        note_reservation(RESERVATION)
        assert current_request().reservation_id == RESERVATION
    finally:
        end_request(token)
