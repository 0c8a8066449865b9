"""The chaos run's processes: a Postgres it can restart, and replicas it can kill.

All on 127.0.0.1 or a Unix socket; every start and stop is bounded.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stack import ROOT, SERVER_LINE, STOP_SECONDS, clean_environment, logged_port

with warnings.catch_warnings():  # pgserver warns about a runtime dir it never uses
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pgserver
    from pgserver.postgres_server import get_server

PG_CTL = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_ctl"
PG_CTL_SECONDS = 60


@dataclass(frozen=True)
class RestartablePostgres:
    """pgserver's Postgres, stopped and started again with its own pg_ctl: the same data
    directory, the same socket directory, so the same URL."""

    pgdata: Path
    socket_dir: Path
    os_user: str | None  # pgserver runs Postgres as an unprivileged user when we are root
    url: str

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        # The options pgserver starts it with: no TCP, only the socket directory.
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"),
            "start",
        )  # fmt: skip

    def is_running(self) -> bool:
        return self._pg_ctl("status", check=False) == 0

    def _pg_ctl(self, *args: str, check: bool = True) -> int:
        # Output to a file, not a pipe: the postmaster inherits it and would hold a pipe open.
        with tempfile.TemporaryFile() as output:
            done = subprocess.run(  # noqa: S603 - pgserver's pg_ctl with our own arguments
                [str(PG_CTL), "-D", str(self.pgdata), *args],
                stdout=output,
                stderr=output,
                user=self.os_user,
                timeout=PG_CTL_SECONDS,
                check=False,
            )
            output.seek(0)
            if check and done.returncode != 0:
                raise RuntimeError(f"pg_ctl {args[-1]} failed: {output.read().decode()}")
        return done.returncode


@contextmanager
def restartable_postgres(scratch: Path) -> Iterator[RestartablePostgres]:
    """An embedded Postgres in `scratch`, deleted afterwards (stopped first if restarted)."""
    server: Any = get_server(scratch / "pgdata", cleanup_mode="delete")
    info = server.get_postmaster_info()
    postgres = RestartablePostgres(
        Path(server.pgdata), Path(info.socket_dir), server.system_user, str(server.get_uri())
    )
    try:
        yield postgres
    finally:
        # pgserver stops only the postmaster it started itself.
        if postgres.is_running():
            postgres.stop()
        server.cleanup()


def free_port() -> int:
    """A port nothing listens on now, for a replica that must come back on the same one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Replica:
    """One `ticketing-service serve` process on a fixed port, which can be killed and
    started again; each life logs to a file of its own in `logs`."""

    def __init__(self, name: str, port: int, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.port = port
        self.starts = 0
        self._env = clean_environment() | env
        self._logs = logs
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, migrate: bool) -> None:
        """Start it and return once it serves (RuntimeError with its log if it does not)."""
        argv = [sys.executable, "-m", "ticketing_service", "serve"]
        argv += ["--listen", f"127.0.0.1:{self.port}"]
        if not migrate:
            argv.append("--no-migrate")
        self.starts += 1
        log_path = self._logs / f"{self.name}-{self.starts}.log"
        with log_path.open("w+", encoding="utf-8", errors="replace") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our interpreter, our arguments
                argv,
                cwd=ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            logged_port(self._process, log, SERVER_LINE, f"replica {self.name}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, in-flight calls and transactions cut off."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait(STOP_SECONDS)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not ended within the bound."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(STOP_SECONDS)
