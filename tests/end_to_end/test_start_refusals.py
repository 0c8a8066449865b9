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
        f"ticketing-service: {key} holds the secret template's placeholder (REPLACE_ME): "
        "set the real value in the Secret before starting."
    )
    assert not (tmp_path / "PG_VERSION").exists()  # refused before starting any Postgres
