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
