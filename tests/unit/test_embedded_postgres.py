"""pgserver's list of the processes using an embedded Postgres: the dead are dropped from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ticketing_service.adapters.embedded_postgres import HANDLES_FILE, _forget_dead_processes


def a_dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_a_process_that_no_longer_runs_is_dropped_and_the_running_kept(tmp_path: Path) -> None:
    handles = tmp_path / HANDLES_FILE
    dead = a_dead_pid()
    handles.write_text(json.dumps([dead, os.getpid(), 1]))  # pid 1 (init) always runs
    _forget_dead_processes(handles)
    assert json.loads(handles.read_text()) == [os.getpid(), 1]


def test_a_list_of_running_processes_is_left_as_it_is(tmp_path: Path) -> None:
    handles = tmp_path / HANDLES_FILE
    written = f"[{os.getpid()}, 1]  "  # spaced as json.dumps would not: a rewrite would show
    handles.write_text(written)
    _forget_dead_processes(handles)
    assert handles.read_text() == written


def test_no_list_or_one_pgserver_did_not_write_is_left_alone(tmp_path: Path) -> None:
    handles = tmp_path / HANDLES_FILE
    _forget_dead_processes(handles)  # no list yet
    assert not handles.exists()
    for text in ("not json", '{"pids": [1]}'):
        handles.write_text(text)
        _forget_dead_processes(handles)
        assert handles.read_text() == text
