"""docs/operations.md names only metrics, settings and commands that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ticketing_service.entrypoints.cli import _parser
from ticketing_service.entrypoints.observability.metrics import TicketingMetrics

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "operations.md").read_text()
# Metric names, not `ticketing_service/...` paths or `ticketing_service.x` modules.
METRIC_NAME = re.compile(r"\bticketing_[a-z_]+[a-z]\b(?![/.])")


def exported_metric_names() -> set[str]:
    metrics = TicketingMetrics(process_collectors=False)
    metrics.watch_pool(lambda: (0, 1))
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_metric_the_doc_names_is_exported() -> None:
    assert set(METRIC_NAME.findall(DOC)) <= exported_metric_names()


def test_every_exported_metric_is_documented() -> None:
    assert exported_metric_names() <= set(METRIC_NAME.findall(DOC))


def test_every_setting_the_doc_names_is_read_by_the_service() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "ticketing_service").rglob("*.py"))
    for name in sorted(set(re.findall(r"\b(?:TICKETING|TICKET|MOIM)_[A-Z_]+[A-Z]\b", DOC))):
        assert re.search(rf"[\"']{name}[\"']", code), name


@pytest.mark.parametrize(
    "command", sorted(set(re.findall(r"(?:^|`)ticketing-service ([a-z][a-z-]*)", DOC, re.M)))
)
def test_every_command_the_doc_runs_exists(command: str) -> None:
    with pytest.raises(SystemExit) as exited:  # --help exits 0 for a known subcommand only
        _parser().parse_args([command, "--help"])
    assert exited.value.code == 0


def test_the_options_the_doc_uses_exist() -> None:
    assert _parser().parse_args(["serve", "--no-migrate"]).no_migrate is True
    assert _parser().parse_args(["prune-events", "--older-than-days", "30"]).older_than_days == 30


def test_the_database_wide_follow_up_count_is_read_with_max_never_summed_over_pods() -> None:
    # Every replica exports the same count of the whole database: a sum over pods multiplies it.
    gauge = "ticketing_reconcile_awaiting_follow_up"
    [general] = [p for p in DOC.split("\n\n") if "sum over pods" in p]
    assert f"max({gauge})" in general
    for paragraph in DOC.split("\n\n"):
        if gauge in paragraph:
            assert "max" in paragraph, paragraph
            assert not re.search(rf"sum\([^)]*{gauge}", paragraph), paragraph
