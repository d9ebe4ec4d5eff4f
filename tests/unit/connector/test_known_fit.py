"""Resources found fit are not model-checked again; nothing else about validation changes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector import validation
from connector.validation import KnownFit, resource_digest, validate
from tests.conftest import examples
from tests.unit.connector.conftest import mii_bundle


@pytest.fixture
def model_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The resource types model-checked from now on, in order."""
    checked: list[str] = []
    real = validation._structure

    def counting(model: Any, resource: dict[str, Any]) -> list[tuple[str, str]]:
        checked.append(resource["resourceType"])
        return real(model, resource)

    monkeypatch.setattr(validation, "_structure", counting)
    return checked


def test_a_bundle_sent_again_is_not_model_checked_again(model_checks: list[str]) -> None:
    entries = mii_bundle("pat-1")["entry"]
    known = KnownFit()
    assert validate(entries, known_fit=known) == []
    assert len(model_checks) == len(entries)
    assert validate(copy.deepcopy(entries), known_fit=known) == []
    assert len(model_checks) == len(entries)


def test_a_changed_resource_is_checked_again_and_an_unfit_one_never_remembered(model_checks: list[str]) -> None:
    entries = mii_bundle("pat-1")["entry"]
    known = KnownFit()
    validate(entries, known_fit=known)
    changed = copy.deepcopy(entries)
    changed[0]["resource"]["birthDate"] = "not-a-date"
    before = len(model_checks)
    first = validate(changed, known_fit=known)
    second = validate(changed, known_fit=known)
    assert first == second
    assert [p.expression for p in first] == ["Bundle.entry[0].resource.birthDate"]
    assert model_checks[before:] == ["Patient", "Patient"]


def test_what_depends_on_the_entry_is_checked_even_for_a_known_resource() -> None:
    entries = mii_bundle("pat-1")["entry"]
    known = KnownFit()
    validate(entries, known_fit=known)
    deleting = [{**entries[0], "request": {"method": "DELETE", "url": "Patient/x"}}]
    assert "DELETE" in validate(deleting, known_fit=known)[0].message
    twice = [entries[0], entries[0]]
    assert "appears twice" in validate(twice, known_fit=known)[0].message


def test_key_order_does_not_change_the_digest_but_any_value_does() -> None:
    resource = {"resourceType": "Patient", "id": "a", "gender": "male"}
    assert resource_digest(resource) == resource_digest(dict(reversed(list(resource.items()))))
    assert resource_digest(resource) != resource_digest({**resource, "gender": "female"})
    assert resource_digest({"a": 1}) != resource_digest({"a": "1"})


def test_the_least_recently_used_are_forgotten_beyond_capacity() -> None:
    known = KnownFit(capacity=2)
    first, second, third = (resource_digest({"n": n}) for n in range(3))
    known.add(first)
    known.add(second)
    assert first in known  # now the most recently used
    known.add(third)
    assert first in known
    assert third in known
    assert second not in known


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
GENDER = st.sampled_from(["male", "female", "other", "unknown", "x", 1, None])


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.too_slow])
@given(
    gender=GENDER,
    birth_date=st.one_of(st.just("1970-01-01"), st.text(max_size=12), st.integers()),
    extra=st.dictionaries(st.sampled_from(["name", "active", "telecom", "deceasedBoolean", "zzz"]), JSON, max_size=2),
)
def test_remembering_never_changes_an_answer(gender: Any, birth_date: Any, extra: dict[str, Any]) -> None:
    """Whatever is sent, in whichever order, the answer with a warm KnownFit is the answer without one."""
    patient = {"resourceType": "Patient", "id": "p", "gender": gender, "birthDate": birth_date, **extra}
    entries: list[Any] = [{"resource": patient, "request": {"method": "PUT", "url": "Patient/p"}}]
    known = KnownFit()
    fresh = validate(entries)
    assert validate(entries, known_fit=known) == fresh
    assert validate(copy.deepcopy(entries), known_fit=known) == fresh
