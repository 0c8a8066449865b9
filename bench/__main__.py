"""`scripts/bench [TOOL] [OPTIONS]`: the benchmark, or one of the other measurements.

With no TOOL, the benchmark: the real stack against the limit of its own database, and a ticket
rush (`bench/benchmark.py`, its options below). TOOL is one of:

  floor            what gRPC and the callers alone cost, with no service behind them
  webhook          signed callbacks per second through the shim, both signature schemes
  hostile          request bombs, hostile sockets on the shim, the time to cut a silent one
  cancel-event     CancelEvent on an event with 2,000 registrations, and the refunds it owes
  vet-go-callers   build, vet and format-check the compiled callers

`scripts/bench TOOL --help` gives each one's options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from bench import benchmark, callers, cancel_event, floor, hostile, webhook

TOOLS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "floor": floor.main,
    "webhook": webhook.main,
    "hostile": hostile.main,
    "cancel-event": cancel_event.main,
    "vet-go-callers": callers.main,
}


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
    if argv and argv[0] in TOOLS:
        return TOOLS[argv[0]](argv[1:])
    return benchmark.main(argv)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
