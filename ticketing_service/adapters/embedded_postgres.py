"""An embedded Postgres (the `pgserver` package) for running without `DATABASE_URL`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Protocol, cast


class _Server(Protocol):
    def get_uri(self) -> str: ...


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) a Postgres whose data lives in `data_dir`; return its URL.

    The data directory persists across restarts. The server stops when the process that
    started it exits.
    """
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir it never uses; on servers without a
        # login session that only produces a misleading warning on every start.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = cast(_Server, get_server(data_dir, cleanup_mode="stop"))
    return server.get_uri()
