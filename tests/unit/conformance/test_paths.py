from __future__ import annotations

import pytest

from conformance.paths import PathCheck, PathSyntaxError, SimplePath

TASK = {
    "resourceType": "Task",
    "status": "completed",
    "output": [
        {"type": {"coding": [{"code": "count"}]}, "valueInteger": 7},
        {"type": {"coding": [{"code": "node-count"}]}, "valueString": "dic:5"},
        {"type": {"coding": [{"code": "node-count"}]}, "valueString": "practice:<5"},
        {"type": {"coding": [{"code": "obfuscated"}]}, "valueBoolean": True},
    ],
}


def values(path: str) -> list[object]:
    return SimplePath.parse(path).values(TASK)


def test_lists_flatten_along_the_path_as_in_fhirpath() -> None:
    assert values("output.type.coding.code") == ["count", "node-count", "node-count", "obfuscated"]


def test_an_index_picks_from_the_collection_so_far() -> None:
    assert values("output[1].valueString") == ["dic:5"]
    assert values("output[9].valueString") == []


def test_a_filter_keeps_items_whose_sub_path_has_the_value() -> None:
    assert values("output[type.coding.code=node-count].valueString") == ["dic:5", "practice:<5"]


def test_a_missing_element_reaches_nothing() -> None:
    assert values("statusReason.text") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must not be empty"),
        ("output[0", "is not closed"),
        ("output]", "without '\\['"),
        ("output.[0]", "must start with an element name"),
        ("output[x]", "must be an index like"),
        ("output[0]x", "unexpected 'x'"),
    ],
)
def test_syntax_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(PathSyntaxError, match=message):
        SimplePath.parse(text)


def check(path: str, kind: str, expected: object) -> str | None:
    return PathCheck(SimplePath.parse(path), kind, expected).failure(TASK)  # type: ignore[arg-type]


def test_equals_needs_every_value_to_match_and_at_least_one_value() -> None:
    assert check("status", "equals", "completed") is None
    assert check("output[type.coding.code=count].valueInteger", "equals", "7") is None
    assert "expected every value to equal 'failed'" in (check("status", "equals", "failed") or "")
    assert check("statusReason.text", "equals", "x") is not None


def test_contains_needs_one_matching_value() -> None:
    assert check("output.valueString", "contains", "practice:<5") is None
    assert "among ['dic:5', 'practice:<5']" in (check("output.valueString", "contains", "x") or "")


def test_a_boolean_never_equals_a_number() -> None:
    assert check("output.valueBoolean", "equals", expected=True) is None
    assert check("output.valueBoolean", "equals", 1) is not None


def test_exists_and_count() -> None:
    assert check("statusReason", "exists", expected=False) is None
    assert check("output", "exists", expected=False) is not None
    assert check("output", "count", 4) is None
    assert "expected 2 values, got 4" in (check("output", "count", 2) or "")


def test_excludes_fails_on_any_value_with_the_text_in_it() -> None:
    assert check("output.valueString", "excludes", "research") is None
    assert "expected no value with 'practice' in it" in (check("output.valueString", "excludes", "practice") or "")


def test_mentions_passes_when_any_value_has_the_text_in_it() -> None:
    assert check("output.valueString", "mentions", "actic") is None
    assert "expected a value with 'hospital' in it" in (check("output.valueString", "mentions", "hospital") or "")
