"""Server-Timing: phases add up, the header round-trips, foreign headers are read leniently."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servicekit.timing import ServerTiming, parse_server_timing


def test_a_phase_entered_twice_adds_up_and_keeps_its_first_place() -> None:
    timing = ServerTiming()
    with timing.phase("validate"):
        pass
    with timing.phase("store"):
        pass
    first = timing.milliseconds["validate"]
    with timing.phase("validate"):
        sum(range(10_000))
    assert list(timing.milliseconds) == ["validate", "store"]
    assert timing.milliseconds["validate"] > first


def test_a_phase_that_raises_is_timed_too() -> None:
    timing = ServerTiming()
    with pytest.raises(RuntimeError), timing.phase("link"):
        raise RuntimeError
    assert "link" in timing.milliseconds


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True), st.floats(0, 1e6), max_size=6))
def test_the_header_reads_back_as_written(phases: dict[str, float]) -> None:
    timing = ServerTiming()
    timing.milliseconds.update(phases)
    parsed = parse_server_timing(timing.header())
    assert list(parsed) == list(phases)
    assert all(abs(parsed[name] - round(ms, 1)) < 1e-6 for name, ms in phases.items())


def test_metrics_without_a_duration_or_with_a_broken_one_are_left_out() -> None:
    header = 'cache;desc="hit", db;dur=53.2, app;dur=oops, total;desc=all;dur=120'
    assert parse_server_timing(header) == {"db": 53.2, "total": 120.0}
