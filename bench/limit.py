"""The limit: the service's own SQL transactions, run by pgbench straight against its Postgres.

The statements are not written here by hand, so they cannot drift from the service: one sample
call of each use case runs in this process through the real service layer and repositories,
and every statement sent to the driver (with its parameters) is recorded, grouped by
transaction. Each recorded transaction becomes a pgbench script in which the values that must
differ per transaction are expressions of a per-transaction number `:bench_n`:

- the sample's marker string (inside user, checkout, payment and delivery ids, lock keys) is
  replaced by `n`, and the sample's reservation id by `md5('r' || n)::uuid`, so the n-th
  ConfirmPayment transaction confirms the reservation the n-th StartPaidRegistration made;
- a generated UUID (registration, payment row) becomes `gen_random_uuid()`;
- every other value becomes the literal the sample used.

pgbench runs them with `-M prepared` (each statement parsed once per connection), one
connection per caller, and logs each transaction's latency for p50/p95/p99.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.recorder import StatementRecorder, Transaction
from ticketing_service.domain.reservations import Delivery, DeliveryScheme, PaymentClaim
from ticketing_service.service_layer.checkouts import Checkout, CheckoutRequest, CheckoutStatus
from ticketing_service.service_layer.dependencies import Dependencies
from ticketing_service.service_layer.payment_handlers import confirm_payment
from ticketing_service.service_layer.refunds import RefundRequest, RefundStatus
from ticketing_service.service_layer.registration_handlers import (
    StartRegistration,
    start_paid_registration,
)

with warnings.catch_warnings():  # pgserver warns about a runtime dir it never uses
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pgserver

PGBENCH = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pgbench"
PGBENCH_SECONDS = 180.0
# pgbench numbers transactions per client: n = base + client_id * CLIENT_STRIDE + i.
CLIENT_STRIDE = 1_000_000
N = "CAST(:bench_n AS text)"
_PLACEHOLDER = re.compile(r"\$(\d+)")


@dataclass(frozen=True)
class Sample:
    """The values of one sample call that become per-transaction expressions."""

    marker: str
    reservation_id: str = ""

    def tokens(self) -> dict[str, str]:
        tokens = {self.marker: N}
        if self.reservation_id:
            tokens[self.reservation_id] = f"CAST(md5('r' || {N}) AS uuid)"
        return tokens


def new_marker() -> str:
    """A random word that cannot occur by chance in ids, SQL or hex."""
    return "mk" + "".join(secrets.choice("ghijklmnopqrstuvwxyz") for _ in range(12))


def sql_literal(value: object, tokens: Mapping[str, str]) -> str:
    """The SQL for a recorded parameter value."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, uuid.UUID):
        return tokens.get(str(value), "gen_random_uuid()")
    if isinstance(value, str):
        return _string(value, tokens)
    if isinstance(value, datetime):
        return f"CAST('{value.isoformat()}' AS timestamptz)"
    if isinstance(value, bytes):
        return f"CAST('\\x{value.hex()}' AS bytea)"
    if isinstance(value, list | tuple):
        items = [sql_literal(v, tokens) for v in value]
        return f"ARRAY[{', '.join(items)}]" if items else "'{}'"
    if isinstance(value, dict):
        return _quoted(json.dumps(value))
    raise TypeError(f"no pgbench literal for {type(value).__name__}")


def _quoted(text: str) -> str:
    # pgbench turns every `:word` of a prepared statement into a parameter, even inside a
    # string literal: split literals after each colon so that none is followed by a word.
    pieces = ["'" + p.replace("'", "''") + "'" for p in re.split(r"(?<=:)", text) if p]
    return pieces[0] if len(pieces) == 1 else "(" + " || ".join(pieces) + ")"


def _string(value: str, tokens: Mapping[str, str]) -> str:
    if value in tokens:
        return tokens[value]
    pattern = "(" + "|".join(re.escape(t) for t in tokens) + ")"
    parts = [p for p in re.split(pattern, value) if p] if tokens else [value]
    rendered = [tokens[p] if p in tokens else _quoted(p) for p in parts]
    return rendered[0] if len(rendered) == 1 else "(" + " || ".join(rendered) + ")"


def render_statement(sql: str, params: tuple[Any, ...], tokens: Mapping[str, str]) -> str:
    """One recorded statement on one line, its parameters replaced by SQL."""
    flat = " ".join(sql.split())
    return _PLACEHOLDER.sub(lambda m: sql_literal(params[int(m.group(1)) - 1], tokens), flat) + ";"


def pgbench_script(transactions: list[Transaction], sample: Sample) -> str:
    """A pgbench script running the recorded transactions once per pgbench transaction.

    Each statement is a round trip of its own, BEGIN included, as the service sends them.
    """
    tokens = sample.tokens()
    lines = [
        r"\set bench_i :bench_i + 1",
        rf"\set bench_n :bench_base + :client_id * {CLIENT_STRIDE} + :bench_i",
    ]
    for transaction in transactions:
        lines.append("BEGIN;")
        lines.extend(
            render_statement(sql, params, tokens) for sql, params in transaction.statements
        )
        lines.append(f"{transaction.end};")
    return "\n".join(lines) + "\n"


class _SampleCheckouts:
    """A checkout gateway that answers at once, with ids carrying the sample's marker."""

    def __init__(self) -> None:
        self.marker = ""

    async def create_checkout(self, request: CheckoutRequest) -> Checkout:
        checkout_id = f"co-{self.marker}"
        return Checkout(checkout_id, f"https://pay.example/c/{checkout_id}", "requires_payment")

    # Start and Confirm never read a checkout nor refund: a sample that did would fail here.
    async def get_checkout(self, checkout_id: str) -> CheckoutStatus:
        raise AssertionError("the recorded samples never read a checkout")

    async def create_refund(self, request: RefundRequest) -> RefundStatus:
        raise AssertionError("the recorded samples never refund")

    async def get_refund(self, refund_id: str) -> RefundStatus:
        raise AssertionError("the recorded samples never refund")


@dataclass(frozen=True)
class Scripts:
    """The pgbench scripts of each measured RPC."""

    start: str
    confirm: str
    webhook_confirm: str

    def save(self, directory: Path) -> None:
        """Write the scripts as `<rpc>.sql` files, e.g. to read or to run pgbench by hand."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in ("start", "confirm", "webhook_confirm"):
            (directory / f"{name}.sql").write_text(getattr(self, name))


async def capture_scripts(database_url: str, event_id: str, tier_id: str, price: int) -> Scripts:
    """Run one StartPaidRegistration and two ConfirmPayments (one as a webhook) and record them."""
    recorder = StatementRecorder(database_url)
    checkouts = _SampleCheckouts()
    deps = Dependencies(uow=recorder.unit_of_work, payment_service=checkouts)
    try:

        async def start() -> tuple[str, list[Transaction], Sample]:
            checkouts.marker = marker = new_marker()
            command = StartRegistration(
                event_id, tier_id, f"lu-{marker}", None, None, (), None, None
            )
            result = await start_paid_registration(deps, command)
            assert result.reservation is not None
            reservation_id = result.reservation.reservation_id
            return reservation_id, recorder.take(), Sample(marker, reservation_id)

        async def confirm(reservation_id: str, sample: Sample, webhook: bool) -> str:
            claim = PaymentClaim(
                reservation_id=reservation_id,
                checkout_id=f"co-{sample.marker}",
                payment_id=f"pay-{sample.marker}",
                tx_id=f"tx-{sample.marker}",
                provider="portone",
                amount=price,
                currency_code="KRW",
                paid_time=datetime.now(UTC),
                delivery=(
                    Delivery(DeliveryScheme.MOIM_HMAC, f"del-{sample.marker}") if webhook else None
                ),
                raw_event=b'{"type":"ticket_payment.paid"}' if webhook else None,
            )
            await confirm_payment(deps, claim)
            return pgbench_script(recorder.take(), sample)

        first, start_transactions, first_sample = await start()
        start_script = pgbench_script(start_transactions, first_sample)
        confirm_script = await confirm(first, first_sample, webhook=False)
        second, _, second_sample = await start()
        webhook_script = await confirm(second, second_sample, webhook=True)
    finally:
        await recorder.database.close()
    return Scripts(start_script, confirm_script, webhook_script)


@dataclass
class Limit:
    """What one pgbench run measured."""

    name: str
    transactions: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failure: str = ""

    @property
    def rate(self) -> float:
        return self.transactions / self.seconds if self.seconds else 0.0


def run_pgbench(
    name: str, database_url: str, script: str, base: int, clients: int, per_client: int
) -> Limit:
    """Run `script` `per_client` times on each of `clients` connections; tps and latencies."""
    with _scratch() as scratch:
        script_file = scratch / f"{name}.sql"
        script_file.write_text(script)
        argv = [
            str(PGBENCH), "--no-vacuum", "--protocol=prepared",
            f"--client={clients}", f"--jobs={min(clients, 2)}", f"--transactions={per_client}",
            "--define=bench_i=0", f"--define=bench_base={base}",
            f"--file={script_file}", "--log", f"--log-prefix={scratch / 'tx'}",
            "--verbose-errors",  # a failed transaction's error, not only a count
            database_url,
        ]  # fmt: skip
        done = subprocess.run(  # noqa: S603 - pgserver's pgbench with our own arguments
            argv, capture_output=True, text=True, timeout=PGBENCH_SECONDS, check=False
        )
        limit = Limit(name)
        # Each line: client, transaction, latency in µs, ...; "failed" instead of a latency for
        # a transaction that ended in an error (pgbench then also exits non-zero).
        logged = [
            line.split()[2] for log in scratch.glob("tx*") for line in log.read_text().splitlines()
        ]
        latencies = [int(micros) / 1e6 for micros in logged if micros.isdigit()]
    failed = len(logged) - len(latencies)
    if done.returncode != 0 or failed:
        errors = [line for line in done.stderr.splitlines() if "ERROR" in line or "error" in line]
        counted = f"{failed} transaction(s) failed; " if failed else ""
        limit.failure = (counted + (errors or ["pgbench failed"])[0])[:300]
        return limit
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    limit.transactions = len(latencies)
    limit.latencies = latencies
    limit.seconds = limit.transactions / float(match.group(1)) if match else 0.0
    return limit


@contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ticketing-bench-") as scratch:
        yield Path(scratch)
