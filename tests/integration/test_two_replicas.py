"""Two `serve` replicas on one Postgres, sweepers running in both: no oversell, no duplicates."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import pytest
from moim.ticketing.v1 import ticketing_service_pb2 as pb
from moim.ticketing.v1 import ticketing_service_pb2_grpc as pb_grpc

from tests.integration.conftest import PAYMENT_TOKEN, PaymentService
from tests.integration.flows import configure_event, paid_tier, payment_for, sql
from tests.rich_errors import rich_error

if TYPE_CHECKING:
    from moim.ticketing.v1.ticketing_service_pb2_grpc import TicketingServiceAsyncStub as Stub

SERVING = re.compile(rb"serving moim\.ticketing\.v1\.TicketingService on [\d.]+:(\d+)")


async def start_replica(
    database_url: str, payment_url: str, *, log: list[bytes] | None = None, **more_env: str
) -> tuple[asyncio.subprocess.Process, int]:
    """A replica as deployed, once it serves; every stderr line goes to `log` if given."""
    log = [] if log is None else log
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TICKET_PAYMENT_SERVICE_URL": payment_url,
        "TICKET_PAYMENT_SERVICE_TOKEN": PAYMENT_TOKEN,
        "TICKETING_SWEEP_INTERVAL_SECONDS": "0.2",
        "TICKETING_DB_LOCK_TIMEOUT_MS": "10000",
        **more_env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ticketing_service", "serve", "--no-migrate",
        "--listen", "127.0.0.1:0",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while line := await process.stderr.readline():
            log.append(line)
            if match := SERVING.search(line):
                asyncio.get_running_loop().create_task(_drain(process.stderr, log))
                return process, int(match.group(1))
    raise AssertionError("the replica exited before serving")


async def _drain(stream: asyncio.StreamReader, log: list[bytes]) -> None:
    while line := await stream.readline():
        log.append(line)


@pytest.fixture
async def replicas(database_url: str, payment_service: PaymentService) -> AsyncIterator[list[Stub]]:
    started = [await start_replica(database_url, payment_service.url) for _ in range(2)]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _, port in started]
    yield [pb_grpc.TicketingServiceStub(channel) for channel in channels]
    for channel in channels:
        await channel.close()
    for process, _ in started:
        process.send_signal(signal.SIGTERM)
    for process, _ in started:
        async with asyncio.timeout(30):
            assert await process.wait() == 0


async def test_a_rush_across_two_replicas_never_oversells(
    replicas: list[Stub], database_url: str
) -> None:
    await configure_event(replicas[0], paid_tier("vip", capacity=50))
    gate = asyncio.Semaphore(32)

    async def buy(n: int) -> str:
        stub = replicas[n % 2]
        async with gate:
            try:
                await stub.StartPaidRegistration(
                    pb.StartPaidRegistrationRequest(
                        event_id="launch-party", tier_id="vip", user_id=f"buyer-{n}"
                    )
                )
            except grpc.aio.AioRpcError as error:
                return rich_error(error).reason
            return "HELD"

    answers = Counter(await asyncio.gather(*(buy(n) for n in range(200))))
    assert answers == {"HELD": 50, "SOLD_OUT": 150}
    assert sql(
        database_url, "SELECT count(*) FROM reservations WHERE status = 'pending_payment'"
    ) == [(50,)]


async def test_identical_confirmations_on_two_replicas_register_once(
    replicas: list[Stub], database_url: str
) -> None:
    await configure_event(replicas[0], paid_tier("vip", capacity=5))
    held = await replicas[1].StartPaidRegistration(
        pb.StartPaidRegistrationRequest(event_id="launch-party", tier_id="vip", user_id="payer")
    )
    payment = payment_for(held.reservation)
    answers = await asyncio.gather(*(replicas[n % 2].ConfirmPayment(payment) for n in range(20)))
    outcomes = Counter(pb.ConfirmPaymentOutcome.Name(a.outcome) for a in answers)
    assert outcomes == {
        "CONFIRM_PAYMENT_OUTCOME_CONFIRMED": 1,
        "CONFIRM_PAYMENT_OUTCOME_ALREADY_CONFIRMED": 19,
    }
    assert sql(database_url, "SELECT count(*) FROM registrations") == [(1,)]
    assert sql(database_url, "SELECT count(*) FROM payments WHERE status = 'paid'") == [(1,)]


async def test_a_replica_never_loads_alembic_or_sqlalchemy(
    database_url: str, payment_service: PaymentService
) -> None:
    """A replica as deployed does not migrate, so the migrations' libraries stay unloaded:
    loading them cost each process about 0.8 s of its start and 22 MB."""
    log: list[bytes] = []
    process, port = await start_replica(
        database_url, payment_service.url, log=log, PYTHONPROFILEIMPORTTIME="1"
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TicketingServiceStub(channel)
        await configure_event(stub, paid_tier("vip", capacity=5))
        held = await stub.StartPaidRegistration(
            pb.StartPaidRegistrationRequest(event_id="launch-party", tier_id="vip", user_id="u")
        )
        await stub.ConfirmPayment(payment_for(held.reservation))
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await process.wait() == 0
    # `-X importtime` lines: "import time: <self> | <cumulative> | <indent><module>".
    loaded = {
        line.rsplit(b"|", 1)[1].strip().decode().split(".")[0]
        for line in log
        if line.startswith(b"import time:") and not line.rstrip().endswith(b"package")
    }
    assert {"grpc", "asyncpg", "ticketing_service"} <= loaded  # the lines are there to read
    assert not loaded & {"alembic", "sqlalchemy"}
