"""`ticketing-service serve --workers 2`: two processes answer on one port (SO_REUSEPORT).

The kernel gives each new connection to one of the processes listening on the port. Calls go
over many connections; afterwards each worker process must hold some of those connections
(read from /proc: which process owns which socket), so each of them accepted and answered
calls. SIGTERM to the parent stops every worker and exits 0. A worker that dies is started
again; workers die with their parent; a worker that keeps dying ends the command.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import psutil
import pytest
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.end_to_end.serving import (
    START_TIMEOUT_SECONDS,
    serve_process,
    wait_for_line,
    wait_until,
)
from ticketing_service.adapters.embedded_postgres import start_embedded_postgres
from ticketing_service.entrypoints.grpc.server import GRACE_SECONDS
from ticketing_service.entrypoints.grpc.workers import RestartPolicy, serve_in_workers

SERVING_LINE = re.compile(
    r"serving moim\.ticketing\.v1\.TicketingService on [\d.]+:(\d+) with 2 workers \((\d+), (\d+)\)"
)
RESTARTED_LINE = re.compile(r"worker 0 serving again as pid (\d+)")
CALL_SECONDS = 20
# The chance that every connection lands on the same one of two workers is 2 / 2**CONNECTIONS.
CONNECTIONS = 24


@contextmanager
def serve_with_two_workers(
    data_dir: Path,
) -> Iterator[tuple[int, list[int], subprocess.Popen[str]]]:
    """The real command, until it logs its port and worker pids; SIGTERM afterwards."""
    with serve_process(data_dir, "--workers", "2") as process:
        match = wait_for_line(process, SERVING_LINE)
        yield int(match.group(1)), [int(match.group(2)), int(match.group(3))], process


def established_connections(pid: int, port: int) -> int:
    """How many established TCP connections on local `port` the process `pid` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and local_port == port and fields[9] in inodes:  # 01: ESTABLISHED
                count += 1
    return count


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_two_worker_processes_share_the_port_and_both_answer_calls(tmp_path: Path) -> None:
    tier = settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=30000, capacity=50)
    update = pb.UpdateTicketingSettingsRequest(event_id="launch", tiers=[tier])
    with serve_with_two_workers(tmp_path / "pgdata") as (port, pids, process), ExitStack() as open_:
        # A local subchannel pool per channel: otherwise channels to one target share a connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [
            open_.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}", options=options))
            for _ in range(CONNECTIONS)
        ]
        stubs = [pb_grpc.TicketingServiceStub(channel) for channel in channels]
        stubs[0].UpdateTicketingSettings(update, timeout=CALL_SECONDS)
        answers = [
            stub.GetTicketingSettings(pb.GetTicketingSettingsRequest(event_id="launch"))
            for stub in stubs
        ]
        held = {pid: established_connections(pid, port) for pid in pids}
        parents = {parent_of(pid) for pid in pids}

        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=START_TIMEOUT_SECONDS)

    assert all(a.settings.tiers[0].tier_id == "vip" for a in answers)
    assert parents == {process.pid}
    assert all(count > 0 for count in held.values()), held
    assert sum(held.values()) == CONNECTIONS, held
    assert exit_code == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def worker_is_gone(pid: int) -> bool:
    """Whether `pid` has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def answers_on_fresh_connections(port: int, pids: list[int]) -> tuple[list[str], list[int]]:
    """GetTicketingSettings over CONNECTIONS new connections, and how many each of `pids` holds.

    A call waits for a connection to succeed (as clients retry UNAVAILABLE): one that the kernel
    queued on the killed worker's socket in the moment before it closed is reset.
    """
    options = [("grpc.use_local_subchannel_pool", 1)]
    request = pb.GetTicketingSettingsRequest(event_id="launch")
    with ExitStack() as open_:
        stubs = [
            pb_grpc.TicketingServiceStub(
                open_.enter_context(grpc.insecure_channel(f"127.0.0.1:{port}", options=options))
            )
            for _ in range(CONNECTIONS)
        ]
        answers = [
            stub.GetTicketingSettings(request, timeout=CALL_SECONDS, wait_for_ready=True)
            for stub in stubs
        ]
        held = [established_connections(pid, port) for pid in pids]
    return [a.settings.event_id for a in answers], held


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A Postgres owned by the test process: it outlives a `serve` parent killed on purpose."""
    return start_embedded_postgres(tmp_path / "own-pgdata")


def test_a_worker_that_dies_is_started_again_while_the_port_keeps_serving(
    tmp_path: Path, database_url: str
) -> None:
    tier = settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=30000, capacity=50)
    update = pb.UpdateTicketingSettingsRequest(event_id="launch", tiers=[tier])
    with serve_process(tmp_path / "pgdata", "--workers", "2", DATABASE_URL=database_url) as process:
        match = wait_for_line(process, SERVING_LINE)
        port, pids = int(match.group(1)), [int(match.group(2)), int(match.group(3))]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            pb_grpc.TicketingServiceStub(channel).UpdateTicketingSettings(update, timeout=20)

        os.kill(pids[0], signal.SIGKILL)
        during, _ = answers_on_fresh_connections(port, [pids[1]])  # the other worker answers
        restarted = int(wait_for_line(process, RESTARTED_LINE).group(1))
        assert wait_until(lambda: worker_is_gone(pids[0]), CALL_SECONDS)
        after, held = answers_on_fresh_connections(port, [restarted, pids[1]])
        parent = parent_of(restarted)

        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=START_TIMEOUT_SECONDS)
    assert during == after == ["launch"] * CONNECTIONS
    assert restarted not in pids
    assert all(count > 0 for count in held), held  # the new worker answers its share
    assert parent == process.pid
    assert exit_code == 0
    assert all(worker_is_gone(pid) for pid in (restarted, pids[1]))


def test_workers_stop_when_their_parent_is_killed(tmp_path: Path, database_url: str) -> None:
    with serve_process(tmp_path / "pgdata", "--workers", "2", DATABASE_URL=database_url) as process:
        match = wait_for_line(process, SERVING_LINE)
        pids = [int(match.group(2)), int(match.group(3))]

        process.kill()  # SIGKILL: the parent gets no chance to stop its workers itself
        process.wait(timeout=START_TIMEOUT_SECONDS)

        # The kernel sends each worker SIGTERM; a graceful stop takes at most its grace period.
        assert wait_until(lambda: all(worker_is_gone(pid) for pid in pids), GRACE_SECONDS + 20)


def report_then_crash(address: str, started: Callable[[int], None]) -> int:
    """A worker that starts, reports a port, and dies at once: every time."""
    started(0)
    return 3


def test_a_worker_that_keeps_dying_ends_the_command_with_exit_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = RestartPolicy(first_backoff_seconds=0.01, max_quick_deaths=3)
    with caplog.at_level(logging.INFO, logger="ticketing_service.entrypoints.grpc.workers"):
        exit_code = serve_in_workers(1, "127.0.0.1:0", report_then_crash, policy)
    messages = [r.getMessage() for r in caplog.records]
    assert exit_code == 1
    assert sum("started again" in m for m in messages) == 2
    assert "died 3 times in a row" in messages[-1]
    assert "crash loop" in messages[-1]
