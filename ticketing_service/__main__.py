"""`python -m ticketing_service` runs the `ticketing-service` command."""

from __future__ import annotations

import sys

from ticketing_service.entrypoints.cli import main

sys.exit(main())
