"""`python -m ticketing_service` and the `ticketing-service` command.

The CLI is imported inside `main`: Ctrl-C while its modules load (a second or more) ends the
command quietly with 130, as it does once the command runs, not with a traceback. A hangup
(SIGHUP: the terminal was closed) does the same with 129, unless the command was started to
ignore it (`nohup`): it killed the command outright, and its embedded Postgres ran on in the
background. So does SIGTERM (Kubernetes stopping a Job, `kill`) with 143, which killed a one-off
command outright (`migrate`, `prune-events`, `reconcile`, `import-moim`): its transaction is
rolled back, its embedded Postgres stopped. The exit status is a shell's for the signal, 128 and
its number. `serve`, `webhook` and `dev` take any of them as a graceful stop
(event_loop.stop_signals).
"""

from __future__ import annotations

import os
import signal
import sys

STOPPED = (
    "ticketing-service: stopped by a signal before it finished; what it committed stays:"
    " run it again to finish."
)


class Stopped(KeyboardInterrupt):
    """A stop signal other than Ctrl-C, unwinding the command as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, _frame: object) -> None:
    raise Stopped(signum)


def main() -> int:
    """Load the CLI and run the command line's subcommand."""
    for stop in (signal.SIGHUP, signal.SIGTERM):
        if signal.getsignal(stop) == signal.SIG_DFL:
            signal.signal(stop, _stop)
    # gRPC's C core writes its own lines to stderr, not JSON ones: keep them to its errors. Below
    # those it wrote one for each connection its client closed with an error (a GOAWAY), which
    # any client can repeat. Read when gRPC loads, so before the CLI imports it; a setting of the
    # environment's (INFO or DEBUG, to look into a connection's troubles) is kept.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    try:
        from ticketing_service.entrypoints.cli import main as run

        return run()
    except KeyboardInterrupt as stopped:
        # One line, so a stopped command's log says it did not finish (a one-off command's
        # transactions are each whole: what committed stays, the rest was rolled back).
        print(STOPPED, file=sys.stderr)
        return 128 + (stopped.signum if isinstance(stopped, Stopped) else signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
