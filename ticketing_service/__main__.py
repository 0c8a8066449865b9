"""`python -m ticketing_service` and the `ticketing-service` command.

The CLI is imported inside `main`: Ctrl-C while its modules load (a second or more) ends the
command quietly with 130, as it does once the command runs, not with a traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Load the CLI and run the command line's subcommand."""
    try:
        from ticketing_service.entrypoints.cli import main as run

        return run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
