"""The redeploy benchmark's table: the unchanged `hubnode up` held against the first, with its target."""

from __future__ import annotations

from benchmarks import federation


def _rows(first: float, unchanged: float) -> dict[str, tuple[str, str]]:
    results = {
        "redeploy": {
            "first_up_s": first,
            "unchanged_up_s": unchanged,
            "dry_run_s": 2.5,
            "ratio": unchanged / first,
            "target_ratio_max": 0.1,
        }
    }
    return {name: (value, note) for name, value, note in federation.table_rows(results)}


def test_an_unchanged_up_within_a_tenth_of_the_first_meets_the_target() -> None:
    rows = _rows(first=200.0, unchanged=6.0)
    assert rows["redeploy: hubnode up first / unchanged / --dry-run"][0] == "200.0 / 6.0 / 2.5 s"
    assert rows["redeploy: unchanged / first"] == ("0.030", "target <= 0.1: met")


def test_an_unchanged_up_that_restarts_things_misses_it() -> None:
    assert _rows(first=200.0, unchanged=120.0)["redeploy: unchanged / first"] == ("0.600", "target <= 0.1: NOT met")
