"""docs/operations.md names only metrics, settings and commands that exist."""

from __future__ import annotations

import ast
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


# Steps of a migration's upgrade() that the release before it may depend on: what they drop,
# change or narrow (a check replaced by a wider one admits values older code cannot read).
CONTRACTING_STEPS = {
    "drop_column",
    "drop_constraint",
    "drop_index",
    "drop_table",
    "alter_column",
    "rename_table",
    "_replace_check",
}
# The same in SQL an upgrade runs as text (`op.execute`).
CONTRACTING_SQL = re.compile(r"(?i)\b(?:drop|rename)\b|\balter\s+column\b")
MIGRATIONS = sorted((ROOT / "ticketing_service/adapters/migrations/versions").glob("0*.py"))
# The rows of the table of migrations a rolling update cannot cross: | `0007` | ... |
NOT_ROLLING = set(re.findall(r"^\| `(\d{4})` \|", DOC, re.MULTILINE))


def contracting_steps(migration: Path) -> set[str]:
    """The contracting steps `migration`'s upgrade() takes: the calls it makes, itself or
    through the module's own functions, and what its SQL text says."""
    functions = {
        node.name: node
        for node in ast.parse(migration.read_text()).body
        if isinstance(node, ast.FunctionDef)
    }
    steps: set[str] = set()
    reached, to_read = {"upgrade"}, [functions["upgrade"]]
    while to_read:
        for node in ast.walk(to_read.pop()):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                steps |= {m.lower() for m in CONTRACTING_SQL.findall(node.value)}
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            steps |= {name} & CONTRACTING_STEPS
            if name in functions and name not in reached:
                reached.add(name)
                to_read.append(functions[name])
    return steps


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda path: path.name[:4])
def test_a_migration_the_release_before_cannot_serve_beside_is_in_the_rollout_table(
    migration: Path,
) -> None:
    # The release before 0007 confirmed no payment on its schema during a rolling update: the
    # unique constraint its statement named was replaced. The table says to stop it first.
    revision = migration.name[:4]
    assert bool(contracting_steps(migration)) == (revision in NOT_ROLLING), revision
