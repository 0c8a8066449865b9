"""Which database errors a client may retry: only the races the service expects."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ticketing_service.adapters.db.unit_of_work import translate_database_error
from ticketing_service.domain.errors import ConcurrentUpdate, DatabaseUnavailable


@dataclass
class ServerError(Exception):
    """What the driver raises for an error the server sent: its SQLSTATE and constraint."""

    sqlstate: str
    constraint_name: str | None = None


@pytest.mark.parametrize("sqlstate", ["40001", "40P01", "55P03"])
def test_a_serialization_failure_deadlock_or_lock_timeout_is_a_retryable_race(
    sqlstate: str,
) -> None:
    assert isinstance(translate_database_error(ServerError(sqlstate)), ConcurrentUpdate)


def test_a_second_live_hold_of_one_user_is_the_one_unique_violation_that_is_a_race() -> None:
    raced = ServerError("23505", "uq_reservations_live_per_user_event")
    assert isinstance(translate_database_error(raced), ConcurrentUpdate)


@pytest.mark.parametrize(
    "error",
    [
        ServerError("23505", "uq_registrations_reservation_id"),
        ServerError("23505"),
        ServerError("57014"),  # statement_timeout: a retry meets it again
        ServerError("42P01"),  # an undefined table: a bug, or a migration not applied
    ],
)
def test_any_other_error_is_a_bug_left_for_internal_and_the_log(error: ServerError) -> None:
    assert translate_database_error(error) is None


@pytest.mark.parametrize("sqlstate", ["08006", "57P01", "53300", "25006"])
def test_a_lost_restarting_full_or_read_only_database_is_unavailable(sqlstate: str) -> None:
    assert isinstance(translate_database_error(ServerError(sqlstate)), DatabaseUnavailable)


@pytest.mark.parametrize("sqlstate", ["28P01", "28000", "3D000"])
def test_a_refused_login_or_a_missing_database_says_to_check_the_url_not_to_retry(
    sqlstate: str,
) -> None:
    refused = translate_database_error(ServerError(sqlstate))
    assert isinstance(refused, DatabaseUnavailable)
    assert "check the user, password and database name of DATABASE_URL" in refused.message
    assert "retry" not in refused.message
