"""The resource-ids benchmark's parts that need no containers: its seeds, its two ways, its summary."""

from __future__ import annotations

import itertools

import pytest

from benchmarks.resource_ids import ROUNDS, WARM_UP_ROUNDS, WAYS, order, seed_of, summary, table_rows, transactions


def test_every_round_and_way_sends_patients_of_its_own_and_the_order_alternates() -> None:
    numbers = range(WARM_UP_ROUNDS + ROUNDS)
    seeds = [seed_of(number, way) for number, way in itertools.product(numbers, WAYS)]
    assert len(set(seeds)) == len(seeds)
    assert [order(number)[0] for number in numbers[:2]] == ["derived", "identifier"]


def test_the_two_ways_write_the_same_patients_at_derived_ids_and_by_identifier() -> None:
    derived = list(transactions(5, derived_ids=True, patients=2))
    by_identifier = list(transactions(5, derived_ids=False, patients=2))
    urls = [[e["request"]["url"] for e in bundle["entry"]] for bundle in derived]
    assert all("/hn-" in url and "?" not in url for bundle in urls for url in bundle)
    assert all("?identifier=" in e["request"]["url"] for bundle in by_identifier for e in bundle["entry"])
    assert [len(b["entry"]) for b in derived] == [len(b["entry"]) for b in by_identifier]


def test_the_summary_counts_only_rounds_after_the_warm_up() -> None:
    rounds = [
        {
            "round": 1,
            "warm_up": True,
            "derived": {"resources": 100, "seconds": 100.0},
            "identifier": {"resources": 100, "seconds": 1.0},
        },
        {
            "round": 2,
            "warm_up": False,
            "derived": {"resources": 600, "seconds": 1.0},
            "identifier": {"resources": 500, "seconds": 1.0},
        },
        {
            "round": 3,
            "warm_up": False,
            "derived": {"resources": 600, "seconds": 2.0},
            "identifier": {"resources": 500, "seconds": 2.0},
        },
    ]
    figures = summary(rounds)
    assert figures["derived_resources_per_s"] == 400.0
    assert figures["identifier_resources_per_s"] == pytest.approx(1000 / 3)
    assert figures["ratio"] == pytest.approx(1.2)
    assert figures["met"] is True
    assert [row[1] for row in table_rows({"resource-ids": figures})] == ["400 vs 333", "1.20"]
    assert table_rows({}) == []
