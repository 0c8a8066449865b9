"""Request ids: the caller's when usable, otherwise a fresh random UUID."""

from __future__ import annotations

import uuid

import pytest

from ticketing_service.entrypoints.observability.request_context import new_request_id


@pytest.mark.parametrize("given", ["req-42", "  trace-7  ", "a" * 128])
def test_a_usable_id_from_the_caller_is_kept(given: str) -> None:
    assert new_request_id(given) == given.strip()


@pytest.mark.parametrize("given", [None, "", "   ", "a" * 129, "요청", "bad\nid"])
def test_otherwise_the_id_is_a_fresh_version_4_uuid_in_its_usual_text(given: str | None) -> None:
    made = {new_request_id(given) for _ in range(200)}
    assert len(made) == 200
    for text in made:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert str(parsed) == text
