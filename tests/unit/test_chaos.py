"""`./dev chaos`: the verdicts on what nodes hold, and the figures, from what clients were told."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.chaos import BROKEN, Ingest, Ledger, judge, mebibytes, memory_trend, summary, table
from benchmarks.cpu_hogs import CpuHogs

KEYS = {"Patient/p": "s|Patient/p", "Condition/c": "s|Condition/c"}


def ingest(outcome: str) -> Ingest:
    return Ingest("dic", dict(KEYS), outcome)


@pytest.mark.parametrize(
    ("outcome", "counts", "verdict"),
    [
        ("stored", {"s|Patient/p": 1, "s|Condition/c": 1}, "stored"),
        ("stored", {"s|Patient/p": 1}, "stored_but_missing"),
        ("stored", {"s|Patient/p": 2, "s|Condition/c": 1}, "duplicated"),
        ("refused", {}, "refused"),
        ("refused", {"s|Patient/p": 1, "s|Condition/c": 1}, "refused_but_present"),
        ("unknown", {"s|Patient/p": 1}, "partial"),
        ("unknown", {"s|Patient/p": 1, "s|Condition/c": 1}, "unanswered_and_stored"),
        ("unknown", {}, "unanswered_and_absent"),
    ],
)
def test_each_ingest_is_judged_by_what_its_client_was_told(outcome: str, counts: dict[str, int], verdict: str) -> None:
    judged = judge([ingest(outcome)], counts)
    assert judged["verdicts"] == {verdict: 1}
    assert judged["broken"] == (1 if verdict in BROKEN else 0)
    assert bool(judged["problems"]) == (verdict in BROKEN)


@given(st.lists(st.sampled_from(["stored", "refused", "unknown"]), max_size=20), st.integers(0, 2), st.integers(0, 2))
def test_every_ingest_gets_exactly_one_verdict(outcomes: list[str], patients: int, conditions: int) -> None:
    counts = {"s|Patient/p": patients, "s|Condition/c": conditions}
    judged = judge([ingest(o) for o in outcomes], counts)
    assert sum(judged["verdicts"].values()) == len(outcomes) == judged["ingests"]


def test_docker_memory_figures_are_read_in_mebibytes() -> None:
    assert mebibytes("512MiB") == 512
    assert mebibytes("1.5GiB") == 1536
    assert mebibytes("2048KiB") == 2
    assert math.isnan(mebibytes("a lot"))


def test_a_growing_container_shows_in_its_trend_and_a_flat_one_does_not() -> None:
    trend = memory_trend(
        {
            "leaky": [100, 100, 150, 150, 200, 200],
            "flat": [300, 310, 290, 300, 305, 300],
            "warmed": [100, 200, 300, 300, 300, 300],  # a heap that filled, then held
        }
    )
    assert trend["leaky"]["ratio"] == 2.0
    assert trend["leaky"]["settled"] > 1.3
    assert 0.95 < trend["flat"]["ratio"] < 1.05
    assert trend["warmed"]["ratio"] == 2.0
    assert trend["warmed"]["settled"] == 1.0, "grown while warming up, then flat: no leak"


def test_the_summary_counts_errors_per_operation() -> None:
    ledger = Ledger()
    for second in range(1, 101):
        ledger.record("read", second / 100, None if second != 50 else "503: HAPI is starting")
    figures = summary(ledger)["read"]
    assert (figures["n"], figures["errors"], figures["error_rate"]) == (100, 1, 0.01)
    assert figures["p50_s"] <= figures["p95_s"] <= figures["p99_s"]
    assert figures["first_errors"] == ["503: HAPI is starting"]


def test_the_busy_start_line_sets_the_busy_bring_up_beside_the_quiet_one() -> None:
    results = {"up_s": 100.0, "busy-start": {"hogs": 2, "up_s": 230.0, "hogs_core_share": 0.41}}
    assert table(results)[1] == (
        "busy-start: up in 230 s, 2.30 x the quiet bring-up while 2 spinning processes held 41% of their cores;"
        " every node answered"
    )


def test_hogs_keep_their_cores_busy_until_stopped_and_then_are_gone() -> None:
    hogs = CpuHogs(2)
    with hogs:
        time.sleep(1.0)
        pids = [process.pid for process in hogs._processes]
        share = hogs.stop()
    assert 0.2 < share <= 1.05, "a hog that spins holds a good part of a core even on a busy machine"
    assert hogs.stop() == share, "stopping again changes nothing"
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_a_hog_stops_by_itself_at_its_limit() -> None:
    def state(pid: int) -> str:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    with CpuHogs(1, limit_s=0.2) as hog:
        (pid,) = (process.pid for process in hog._processes)
        deadline = time.monotonic() + 10.0
        while state(pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert state(pid) == "Z", "it exited at its limit (and waits to be reaped by stop)"
