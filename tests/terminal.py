"""Starting a Python child with its signals as a terminal leaves them."""

from __future__ import annotations

import sys

_DEFAULT_SIGNALS_THEN_EXEC = """\
import os, signal, sys
for sig in (signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def python_from_a_terminal(*arguments: str) -> list[str]:
    """The command that runs `python *arguments` with SIGINT and SIGHUP at their defaults.

    The test's worker process ignores SIGINT and a child inherits that (a run under `nohup` would
    ignore SIGHUP too). A `preexec_fn` could reset them, but it makes subprocess fork the worker
    while its gRPC threads run, and the child then aborted now and then ("epoll_wait error: Bad
    file descriptor"). This small program resets them and execs the real command in its place:
    same process, same pid.
    """
    return [sys.executable, "-c", _DEFAULT_SIGNALS_THEN_EXEC, *arguments]
