"""The command line refuses values it cannot act on with a message naming the accepted range."""

from __future__ import annotations

import pytest

from ticketing_service.entrypoints.cli import _parser


@pytest.mark.parametrize("days", ["0", "-1", "abc", "nan", "inf", "100000", "99999.5"])
def test_prune_events_refuses_an_age_outside_its_range_naming_it(
    days: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["prune-events", f"--older-than-days={days}"])

    assert exited.value.code == 2
    assert f"must be a number of days above 0 and up to 99999, got {days!r}" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(("days", "parsed"), [("0.5", 0.5), ("30", 30), ("99999", 99999)])
def test_prune_events_takes_any_age_in_its_range(days: str, parsed: float) -> None:
    assert _parser().parse_args(["prune-events", "--older-than-days", days]).older_than_days == (
        parsed
    )


@pytest.mark.parametrize("rows", ["0", "-1", "1.5", "abc", "1000001"])
def test_prune_events_refuses_a_batch_size_outside_its_range_naming_it(
    rows: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        _parser().parse_args(["prune-events", "--older-than-days=30", f"--batch-size={rows}"])

    assert exited.value.code == 2
    assert f"must be a whole number from 1 to 1000000, got {rows!r}" in capsys.readouterr().err


def test_prune_events_deletes_ten_thousand_rows_a_batch_unless_told() -> None:
    parse = _parser().parse_args
    assert parse(["prune-events", "--older-than-days", "30"]).batch_size == 10_000
    assert parse(["prune-events", "--older-than-days", "30", "--batch-size", "3"]).batch_size == 3
