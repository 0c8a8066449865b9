"""Settings each command refuses at start, run as the real process: one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.end_to_end.serving import our_line, run_command

ROOT = Path(__file__).resolve().parents[2]
SECRET_TEMPLATE = ROOT / "deploy" / "kubernetes" / "secret.example.yaml"


def placeholder(key: str) -> str:
    """The value the secret template holds for `key`."""
    return str(yaml.safe_load(SECRET_TEMPLATE.read_text())["stringData"][key])


@pytest.mark.parametrize(
    ("command", "key"),
    [
        ("serve", "DATABASE_URL"),
        ("migrate", "DATABASE_URL"),
        ("serve", "TICKETING_GRPC_TOKEN"),
        ("serve", "TICKET_PAYMENT_SERVICE_TOKEN"),
        ("webhook", "TICKETING_GRPC_TOKEN"),
        ("webhook", "TICKET_PAYMENT_CALLBACK_SECRET"),
        ("webhook", "TICKETING_STANDARD_WEBHOOK_SECRETS"),
    ],
)
def test_a_placeholder_of_the_secret_template_stops_the_command_at_start(
    tmp_path: Path, command: str, key: str
) -> None:
    # Before: the shim verified callbacks signed with the template's public secret, and the
    # server took calls carrying its public token.
    value = placeholder(key)
    listen = () if command == "migrate" else ("--listen", "127.0.0.1:0")
    result = run_command(tmp_path, command, *listen, **{key: value})
    assert result.returncode == 2, result.stderr
    assert our_line(result) == (
        f"ticketing-service: {key} holds the deploy templates' placeholder (REPLACE_ME): "
        "set the real value (in the Secret or the ConfigMap) before starting."
    )
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres


@pytest.mark.parametrize(
    "argv",
    [("migrate",), ("serve",), ("prune-events", "--older-than-days", "30"), ("reconcile",)],
    ids=lambda argv: argv[0],
)
def test_an_empty_database_url_stops_the_command_instead_of_starting_an_embedded_postgres(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    # Before: `DATABASE_URL= ticketing-service migrate` migrated a throwaway Postgres in the
    # data dir and exited 0, so a migration Job given an empty Secret value "succeeded".
    result = run_command(tmp_path, *argv, DATABASE_URL="")
    assert result.returncode == 2, result.stderr
    assert our_line(result).startswith("ticketing-service: DATABASE_URL is set but empty: ")
    assert not (tmp_path / "PG_VERSION").exists()


def test_a_statement_timeout_too_short_for_any_work_stops_the_server_at_start(
    tmp_path: Path,
) -> None:
    # Before: taken, and every background task (sweeps, reconciliation) failed on every pass.
    result = run_command(tmp_path, "serve", TICKETING_DB_STATEMENT_TIMEOUT_MS="1")
    assert result.returncode == 2, result.stderr
    assert our_line(result) == (
        "ticketing-service: TICKETING_DB_STATEMENT_TIMEOUT_MS must be a whole number from 100 "
        "to 86400000, got '1'."
    )
    assert not (tmp_path / "PG_VERSION").exists()
