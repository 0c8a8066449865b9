"""`ticketing-service serve --workers 2`: two processes answer on one port (SO_REUSEPORT).

The kernel gives each new connection to one of the processes listening on the port. Calls go
over many connections; afterwards each worker process must hold some of those connections
(read from /proc: which process owns which socket), so each of them accepted and answered
calls. SIGTERM to the parent stops every worker and exits 0.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.end_to_end.serving import START_TIMEOUT_SECONDS, serve_process, wait_for_line

SERVING_LINE = re.compile(
    r"serving moim\.ticketing\.v1\.TicketingService on [\d.]+:(\d+) with 2 workers \((\d+), (\d+)\)"
)
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
