from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.spec import DEFAULT_BASE_IMAGE, ImageSource, NodeSpec, SpecError, StackSpec, parse_stack

DEV = {"hubnode:site": "dev", "hubnode:components": ["fhir"], "hubnode:ports": {"fhir": 8080}}


def problems_of(config: dict[str, Any], stack: str = "dev") -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_stack(stack, config)
    return [str(p) for p in caught.value.problems]


def test_minimal_config_gets_the_documented_defaults() -> None:
    spec = parse_stack("dev", {"hubnode:site": "dev"})
    assert spec == StackSpec(
        stack="dev",
        nodes=(
            NodeSpec(
                site="dev",
                role="dic",
                components=("fhir",),
                database="embedded",
                ports={"fhir": 8080},
                images=ImageSource(kind="local", base_image=DEFAULT_BASE_IMAGE),
            ),
        ),
    )


def test_keys_of_other_providers_are_left_alone() -> None:
    assert parse_stack("dev", {**DEV, "docker:host": "unix:///var/run/docker.sock"}).nodes[0].site == "dev"


def test_a_missing_site_is_named_with_an_example() -> None:
    assert problems_of({}) == ["hubnode:site = None: required: the node's site id, e.g. ukl-dic"]


def test_an_unknown_component_names_the_components_this_version_runs() -> None:
    [problem] = problems_of({**DEV, "hubnode:components": ["fhir", "blockchain"]})
    assert problem == (
        "hubnode:components = ['blockchain']: unknown component; "
        "this version runs: fhir, trustcentre, connector, gateway"
    )


def test_an_unknown_database_lists_the_choices() -> None:
    [problem] = problems_of({**DEV, "hubnode:database": "mysql"})
    assert problem == "hubnode:database = 'mysql': choose one of embedded, postgres"


def test_a_misspelt_key_is_reported_not_ignored() -> None:
    [problem] = problems_of({**DEV, "hubnode:databse": "postgres"})
    assert problem.startswith("hubnode:databse = 'postgres': unknown key; known keys: site, role")


@pytest.mark.parametrize("port", [80, 70000, "8080", True, 8080.5])
def test_ports_must_be_unprivileged_whole_numbers(port: object) -> None:
    [problem] = problems_of({**DEV, "hubnode:ports": {"fhir": port}})
    assert problem == f"hubnode:ports.fhir = {port!r}: a whole number from 1024 to 65535"


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"hubnode:site": "Dev Site", "hubnode:role": "hospital", "hubnode:database": "mysql"})
    assert [p.split(" = ")[0] for p in problems] == ["hubnode:site", "hubnode:role", "hubnode:database"]


def test_the_error_message_names_the_source_and_how_to_fix_it() -> None:
    with pytest.raises(SpecError) as caught:
        parse_stack("dev", {"hubnode:site": "x"}, source="Pulumi.dev.yaml")
    assert str(caught.value).startswith("Pulumi.dev.yaml is invalid:\n  - hubnode:site = 'x'")
    assert "fix: edit Pulumi.dev.yaml" in str(caught.value)


def test_a_bad_stack_name_is_rejected() -> None:
    assert problems_of(DEV, stack="dev stack") == [
        "stack name = 'dev stack': letters, digits, '.', '_' or '-', at most 63"
    ]


def test_registry_images_need_a_registry_unless_every_image_is_named() -> None:
    [problem] = problems_of({**DEV, "hubnode:images": {"source": "registry"}})
    assert problem.startswith("hubnode:images.registry = None: required with source: registry")
    spec = parse_stack(
        "site",
        {
            **DEV,
            "hubnode:database": "postgres",
            "hubnode:images": {"source": "registry", "fhir": "r.example/hapi:1", "db": "postgres:17"},
        },
    )
    assert spec.nodes[0].images.overrides == {"fhir": "r.example/hapi:1", "db": "postgres:17"}


def test_image_overrides_must_be_known_images_with_valid_references() -> None:
    problems = problems_of({**DEV, "hubnode:images": {"fhri": "x:1", "db": "Not An Image"}})
    assert problems == [
        (
            "hubnode:images.fhri = 'x:1': unknown key; "
            "known keys: source, base, registry, fhir, db, trustcentre, connector, gateway"
        ),
        "hubnode:images.db = 'Not An Image': an image reference, e.g. postgres:17",
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from([f"hubnode:{k}" for k in ("site", "role", "components", "database", "ports", "images", "x")]),
        json_values,
    )
)
def test_any_config_either_parses_or_fails_with_a_spec_error(config: dict[str, Any]) -> None:
    """No input, however strange, escapes as anything but a SpecError naming a key."""
    problems: list[str] = []
    try:
        spec = parse_stack("dev", config)
    except SpecError as error:
        problems = [p.key for p in error.problems]
    else:
        assert spec.nodes[0].site == config["hubnode:site"]
        return
    assert problems
    assert all(key.startswith("hubnode:") for key in problems)
