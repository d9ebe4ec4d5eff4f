"""The linkage benchmark's generated people and a small run of it, so `./dev bench linkage` cannot rot."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.trustcentre import bench_linkage
from fixtures import linkage as people


@given(st.integers(min_value=0, max_value=2**32), st.sampled_from(people.VARIANTS))
def test_a_copy_differs_from_its_original_in_the_way_its_variant_says(seed: int, kind: people.Variant) -> None:
    rng = random.Random(seed)  # noqa: S311 -- test data, not a secret
    original = people.person(rng)
    while kind == "transliteration" and not people.has_umlaut(original):
        original = people.person(rng)
    copy = people.variant(rng, original, kind)
    assert copy != original
    assert (copy.birth_date, copy.sex) == (original.birth_date, original.sex)
    if kind == "swapped":
        assert (copy.family, copy.given) == (original.given, original.family)
    if kind == "transliteration":
        [changed] = [new for new, old in ((copy.family, original.family), (copy.given, original.given)) if new != old]
        assert not any(c in "äöüß" for c in changed.casefold())
    if kind == "typo":
        assert (copy.family == original.family) != (copy.given == original.given)


def test_a_small_linkage_run_finds_the_copies_and_proposes_no_strangers(tmp_path: Path) -> None:
    figures = bench_linkage(f"sqlite:///{tmp_path / 'bench.db'}", persons_known=2000, copies=60, strangers=20)
    assert (figures["persons"], figures["calls"]) == (2000, 80)
    assert figures["recall"] >= 0.95
    assert figures["automatic_precision"] >= 0.99
    assert 0 < figures["p50_ms"] <= figures["p95_ms"]
