"""The chaos run's feed follower: its verdict holds only for every event once, in order."""

from __future__ import annotations

import random

import pytest

from bench.chaos.follower import FeedFollower


@pytest.mark.parametrize(
    ("received", "holds", "said"),
    [
        ([1, 2, 3], True, "3 events over 0 streams (ended: none)"),
        ([1, 3], False, "missing [2], twice []"),
        ([1, 2, 2, 3], False, "missing [], twice [2]"),
        ([2, 1, 3], False, "missing [], twice [], out of order"),
        ([1, 2, 3, 4], False, "of 1..3"),
    ],
)
async def test_the_verdict_holds_only_for_each_event_once_in_order(
    received: list[int], holds: bool, said: str
) -> None:
    follower = FeedFollower([], random.Random(0))
    follower.sequences = received

    verdict = await follower.verdict(last=3)

    assert verdict.holds is holds
    assert said in verdict.seen


async def test_the_verdict_says_how_the_streams_ended() -> None:
    follower = FeedFollower([], random.Random(0))
    follower.sequences, follower.streams = [1], 4
    follower.endings.update(["UNAVAILABLE", "SERVER_STOPPING", "UNAVAILABLE"])

    verdict = await follower.verdict(last=1)

    assert verdict.seen == "1 events over 4 streams (ended: 2 UNAVAILABLE, 1 SERVER_STOPPING)"
