from __future__ import annotations

from pathlib import Path

import pytest

from infra.errors import HubnodeError
from infra.spec import SpecError
from infra.stackfile import load_stack
from tests.conftest import PROJECT_DIR


def write_stack(folder: Path, text: str, stack: str = "dev") -> Path:
    path = folder / f"Pulumi.{stack}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("stack", ["dev", "site-example"])
def test_the_example_stacks_in_the_repository_are_valid(stack: str) -> None:
    assert load_stack(PROJECT_DIR, stack).nodes


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "config:\n  hubnode:site: dev\n  hubnode:ports: {fhir: 8080\n")
    with pytest.raises(HubnodeError) as caught:
        load_stack(tmp_path, "dev")
    assert caught.value.message.startswith(f"{path}:4:1: not valid YAML")


def test_a_bad_value_names_the_file_and_the_line_of_its_key(tmp_path: Path) -> None:
    path = write_stack(tmp_path, "# a node\nconfig:\n  hubnode:site: dev\n  hubnode:components: [fhir, mail]\n")
    with pytest.raises(SpecError) as caught:
        load_stack(tmp_path, "dev")
    assert caught.value.source == str(path)
    assert [str(p) for p in caught.value.problems] == [
        (
            "hubnode:components (line 4) = ['mail']: unknown component; "
            "this version runs: fhir, trustcentre, connector, gateway, idp, portal"
        )
    ]


def test_a_file_without_a_config_map_says_what_shape_is_expected(tmp_path: Path) -> None:
    write_stack(tmp_path, "- just\n- a list\n")
    with pytest.raises(HubnodeError, match="expected a map with a `config:` map"):
        load_stack(tmp_path, "dev")


def test_a_missing_stack_file_lists_the_stacks_there_are(tmp_path: Path) -> None:
    write_stack(tmp_path, "config: {hubnode:site: a}\n", stack="one")
    with pytest.raises(HubnodeError) as caught:
        load_stack(tmp_path, "two")
    assert "no stack file" in caught.value.message
    assert caught.value.fix.startswith("choose one of the stacks here (one)")


def test_secrets_in_a_stack_file_are_not_part_of_the_spec(tmp_path: Path) -> None:
    write_stack(tmp_path, "config:\n  hubnode:site: dev\n  hubnode:dbPassword:\n    secure: AAABAxyz\n")
    assert load_stack(tmp_path, "dev").nodes[0].site == "dev"


IDP_STACK = """config:
  hubnode:environment: local
  hubnode:federation: {name: dev-fed}
  hubnode:site: dev
  hubnode:components: [trustcentre, gateway, idp]
  hubnode:users: demo-users.yaml
"""


def test_the_example_stacks_say_which_are_local() -> None:
    environments = {
        stack: load_stack(PROJECT_DIR, stack).environment for stack in ("dev", "federation", "site-example")
    }
    assert environments == {"dev": "local", "federation": "local", "site-example": "site"}


def test_demo_users_may_live_in_a_file_beside_the_stack_file(tmp_path: Path) -> None:
    write_stack(tmp_path, IDP_STACK)
    (tmp_path / "demo-users.yaml").write_text("- {username: alice, role: patient, patient: p-0001}\n")
    [node] = load_stack(tmp_path, "dev").nodes
    assert [(u.username, u.role, u.patient) for u in node.users] == [("alice", "patient", "p-0001")]


def test_a_federation_node_may_name_its_own_users_file(tmp_path: Path) -> None:
    (tmp_path / "dic-users.yaml").write_text("- {username: bob, role: clinician}\n")
    node = "{site: dic, role: dic, components: [fhir, trustcentre, connector, gateway, idp], users: dic-users.yaml}"
    write_stack(tmp_path, f"config:\n  hubnode:environment: local\n  hubnode:nodes:\n    - {node}\n")
    [dic] = load_stack(tmp_path, "dev").nodes
    assert [u.username for u in dic.users] == ["bob"]


def test_a_missing_users_file_is_named_with_its_key(tmp_path: Path) -> None:
    write_stack(tmp_path, IDP_STACK)
    with pytest.raises(HubnodeError) as caught:
        load_stack(tmp_path, "dev")
    assert caught.value.message.startswith(f"hubnode:users names {tmp_path / 'demo-users.yaml'}, which cannot be read")


def test_a_users_file_is_checked_like_users_in_the_stack_file(tmp_path: Path) -> None:
    write_stack(tmp_path, IDP_STACK)
    (tmp_path / "demo-users.yaml").write_text("- {username: alice, role: patient, password: hunter2}\n")
    with pytest.raises(SpecError) as caught:
        load_stack(tmp_path, "dev")
    [problem] = caught.value.problems
    assert problem.key == "hubnode:users[0].password"
