"""The event loop every long-running command runs on (uvloop where it is available), and the
signals that stop such a command.

uvloop (libuv) runs the same asyncio code with a cheaper loop: on the benchmark machine it cut
the server's CPU per ConfirmPayment by about 13 % (docs/benchmarks.md). grpc.aio, asyncpg
and uvicorn all run on it unchanged. Where uvloop is not installed (it has no
Windows build), the standard loop runs instead.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency wherever it builds
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a new event loop, as `asyncio.run` does."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals a long-running command stops gracefully on: SIGTERM, SIGINT (Ctrl-C), and
    SIGHUP (its terminal was closed) unless it was started to ignore hangups (`nohup`).

    Without SIGHUP, closing the terminal of `serve` or `dev` killed it outright: no graceful
    stop, and its embedded Postgres ran on in the background.
    """
    hangup = () if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGTERM, signal.SIGINT, *hangup)
