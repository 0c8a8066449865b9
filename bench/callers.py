"""Who makes the benchmark's gRPC calls: compiled callers (Go), or Python ones.

The callers share the machine's two CPUs with the server and Postgres, so every millisecond of
CPU they spend per call is taken from the service. pgbench, the limit's caller, is compiled and
spends about 0.07 ms per transaction; grpc.aio callers in Python spend about 0.4 ms per call,
the Go ones (`bench/go_caller/main.go`, on Debian's grpc-go) about half that (docs/benchmarks.md).
Both make the same calls: the same encoded requests, one HTTP/2 connection per caller, spread
evenly over the server's workers.

The Go callers need the toolchain `scripts/install-go-toolchain` installs (CI has it). Without
it, `--callers auto` falls back to Python and says so.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil
from google.protobuf.message import Message
from google.rpc import status_pb2

from bench.channels import EvenShares, Stubs, owner_of, peer_ports
from bench.phases import CALL_SECONDS, CpuSampler, Phase, reason_of_status, run_phase

SOURCE = Path(__file__).resolve().parent / "go_caller" / "main.go"
# Where Debian's Go packages put grpc-go and protobuf (GOPATH mode: there is no module proxy).
DEBIAN_GOPATH = "/usr/share/gocode"
SERVICE = "/moim.ticketing.v1.TicketingService/"
BUILD_SECONDS = 300.0


class Callers(Protocol):
    """Makes one phase's calls and keeps what each answered."""

    name: str

    def cpu_seconds(self) -> float:
        """CPU the callers used so far, beyond this process's own."""
        ...

    async def run(
        self,
        phase: Phase,
        method: str,
        requests: Sequence[Message],
        answer_type: type[Message],
        concurrency: int,
        limit_seconds: float,
        cpu: CpuSampler,
    ) -> list[Any]:
        """Call `method` once per request with `concurrency` callers; answers in request order
        (None for a failed call, counted in `phase.errors`)."""
        ...


class CallersUnavailable(Exception):
    """The Go callers cannot be built here."""


@dataclass
class PythonCallers:
    """grpc.aio stubs on this process's event loop."""

    stubs: Stubs
    name: str = "Python (grpc.aio)"

    def cpu_seconds(self) -> float:
        return 0.0

    async def run(
        self,
        phase: Phase,
        method: str,
        requests: Sequence[Message],
        answer_type: type[Message],
        concurrency: int,
        limit_seconds: float,
        cpu: CpuSampler,
    ) -> list[Any]:
        async def call(i: int) -> Any:
            stub_method: Callable[..., Awaitable[Any]] = getattr(self.stubs.next(), method)
            return await stub_method(requests[i], timeout=CALL_SECONDS)

        return await run_phase(phase, len(requests), call, concurrency, limit_seconds, cpu)


class GoCallers:
    """`bench_caller`, a compiled process of its own, driven over its standard input."""

    name = "Go (grpc-go)"

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._measured = psutil.Process(process.pid)

    def cpu_seconds(self) -> float:
        try:
            times = self._measured.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    async def run(
        self,
        phase: Phase,
        method: str,
        requests: Sequence[Message],
        answer_type: type[Message],
        concurrency: int,
        limit_seconds: float,
        cpu: CpuSampler,
    ) -> list[Any]:
        command = {
            "method": SERVICE + method,
            "concurrency": concurrency,
            "timeout_seconds": CALL_SECONDS,
            "requests": [_b64(r.SerializeToString()) for r in requests],
        }
        request_line = _line(command)
        cpu_began = cpu()
        await self._send_line(request_line)
        answer_line = await asyncio.wait_for(self._receive_line(), limit_seconds)
        phase.cpu_seconds = {name: used - cpu_began[name] for name, used in cpu().items()}
        result = json.loads(answer_line)
        phase.seconds = float(result["seconds"])
        phase.latencies = [ns / 1e9 for ns in result["latencies_ns"]]
        answers: list[Any] = []
        for code, answer, status in zip(
            result["codes"], result["answers"], result["statuses"], strict=True
        ):
            if code:
                phase.errors[reason_of_status(code, _status(status))] += 1
                answers.append(None)
            else:
                answers.append(answer_type.FromString(base64.b64decode(answer or "")))
        return answers

    async def choose(self, port: int, count: int, workers: Sequence[psutil.Process]) -> None:
        """Keep `count` of the candidate connections, as evenly over `workers` as they go."""
        ports: list[int] = (await self._receive())["ports"]
        if len(workers) < 2:
            keep = list(range(count))
        else:
            owners = [set(peer_ports(worker, port)) for worker in workers]
            keep = balanced(ports, owners, count)
        await self._send({"keep": keep})

    async def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            await asyncio.wait_for(self._process.wait(), 10)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()

    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_line(_line(message))

    async def _receive(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(await self._receive_line())
        return answer

    async def _send_line(self, line: bytes) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line)
        await self._process.stdin.drain()

    async def _receive_line(self) -> bytes:
        assert self._process.stdout is not None
        line = await self._process.stdout.readline()
        if not line:
            code = await self._process.wait()
            raise RuntimeError(f"bench_caller ended (exit {code}); its error is above")
        return line


def balanced(ports: Sequence[int], owners: Sequence[set[int]], count: int) -> list[int]:
    """Indexes of `count` connections (by local port) spread evenly over the workers that
    accepted them (`owners`: each worker's peer ports)."""
    shares = EvenShares(count, len(owners))
    keep: list[int] = []
    for index, local in enumerate(ports):
        if shares.keep(owner_of({local}, owners)):
            keep.append(index)
    if not shares.full:
        raise RuntimeError(
            f"Could not spread {count} connections over {len(owners)} workers: {shares.placed}."
        )
    return keep


def build_go_callers(directory: Path, *, vet: bool = False) -> Path:
    """Compile `bench_caller` into `directory` (and vet it, with `vet`); CallersUnavailable,
    with why, if it cannot be."""
    go = shutil.which("go")
    if go is None:
        raise CallersUnavailable("no Go toolchain (scripts/install-go-toolchain installs one)")
    gopath = directory / "gopath"
    package = gopath / "src" / "bench_caller"
    package.mkdir(parents=True)
    shutil.copy(SOURCE, package / "main.go")
    binary = directory / "bench_caller"
    environment = os.environ | {
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOPATH": f"{gopath}{os.pathsep}{DEBIAN_GOPATH}",
    }
    commands = [["build", "-o", str(binary), "bench_caller"]]
    if vet:
        commands += [["vet", "bench_caller"], ["fmt", "bench_caller"]]
    for command in commands:
        done = subprocess.run(  # noqa: S603 - the toolchain found on PATH, fixed arguments
            [go, *command],
            env=environment,
            capture_output=True,
            text=True,
            timeout=BUILD_SECONDS,
            check=False,
        )
        why = (done.stderr.strip() or "no output").splitlines()[-1]
        if done.returncode != 0 and command[0] == "build":
            raise CallersUnavailable(
                f"`go build` failed ({why}); scripts/install-go-toolchain installs what it needs"
            )
        if done.returncode != 0:
            raise CallersUnavailable(f"`go {command[0]}` failed: {why}")
        if command[0] == "fmt" and done.stdout.strip():  # it names the files it reformatted
            raise CallersUnavailable(f"gofmt would reformat {SOURCE}: run `gofmt -w` on it")
    return binary


@asynccontextmanager
async def go_callers(
    binary: Path, port: int, connections: int, workers: Sequence[psutil.Process]
) -> AsyncIterator[GoCallers]:
    """The Go callers on `connections` connections to `port`, spread over `workers`."""
    # Three candidates per kept connection: each worker then gets its share in all but
    # vanishingly rare runs (the kernel's placement is a hash, not a coin per worker).
    candidates = connections * 3 if len(workers) > 1 else connections
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "-address",
        f"127.0.0.1:{port}",
        "-candidates",
        str(candidates),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 26,  # a phase's answers come back on one line
    )
    callers = GoCallers(process)
    try:
        await callers.choose(port, connections, workers)
        yield callers
    finally:
        await callers.close()


@asynccontextmanager
async def open_callers(
    kind: str, stubs: Stubs, port: int, connections: int, workers: Sequence[psutil.Process]
) -> AsyncIterator[tuple[Callers, str]]:
    """The callers `kind` asks for ("go", "python" or "auto": Go where it builds), and a line
    for the report saying which they are and why. The Python callers are `stubs`."""
    python = PythonCallers(stubs)
    if kind == "python":
        yield python, python.name
        return
    with tempfile.TemporaryDirectory(prefix="bench-caller-") as directory:
        try:
            began = time.perf_counter()
            binary = build_go_callers(Path(directory))
        except CallersUnavailable as error:
            if kind == "go":
                raise
            yield python, f"{python.name}; Go callers unavailable: {error}"
            return
        built = f"{GoCallers.name}; built in {time.perf_counter() - began:.1f} s"
        async with go_callers(binary, port, connections, workers) as callers:
            yield callers, built


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _status(encoded: str | None) -> status_pb2.Status | None:
    return status_pb2.Status.FromString(base64.b64decode(encoded)) if encoded else None


def main(argv: Sequence[str] | None = None) -> int:
    """Build, vet and format-check the Go callers."""
    parser = argparse.ArgumentParser(prog="scripts/bench vet-go-callers", description=main.__doc__)
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-caller-") as directory:
        try:
            build_go_callers(Path(directory), vet=True)
        except CallersUnavailable as error:
            print(f"bench_caller: {error}", file=sys.stderr)
            return 1
    print("bench_caller builds, and go vet and gofmt have nothing to say")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
