"""An embedded Postgres (the `pgserver` package) for running without `DATABASE_URL`."""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol, cast

log = logging.getLogger(__name__)

# Where pgserver lists the processes using the Postgres of a data directory.
HANDLES_FILE = ".handle_pids.json"
WHAT_TO_DO = "Set TICKETING_DATA_DIR to a new or empty directory, or DATABASE_URL."
# The databases initdb makes (template1, template0, postgres), each a directory of `base/`. A
# signal while initdb ran (Ctrl-C at the first start) killed it after template1: the Postgres
# then started, and every command failed for good, saying to check a DATABASE_URL never set.
_INITIAL_DATABASES = ("template1", "template0", "postgres")


class EmbeddedPostgresError(Exception):
    """The embedded Postgres could not start; the message says why and what to do."""


class _Server(Protocol):
    def get_uri(self) -> str: ...


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a Postgres whose data lives in `data_dir`; return its URL.

    The data directory persists across restarts. The server stops when the last process using
    it exits. A directory that holds something else is refused, never initialised.
    """
    _check_data_dir(data_dir)
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir it never uses; on servers without a
        # login session that only produces a misleading warning on every start.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import PostgresServer, get_server

    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_users(data_dir, PostgresServer._lock)
        with _stop_signals_held():
            server = cast(_Server, get_server(data_dir, cleanup_mode="stop"))
    except OSError as error:
        reason = f"{error.strerror} ({error.filename})" if error.filename else str(error)
        raise EmbeddedPostgresError(
            f"Could not create the embedded Postgres's data directory {data_dir}: {reason}. "
            + WHAT_TO_DO
        ) from None
    except subprocess.CalledProcessError as error:
        if error.returncode < 0:
            # Killed by a signal: Ctrl-C at a terminal reaches initdb or pg_ctl too. The command
            # was stopped, and the directory is not at fault.
            raise KeyboardInterrupt from None
        # pgserver has logged the command's own output (the lines above this one).
        program = Path(str(error.cmd[0])).name
        raise EmbeddedPostgresError(
            f"The embedded Postgres in {data_dir} did not start: {program} exited with "
            f"{error.returncode} (its output is logged above). " + WHAT_TO_DO
        ) from None
    except AssertionError:
        # pgserver checks that the Postgres of a data directory deleted at this path is gone
        # right after killing it, before the kill has taken effect.
        raise EmbeddedPostgresError(
            f"The embedded Postgres in {data_dir} did not start: a Postgres still running "
            "for a data directory deleted at this path was being stopped. Run the command again."
        ) from None
    # pgserver decides at exit, in an exit hook get_server registered, whether this process is
    # the last on its list. Exit hooks run newest first: this one drops those killed meanwhile
    # just before, or pgserver would count them as users and leave the Postgres running. The two
    # take the lock in turn: a process that starts between them is on the list when pgserver
    # reads it, or starts the Postgres again (under the lock) after pgserver stopped it.
    atexit.register(_forget_dead_users, data_dir, PostgresServer._lock)
    databases = data_dir / "base"
    if not databases.is_dir() or len(list(databases.iterdir())) < len(_INITIAL_DATABASES):
        raise EmbeddedPostgresError(
            f"The embedded Postgres in {data_dir} is incomplete: it was stopped while it was"
            " first being created, and holds no data. Delete the directory and run the"
            " command again."
        )
    log.info("DATABASE_URL is unset: the embedded Postgres serves, its data in %s", data_dir)
    return server.get_uri()


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP while pgserver starts its Postgres, then deliver them.

    pgserver starts the Postgres, then lists this process as a user, which is how its exit hook
    knows to stop it: a signal between the two (about 1 s into `serve`, 2 starts in 14) left
    the Postgres running with nobody listed. Signals are only handled in the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = [
        s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if callable(signal.getsignal(s))
    ]
    previous = {s: signal.signal(s, lambda signum, _: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for held_signal, handler in previous.items():
            signal.signal(held_signal, handler)
        for signum in caught:
            signal.raise_signal(signum)


def _forget_dead_users(data_dir: Path, lock: AbstractContextManager[object]) -> None:
    # `lock` is the one pgserver holds to change its list, as a process starting adds itself to
    # it: held from reading the list to writing it back, so no process added meanwhile is lost.
    with lock:
        _forget_dead_processes(data_dir / HANDLES_FILE)


def _forget_dead_processes(handles: Path) -> None:
    """Drop the processes that no longer run from pgserver's list of those using its Postgres.

    pgserver stops the Postgres when the last process on the list exits, each taking itself
    off on the way out. One killed without that (SIGKILL, a crash, a reboot) stayed on it, and
    the Postgres ran on in the background after the others exited; so they drop it, as each
    starts and as each exits.
    """
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):  # no list yet, or not one pgserver wrote
        return
    if isinstance(pids, list):
        running = [pid for pid in pids if isinstance(pid, int) and pid > 0 and _runs(pid)]
        if running != pids:
            handles.write_text(json.dumps(running))


def _runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 sends nothing: it asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and is another user's
        pass
    return True


def _check_data_dir(data_dir: Path) -> None:
    """Refuse a path that is not a Postgres data directory yet holds something, or that
    pgserver cannot start a Postgres in."""
    # pgserver hands the directory to postgres unquoted, as where its socket goes (`-k`): a
    # space splits it, and postgres refused to start ("invalid argument").
    path = data_dir.resolve()
    if any(c.isspace() for c in str(path)):
        raise EmbeddedPostgresError(
            f"The embedded Postgres cannot use {path}: pgserver cannot start one "
            "in a path that holds a space. Set TICKETING_DATA_DIR to a path without spaces, "
            "or DATABASE_URL."
        )
    if data_dir.exists() and not data_dir.is_dir():
        raise EmbeddedPostgresError(
            f"TICKETING_DATA_DIR {data_dir} is a file, not a directory. " + WHAT_TO_DO
        )
    # Postgres writes PG_VERSION first; a directory with files but without it is someone
    # else's, and initialising a database there would mix the two.
    if data_dir.is_dir() and not (data_dir / "PG_VERSION").exists() and any(data_dir.iterdir()):
        raise EmbeddedPostgresError(
            f"TICKETING_DATA_DIR {data_dir} holds files but no Postgres data. " + WHAT_TO_DO
        )
