"""An id field that is not one of the service's UUIDs is named with what it should be."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ticketing_service.domain.errors import InvalidArgument
from ticketing_service.entrypoints.grpc.refund_mapping import read_refund_id
from ticketing_service.entrypoints.grpc.reservation_mapping import read_reservation_id


@pytest.mark.parametrize(
    ("read", "field", "said"),
    [
        (read_refund_id, "refund_id", "Must be a refund id (a UUID) returned by the service."),
        (
            read_reservation_id,
            "reservation_id",
            "Must be a reservation id (a UUID) returned by the service.",
        ),
    ],
)
@pytest.mark.parametrize("given", ["", "nope"])
def test_a_malformed_id_is_refused_naming_the_kind_of_id_it_must_be(
    read: Callable[[str], str], field: str, said: str, given: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        read(given)

    [violation] = refused.value.violations
    assert (violation.field, violation.description) == (field, said)
