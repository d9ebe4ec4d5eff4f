"""The pytest plugin: steps as items, not applicable as a skip with its reason, failures with their exchanges."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SCENARIO = """\
name: {name}
title: A small journey
journey: 2
actors:
  hospital: {{site: dic}}
  gp: {{site: practice}}
steps:
  - wait: {{seconds: 0}}
  - title: the practice has a portal
    applies_to: [portal]
    read: {{at: gp, service: portal, query: "Consent"}}
    expect: {{status: 200}}
  - read: {{at: hospital, query: "Patient?gender=female"}}
    expect: {{status: 201}}
"""


@pytest.fixture
def federation(pytester: pytest.Pytester, node_url: str) -> Path:
    """A scenarios folder with two scenarios and a targets file whose nodes answer every search 200."""
    folder = pytester.mkdir("scenarios")
    for name in ("first", "second"):
        (folder / f"{name}.yaml").write_text(SCENARIO.format(name=name))
    (pytester.path / "suite.token").write_text("secret\n")
    targets = pytester.path / "targets.yaml"
    url = node_url
    targets.write_text(
        textwrap.dedent(f"""\
        name: a node that answers
        nodes:
          dic: {{role: dic, public_url: "{url}", tokens: {{suite: suite.token}}, capabilities: [read]}}
          practice: {{role: practice, public_url: "{url}", tokens: {{suite: suite.token}}}}
        """)
    )
    return folder


def options(pytester: pytest.Pytester, folder: Path) -> list[str]:
    targets = pytester.path / "targets.yaml"
    return ["-p", "conformance.plugin", "--hubnode-targets", str(targets), "--hubnode-scenarios-dir", str(folder)]


def test_each_step_is_reported_and_not_applicable_is_a_skip_with_its_reason(
    pytester: pytest.Pytester, federation: Path
) -> None:
    result = pytester.runpytest(*options(pytester, federation), "--hubnode-scenario", "first", "-rs", str(federation))
    result.assert_outcomes(passed=1, skipped=1, failed=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED [1] scenarios/first.yaml:9: not applicable: node practice lacks the capability 'portal'"]
    )
    result.stdout.fnmatch_lines(["*failed: status 200, expected 201*"])
    result.stdout.fnmatch_lines(["*GET http://127.0.0.1:*/fhir/Patient?gender=female -> 200*"])


def test_a_target_that_is_down_stops_the_session_naming_it(pytester: pytest.Pytester, federation: Path) -> None:
    targets = pytester.path / "targets.yaml"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    targets.write_text(
        targets.read_text().replace(str(targets.read_text().split('public_url: "')[1].split('"')[0]), closed)
    )
    result = pytester.runpytest(*options(pytester, federation), str(federation))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*node dic: http://127.0.0.1:*: cannot connect*"])


def test_without_targets_the_plugin_collects_nothing(pytester: pytest.Pytester, federation: Path) -> None:
    result = pytester.runpytest("-p", "conformance.plugin", str(federation))
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_every_scenario_is_collected_with_its_steps_in_order(pytester: pytest.Pytester, federation: Path) -> None:
    result = pytester.runpytest(*options(pytester, federation), "--collect-only", "-q", str(federation))
    result.stdout.fnmatch_lines(
        [
            "scenarios/first.yaml::01 wait 0s",
            "scenarios/first.yaml::02 the practice has a portal",
            "scenarios/first.yaml::03 read fhir Patient?gender=female",
            "scenarios/second.yaml::01 wait 0s",
            "*",
            "*",
        ]
    )


def test_a_broken_targets_file_stops_the_session(pytester: pytest.Pytester, federation: Path) -> None:
    (pytester.path / "targets.yaml").write_text("name: broken\n")
    result = pytester.runpytest(*options(pytester, federation), str(federation))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*targets.yaml:1: the targets file needs `nodes`*"])


def test_a_malformed_scenario_is_a_collection_error_with_its_line(pytester: pytest.Pytester, federation: Path) -> None:
    (federation / "second.yaml").write_text(SCENARIO.format(name="other"))
    result = pytester.runpytest(*options(pytester, federation), str(federation))
    result.stdout.fnmatch_lines(["*second.yaml:1: name 'other' must match the file name 'second'*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED
