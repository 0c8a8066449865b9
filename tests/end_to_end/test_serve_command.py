"""`ticketing-service serve` as a user runs it: embedded Postgres, health, reflection, restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from moim.ticketing.v1 import settings_pb2
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.end_to_end.serving import START_TIMEOUT_SECONDS, serve_process, wait_for_line

SERVING_LINE = re.compile(r"serving moim\.ticketing\.v1\.TicketingService on [\d.]+:(\d+)")


@contextmanager
def serve(data_dir: Path, **env: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Run the real command until it logs its port; stop it with SIGTERM afterwards."""
    with serve_process(data_dir, **env) as process:
        yield int(wait_for_line(process, SERVING_LINE).group(1)), process


def paid_settings_request() -> pb.UpdateTicketingSettingsRequest:
    return pb.UpdateTicketingSettingsRequest(
        event_id="launch-party",
        event_title="Launch party",
        tiers=[settings_pb2.TierInput(tier_id="vip", name="VIP", price_amount=30000, capacity=50)],
    )


def test_settings_survive_a_restart_of_the_server_and_its_embedded_postgres(
    tmp_path: Path,
) -> None:
    with serve(tmp_path / "pgdata") as (port, _), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        saved = pb_grpc.TicketingServiceStub(ch).UpdateTicketingSettings(paid_settings_request())
    with serve(tmp_path / "pgdata") as (port, _), grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        read = pb_grpc.TicketingServiceStub(ch).GetTicketingSettings(
            pb.GetTicketingSettingsRequest(event_id="launch-party")
        )
    assert read.settings == saved.settings
    assert read.settings.mode == settings_pb2.TICKETING_MODE_PAID


def test_health_is_serving_reflection_lists_the_service_and_sigterm_exits_cleanly(
    tmp_path: Path,
) -> None:
    with serve(tmp_path / "pgdata") as (port, process):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="moim.ticketing.v1.TicketingService")
            )
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            services = {s.name for a in answers for s in a.list_services_response.service}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=START_TIMEOUT_SECONDS) == 0
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert "moim.ticketing.v1.TicketingService" in services


def test_a_bad_setting_fails_at_start_with_one_line_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ticketing_service", "serve"],
        env={**os.environ, "TICKETING_HOLD_SECONDS": "soon", "TICKETING_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ticketing-service: TICKETING_HOLD_SECONDS must be a positive number, got 'soon'."
    ]
