"""The labeling pace ``sd status`` reports: the median gap between the last shards written, so a pause
between sessions does not slow it, and the pace is the recent one."""

from __future__ import annotations

import pytest

from training.run_status import shard_pace


def test_the_pace_is_the_median_gap_of_the_last_shards() -> None:
    assert shard_pace([0.0, 120.0, 250.0, 370.0]) == pytest.approx(120.0)


def test_a_pause_between_sessions_is_one_gap_and_does_not_count() -> None:
    # four shards, a night's pause, four more: the pace is still about two minutes a shard
    times = [0.0, 120.0, 240.0, 360.0, 40_000.0, 40_125.0, 40_250.0, 40_375.0]
    assert shard_pace(times) == pytest.approx(125.0)


def test_only_the_last_shards_count() -> None:
    slow_then_fast = [i * 600.0 for i in range(10)] + [5_400.0 + i * 60.0 for i in range(1, 10)]
    assert shard_pace(slow_then_fast) == pytest.approx(60.0)


@pytest.mark.parametrize("times", [[], [5.0], [5.0, 10.0], [7.0, 7.0, 7.0]])
def test_too_few_shards_or_no_time_between_them_gives_no_pace(times: list[float]) -> None:
    assert shard_pace(times) is None
