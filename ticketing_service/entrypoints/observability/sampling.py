"""A bound on the lines that callers who are refused can make the service write.

Some lines are written once per refused request, and whoever is refused decides how many come:
a flood of callbacks with bad signatures wrote 47,000 lines in 30 s, calls without the token or
holding their request back 125,000 lines in 45 s, about 3 GB an hour between them. A record
marked with CALLER_NOISE (`extra=CALLER_NOISE`) is logged at most `per_second` times a second
for each logger, level and message template; past that it is counted, and when that second ends
one WARNING on the same logger says how many were suppressed and shows the first of them.

Only lines a caller provokes by being refused are marked. Nothing else is ever held back: a
line about money, a 2xx or 5xx answer, a fault of the service's own. Metrics still count every
refused request.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from ticketing_service.entrypoints.observability.request_context import serving_no_request

# Private (a leading underscore), so the formatters leave it out of the line.
CALLER_NOISE_FLAG = "_caller_noise"
CALLER_NOISE = {CALLER_NOISE_FLAG: True}  # `extra=` of a line a refused caller provokes
# Enough to show what a flood is (its routes, codes and peers' request ids) and a trickle of
# refusals in full; at most a few MB an hour however many arrive.
NOISE_LINES_PER_SECOND = 10
# Windows that ended with nothing suppressed are dropped past this many keys (templates come
# from the code, so only a marked line with a caller's text as its template could get there).
_MAX_WINDOWS = 256

Clock = Callable[[], float]
Schedule = Callable[[float, Callable[[], None]], object]
_Key = tuple[str, int, object]  # logger, level, message template


def _timer(delay: float, action: Callable[[], None]) -> threading.Timer:
    # A thread, not the event loop's timer: records come from worker threads too, and a
    # summary is due even when nothing more is logged.
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()
    return timer


@dataclass(slots=True)
class _Window:
    """One second of a kind of marked line: how many passed, how many did not."""

    ends: float
    logged: int = 0
    suppressed: int = 0
    first_suppressed: logging.LogRecord | None = None


# Every filter, for the summaries still due when the process exits: logging's own exit
# handler, registered before this one, runs after it and flushes them out.
_FILTERS: weakref.WeakSet[CallerNoiseFilter] = weakref.WeakSet()


@atexit.register
def _summarize_all() -> None:
    for noise in list(_FILTERS):
        noise.summarize_now()


class CallerNoiseFilter(logging.Filter):
    """Lets at most `per_second` records marked CALLER_NOISE through a second, per logger,
    level and message template; summarizes the rest when their second ends.

    Unmarked records always pass. `clock` and `schedule` (run an action after a delay) are
    the monotonic clock and a timer thread unless a test gives its own.
    """

    def __init__(
        self,
        per_second: int = NOISE_LINES_PER_SECOND,
        clock: Clock = time.monotonic,
        schedule: Schedule = _timer,
    ) -> None:
        super().__init__()
        self._per_second = per_second
        self._clock = clock
        self._schedule = schedule
        self._windows: dict[_Key, _Window] = {}
        self._lock = threading.Lock()  # records come from several threads, summaries from one
        _FILTERS.add(self)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether `record` is logged: unmarked, or within its kind's lines for this second."""
        if not record.__dict__.get(CALLER_NOISE_FLAG):  # every record passes here: keep it cheap
            return True
        key = (record.name, record.levelno, record.msg)
        now = self._clock()
        with self._lock:
            ended = self._windows.get(key)
            if ended is None or now >= ended.ends:
                if len(self._windows) >= _MAX_WINDOWS:
                    self._forget_quiet(now)
                window = self._windows[key] = _Window(now + 1.0)
            else:
                window, ended = ended, None
            passed = window.logged < self._per_second
            if passed:
                window.logged += 1
            else:
                window.suppressed += 1
                if window.first_suppressed is None:
                    window.first_suppressed = record
                    self._schedule(window.ends - now, functools.partial(self._end, key, window))
        if ended is not None and ended.suppressed:  # its timer has not run yet: it finds no window
            self._summarize(key, ended)
        return passed

    def summarize_now(self) -> None:
        """Summarize every second with suppressed records, ended or not (the process exits)."""
        with self._lock:
            due = [(k, w) for k, w in self._windows.items() if w.suppressed]
            for key, _ in due:
                del self._windows[key]
        for key, window in due:
            self._summarize(key, window)

    def _forget_quiet(self, now: float) -> None:
        for key in [k for k, w in self._windows.items() if now >= w.ends and not w.suppressed]:
            del self._windows[key]

    def _end(self, key: _Key, window: _Window) -> None:
        """The timer of a second with suppressed records: summarize it, unless that was done."""
        with self._lock:
            if self._windows.get(key) is not window:
                return
            left = window.ends - self._clock()
            if left > 0:  # a timer may wake a little early
                self._schedule(left, functools.partial(self._end, key, window))
                return
            del self._windows[key]
        self._summarize(key, window)

    def _summarize(self, key: _Key, window: _Window) -> None:
        name, level, _ = key
        first = window.first_suppressed
        if first is None:  # set with the first suppressed record: never, but typed so
            return
        # Not the request of the record being filtered when a second is summarized: no request.
        with serving_no_request():
            logging.getLogger(name).warning(
                "Suppressed %d more %s lines of this kind in the second before (at most %d a"
                " second are logged); the first: %s",
                window.suppressed,
                logging.getLevelName(level),
                self._per_second,
                first.getMessage(),
                extra={"suppressed_lines": window.suppressed},
            )
