"""Caller noise: a bound per second on marked lines, a summary of the rest, nothing else held."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator

import pytest

from tests.unit.entrypoints.observability.scopes import request_scope
from ticketing_service.entrypoints.observability.logging import (
    RequestContextFilter,
    configure_logging,
)
from ticketing_service.entrypoints.observability.sampling import (
    CALLER_NOISE,
    CALLER_NOISE_FLAG,
    CallerNoiseFilter,
)

PER_SECOND = 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTimers:
    """The actions scheduled, each due at the fake clock's time then plus its delay."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, action: Callable[[], None]) -> None:
        self.pending.append((self._clock.now + delay, action))

    def run_due(self) -> None:
        due = [action for at, action in self.pending if at <= self._clock.now]
        self.pending = [(at, action) for at, action in self.pending if at > self._clock.now]
        for action in due:
            action()


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def timers(clock: FakeClock) -> FakeTimers:
    return FakeTimers(clock)


@pytest.fixture
def kept(clock: FakeClock, timers: FakeTimers) -> Iterator[Kept]:
    """What a logger whose handler samples caller noise (3 a second) writes."""
    handler = Kept()
    handler.addFilter(CallerNoiseFilter(PER_SECOND, clock, timers))
    handler.addFilter(RequestContextFilter())
    log = logging.getLogger("ticketing_service.test.sampling")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    yield handler
    log.removeHandler(handler)
    log.propagate = True
    log.setLevel(logging.NOTSET)


log = logging.getLogger("ticketing_service.test.sampling")


def refuse(count: int, level: int = logging.INFO, template: str = "refused %d") -> None:
    for n in range(count):
        log.log(level, template, n, extra=CALLER_NOISE)


def summaries(kept: Kept) -> list[logging.LogRecord]:
    return [r for r in kept.records if r.getMessage().startswith("Suppressed")]


def test_past_the_bound_a_second_s_lines_are_counted_and_summarized_when_it_ends(
    kept: Kept, clock: FakeClock, timers: FakeTimers
) -> None:
    refuse(10)
    assert kept.messages() == ["refused 0", "refused 1", "refused 2"]
    clock.now += 0.999
    timers.run_due()
    assert len(kept.records) == 3  # the second has not ended
    clock.now += 0.001
    timers.run_due()
    [summary] = summaries(kept)
    assert summary.getMessage() == (
        "Suppressed 7 more INFO lines of this kind in the second before (at most 3 a second"
        " are logged); the first: refused 3"
    )
    assert (summary.levelno, summary.name) == (logging.WARNING, log.name)
    assert vars(summary)["suppressed_lines"] == 7
    assert CALLER_NOISE_FLAG not in vars(summary)  # never sampled itself


def test_a_record_in_the_next_second_rolls_the_window_over_after_its_summary(
    kept: Kept, clock: FakeClock, timers: FakeTimers
) -> None:
    refuse(5)
    clock.now += 1.0
    refuse(1)  # before the timer ran: the summary comes first, then the new second's line
    assert kept.messages()[3:] == [
        "Suppressed 2 more INFO lines of this kind in the second before (at most 3 a second"
        " are logged); the first: refused 3",
        "refused 0",
    ]
    timers.run_due()  # the ended second was summarized: its timer adds nothing
    assert len(kept.records) == 5
    refuse(5)  # the new second (its first record above) lets two more through
    assert len(kept.records) == 7


def test_a_second_within_the_bound_has_no_summary_and_no_timer(
    kept: Kept, clock: FakeClock, timers: FakeTimers
) -> None:
    refuse(PER_SECOND)
    clock.now += 5
    refuse(PER_SECOND)
    assert not timers.pending
    assert len(kept.records) == 2 * PER_SECOND
    assert not summaries(kept)


def test_unmarked_records_are_never_held_back_even_during_a_flood(
    kept: Kept, clock: FakeClock, timers: FakeTimers
) -> None:
    for n in range(50):
        refuse(1)
        log.info("confirmed payment %d", n)  # same logger, level and template as noise would be
        log.warning("refund %d failed", n)
        log.error("a fault of ours %d", n)
    ours = [m for m in kept.messages() if not m.startswith("refused")]
    assert len(ours) == 150
    assert len([m for m in kept.messages() if m.startswith("refused")]) == PER_SECOND


def test_each_logger_level_and_template_has_its_own_bound(
    kept: Kept, clock: FakeClock, timers: FakeTimers
) -> None:
    refuse(10)
    refuse(10, logging.WARNING)
    refuse(10, template="cut %d")
    other = logging.getLogger("ticketing_service.test.sampling.other")
    for n in range(10):
        other.info("refused %d", n, extra=CALLER_NOISE)
    assert len(kept.records) == 4 * PER_SECOND
    clock.now += 1
    timers.run_due()
    assert sorted(vars(r)["suppressed_lines"] for r in summaries(kept)) == [7, 7, 7, 7]


def test_a_timer_that_wakes_early_waits_for_the_second_s_end(
    kept: Kept, clock: FakeClock, timers: FakeTimers
) -> None:
    refuse(5)
    [(due, action)] = timers.pending
    timers.pending.clear()
    clock.now = due - 0.01
    action()
    assert not summaries(kept)
    clock.now = due
    timers.run_due()
    assert len(summaries(kept)) == 1


def test_a_second_not_yet_ended_is_summarized_when_the_process_exits(
    kept: Kept, clock: FakeClock, timers: FakeTimers
) -> None:
    refuse(5)
    refuse(1, logging.WARNING)  # within its bound: nothing to say
    filters = [f for f in kept.filters if isinstance(f, CallerNoiseFilter)]
    filters[0].summarize_now()
    assert [vars(r)["suppressed_lines"] for r in summaries(kept)] == [2]
    timers.run_due()
    clock.now += 1
    timers.run_due()  # its timer finds it summarized
    assert len(summaries(kept)) == 1


def test_a_summary_names_no_request_though_one_is_being_served(
    kept: Kept, clock: FakeClock, timers: FakeTimers
) -> None:
    refuse(5)
    clock.now += 1
    with request_scope("next-request", route="/x"):
        refuse(1)
    [summary] = summaries(kept)
    assert (vars(summary)["request_id"], vars(summary)["route"]) == ("", "")
    assert vars(kept.records[-1])["request_id"] == "next-request"


def test_the_configured_handler_samples_caller_noise_before_any_other_filter() -> None:
    handler = configure_logging(io.StringIO())
    try:
        assert isinstance(handler.filters[0], CallerNoiseFilter)
    finally:
        logging.getLogger().removeHandler(handler)
