from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.spec import (
    DEFAULT_BASE_IMAGE,
    DemoUser,
    ImageSource,
    KubernetesSettings,
    NodeSpec,
    SpecError,
    StackSpec,
    parse_stack,
)
from tests.conftest import stack_config

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
        "this version runs: fhir, trustcentre, connector, gateway, idp, portal"
    )


def test_an_unknown_database_lists_the_choices() -> None:
    [problem] = problems_of({**DEV, "hubnode:database": "mysql"})
    assert problem == "hubnode:database = 'mysql': choose one of embedded, postgres"


def test_pulumi_up_runs_on_docker_unless_the_stack_chooses_kubernetes_and_nothing_else() -> None:
    assert parse_stack("dev", DEV).platform == "docker"
    assert parse_stack("dev", {**DEV, "hubnode:platform": "kubernetes"}).platform == "kubernetes"
    assert problems_of({**DEV, "hubnode:platform": "k8s"}) == [
        "hubnode:platform = 'k8s': choose one of docker, kubernetes"
    ]


def test_kubernetes_settings_default_to_the_single_node_cluster_and_refuse_what_it_would_not_take() -> None:
    assert parse_stack("dev", DEV).kubernetes == KubernetesSettings("local-path", "10Gi", "10.96.0.0/24")
    given = {"storageClass": "fast-ssd", "volumeSize": "2Ti", "serviceRange": "10.100.0.0/20"}
    assert parse_stack("dev", {**DEV, "hubnode:kubernetes": given}).kubernetes == KubernetesSettings(
        "fast-ssd", "2Ti", "10.100.0.0/20"
    )
    wrong = {
        "storageClass": "Fast SSD",
        "volumeSize": "10GB",
        "serviceRange": "10.96.0.1/24",
        "nodes": 3,
        "hostPath": 7,
    }
    assert problems_of({**DEV, "hubnode:kubernetes": wrong}) == [
        "hubnode:kubernetes.nodes = 3: unknown key; known: storageClass, volumeSize, serviceRange, hostPath",
        "hubnode:kubernetes.hostPath = 7: a folder, e.g. .hubnode/volumes",
        "hubnode:kubernetes.storageClass = 'Fast SSD': a storage class name, e.g. local-path",
        "hubnode:kubernetes.volumeSize = '10GB': a size in Mi, Gi or Ti, e.g. 10Gi",
        "hubnode:kubernetes.serviceRange = '10.96.0.1/24': the cluster's IPv4 Service range, e.g. 10.96.0.0/24",
    ]


def test_a_host_folder_for_volumes_is_taken_relative_to_the_project(tmp_path: Path) -> None:
    settings = parse_stack("dev", {**DEV, "hubnode:kubernetes": {"hostPath": "v"}}).kubernetes
    assert settings.host_path == "v"
    assert settings.resolved(tmp_path).host_path == str(tmp_path.resolve() / "v")
    assert KubernetesSettings().resolved(tmp_path) == KubernetesSettings()


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
            "known keys: source, base, registry, fhir, db, trustcentre, connector, gateway, idp, portal"
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


IDP_NODE = {
    "hubnode:site": "dev",
    "hubnode:federation": {"name": "dev-fed"},
    "hubnode:components": ["trustcentre", "gateway", "idp"],
}
ALICE = {"username": "alice", "role": "patient", "patient": "p-0001", "fhirUser": "Patient/p-0001"}


def test_a_stack_is_a_site_unless_it_says_it_is_local() -> None:
    assert parse_stack("dev", DEV).environment == "site"
    assert parse_stack("dev", {**DEV, "hubnode:environment": "local"}).environment == "local"
    assert problems_of({**DEV, "hubnode:environment": "laptop"}) == [
        "hubnode:environment = 'laptop': choose one of local, site"
    ]


def test_demo_users_of_a_local_stack_are_parsed_into_the_node() -> None:
    spec = parse_stack("dev", {**IDP_NODE, "hubnode:environment": "local", "hubnode:users": [ALICE]})
    assert spec.nodes[0].users == (DemoUser("alice", "patient", patient="p-0001", fhir_user="Patient/p-0001"),)


def test_a_site_stack_refuses_demo_users_naming_the_key() -> None:
    [problem] = problems_of({**IDP_NODE, "hubnode:users": [ALICE]})
    assert problem.startswith("hubnode:users = ['alice']: demo users are for local stacks only")
    assert "hubnode:environment: local" in problem


def test_a_password_in_the_stack_file_is_refused_without_being_repeated() -> None:
    user = {**ALICE, "password": "hunter2"}
    [problem] = problems_of({**IDP_NODE, "hubnode:environment": "local", "hubnode:users": [user]})
    assert problem.startswith("hubnode:users[0].password = '(hidden)': never a literal in the stack file")
    assert "hunter2" not in problem


def test_each_field_of_a_demo_user_is_checked() -> None:
    users = [
        {"username": "Al", "role": "doctor", "fhirUser": "Encounter/1", "patient": "p 1", "email": "a@b"},
        "bob",
        {"username": "carol", "role": "patient"},
        {"username": "carol", "role": "clinician"},
    ]
    problems = problems_of({**IDP_NODE, "hubnode:environment": "local", "hubnode:users": users})
    assert [p.split(" = ")[0] for p in problems] == [
        "hubnode:users[0].email",
        "hubnode:users[0].username",
        "hubnode:users[0].role",
        "hubnode:users[0].patient",
        "hubnode:users[0].fhirUser",
        "hubnode:users[1]",
        "hubnode:users",
    ]


def test_an_idp_needs_a_gateway_on_its_node() -> None:
    [problem] = problems_of({**DEV, "hubnode:components": ["fhir", "idp"], "hubnode:ports": {"fhir": 8080}})
    assert problem == "hubnode:components = ['fhir', 'idp']: an idp needs a gateway on its node (its public door)"


def test_demo_users_need_an_idp_on_their_node() -> None:
    [problem] = problems_of({**DEV, "hubnode:environment": "local", "hubnode:users": [ALICE]})
    assert problem == "hubnode:users = ['alice']: demo users live in the node's idp: add idp to components"


def test_in_a_federation_demo_users_belong_to_a_node() -> None:
    node = {"site": "dic", "role": "dic", "components": ["fhir", "connector", "trustcentre", "gateway", "idp"]}
    spec = parse_stack("fed", {"hubnode:environment": "local", "hubnode:nodes": [{**node, "users": [ALICE]}]})
    assert [u.username for u in spec.nodes[0].users] == ["alice"]
    problems = problems_of({"hubnode:environment": "local", "hubnode:nodes": [node], "hubnode:users": [ALICE]})
    [problem] = problems
    assert problem.startswith("hubnode:users = [{'username': 'alice'")
    assert problem.endswith(": in a federation stack, set this per node under hubnode:nodes")


def test_a_node_validates_strictly_for_shape_and_warns_for_terminology_unless_it_says_otherwise() -> None:
    [default] = parse_stack("dev", DEV).nodes
    assert (default.validation.profiles, default.validation.terminology) == ("strict", "warn")
    [mixed] = parse_stack("dev", {**DEV, "hubnode:validation": {"terminology": "strict"}}).nodes
    assert (mixed.validation.profiles, mixed.validation.terminology) == ("strict", "strict")
    for mode, terminology in (("strict", "strict"), ("warn", "warn"), ("off", "warn")):
        [node] = parse_stack("dev", {**DEV, "hubnode:validation": mode}).nodes
        assert (node.validation.profiles, node.validation.terminology) == (mode, terminology)


def test_a_wrong_validation_setting_names_the_key_and_the_choices() -> None:
    assert problems_of({**DEV, "hubnode:validation": {"profiles": "lax", "terminology": "off", "x": 1}}) == [
        "hubnode:validation.x = 1: unknown key; known: profiles, terminology",
        "hubnode:validation.profiles = 'lax': choose one of strict, warn, off",
        "hubnode:validation.terminology = 'off': choose one of strict, warn",
    ]
    assert problems_of({**DEV, "hubnode:validation": 3}) == [
        "hubnode:validation = 3: strict, warn, off, or {profiles: strict, terminology: warn}"
    ]


KUBERNETES_POSTGRES = {**DEV, "hubnode:platform": "kubernetes", "hubnode:database": "postgres"}


def test_hapi_and_the_connector_on_postgresql_run_as_several_pods_on_kubernetes_and_everything_else_as_one() -> None:
    [node] = parse_stack("dev", {**KUBERNETES_POSTGRES, "hubnode:replicas": {"fhir": 2}}).nodes
    assert node.replicas == {"fhir": 2}
    [dic, _] = parse_stack("cluster", stack_config("cluster")).nodes
    assert dic.replicas == {"fhir": 2, "connector": 2}
    assert parse_stack("dev", KUBERNETES_POSTGRES).nodes[0].replicas == {}


def test_replicas_that_cannot_work_are_refused_each_with_its_reason() -> None:
    components = ["fhir", "trustcentre", "connector", "gateway"]
    config = {"hubnode:site": "dev", "hubnode:components": components, "hubnode:ports": {"gateway": 8443, "peer": 9443}}
    replicas = {"fhir": 2, "connector": 2, "trustcentre": 2, "portal": 1, "gateway": 0}
    assert problems_of({**config, "hubnode:platform": "kubernetes", "hubnode:replicas": replicas}) == [
        "hubnode:replicas.fhir = 2: at most 1 on the embedded database, which one process owns (or database: postgres)",
        (
            "hubnode:replicas.connector = 2: at most 1 on the embedded database, which one process owns "
            "(or database: postgres)"
        ),
        (
            "hubnode:replicas.trustcentre = 2: at most 1, as it holds its pseudonyms and consents in one store "
            "beside one process"
        ),
        "hubnode:replicas.portal = 1: a component of this node: fhir, trustcentre, connector, gateway",
        "hubnode:replicas.gateway = 0: a whole number of pods, 1 or more",
    ]
    assert problems_of({**KUBERNETES_POSTGRES, "hubnode:platform": "docker", "hubnode:replicas": {"fhir": 2}}) == [
        "hubnode:replicas.fhir = 2: at most 1 on Docker; more with hubnode:platform: kubernetes"
    ]
