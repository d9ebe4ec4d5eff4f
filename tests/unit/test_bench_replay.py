"""The ingest benchmark's reading of `Server-Timing`: phases per bundle, and what they leave out or count twice."""

from __future__ import annotations

import pytest

from benchmarks.federation import Replay, Sent


def replay(*sent: Sent) -> Replay:
    return Replay({"fresh": {"connector": list(sent)}}, {})


def test_time_outside_every_phase_is_unaccounted() -> None:
    phases = replay(Sent(0.300, 200, "", {"profiles": 100.0, "store": 150.0})).phases_ms("fresh", "connector")
    assert phases == pytest.approx({"profiles": 100.0, "store": 150.0, "unaccounted": 50.0})


def test_phases_that_ran_side_by_side_report_the_time_counted_twice_as_overlapped() -> None:
    sent = [Sent(0.300, 200, "", {"profiles": 250.0, "store": 200.0}), Sent(0.200, 200, "", {"store": 150.0})]
    phases = replay(*sent).phases_ms("fresh", "connector")
    assert phases == pytest.approx({"profiles": 125.0, "store": 175.0, "overlapped": 50.0})
