"""`hubnode check`: refuses malformed input with its line, runs, prints, writes reports, exits by what failed."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest

from conformance.check import main
from conformance.results import Outcome, RunResult, ScenarioResult, StepResult

SCENARIO = """\
name: {name}
title: A small journey
journey: 2
actors:
  hospital: {{site: dic}}
  gp: {{site: practice}}
steps:
  - read: {{at: hospital, query: "Patient?gender=female"}}
    verifies: [HUB-FHIR-11]
    expect: {{status: 200}}
  - title: the practice has a portal
    applies_to: [portal]
    read: {{at: gp, service: portal, query: "Consent"}}
    expect: {{status: 200}}
"""


def scenarios(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for name in names:
        (folder / f"{name}.yaml").write_text(SCENARIO.format(name=name))
    return folder


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def targets_file(tmp_path: Path, capabilities: str, url: str | None = None, token: str = "secret") -> Path:  # noqa: S107
    (tmp_path / "suite.token").write_text(f"{token}\n")
    url = url or f"http://127.0.0.1:{closed_port()}"
    path = tmp_path / "targets.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        name: a test node
        nodes:
          dic: {{role: dic, public_url: "{url}", tokens: {{suite: suite.token}}, capabilities: [{capabilities}]}}
          practice: {{role: practice, public_url: "{url}", tokens: {{suite: suite.token}}, capabilities: [read]}}
        """)
    )
    return path


def test_a_run_where_nothing_applies_passes_writes_every_report_and_says_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node_url: str
) -> None:
    targets = targets_file(tmp_path, "", node_url)
    argv = ["--targets", str(targets), "--scenarios-dir", str(scenarios(tmp_path, "journey"))]
    assert main([*argv, "--report-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert (
        "  - 01 read fhir Patient?gender=female (0.0 s)\n      not-applicable: node dic lacks the capability 'read'"
        in out
    )
    assert "  - 02 the practice has a portal" in out
    assert f"report: {tmp_path / 'out' / 'report.html'}" in out
    assert "certificate: incomplete" in out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "junit.xml",
        "results.json",
        "report.html",
        "certificate.json",
        "TestReport-journey.json",
    }
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["requirements"] == {"HUB-FHIR-11": "not-applicable"}


def test_a_step_whose_expectation_does_not_hold_makes_the_run_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node_url: str
) -> None:
    folder = scenarios(tmp_path, "journey")
    (folder / "journey.yaml").write_text(
        (folder / "journey.yaml").read_text().replace("{status: 200}", "{status: 201}", 1)
    )
    argv = ["--targets", str(targets_file(tmp_path, "read", node_url)), "--scenarios-dir", str(folder)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "  ✗ 01 read fhir Patient?gender=female" in out
    assert "failed: status 200, expected 201" in out
    assert "journey" in out.split("scenario", 1)[1]  # the summary table names the scenario
    assert (tmp_path / "report" / "junit.xml").is_file()  # reports go beside the targets file by default


def test_a_target_that_cannot_be_reached_is_named_once_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--targets", str(targets_file(tmp_path, "read")), "--scenarios-dir", str(scenarios(tmp_path, "journey"))]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "2 target problem(s)" in captured.err
    assert "node dic: http://127.0.0.1:" in captured.err
    assert "cannot connect" in captured.err
    assert "check the URL and that the node is up" in captured.err
    assert "==> journey" not in captured.out
    assert "Traceback" not in captured.err


def test_a_token_the_target_refuses_is_named_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node_url: str
) -> None:
    argv = [
        "--targets",
        str(targets_file(tmp_path, "read", node_url, "wrong")),
        "--scenarios-dir",
        str(scenarios(tmp_path, "journey")),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "node dic: token 'suite':" in err
    assert "refuses it (401): the token is wrong or expired" in err


def test_only_the_scenarios_asked_for_run_and_an_unknown_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node_url: str
) -> None:
    folder = scenarios(tmp_path, "first", "second")
    argv = ["--targets", str(targets_file(tmp_path, "", node_url)), "--scenarios-dir", str(folder)]
    assert main([*argv, "--scenario", "second"]) == 0
    out = capsys.readouterr().out
    assert "==> second" in out
    assert "==> first" not in out
    assert main([*argv, "--scenario", "third"]) == 2
    assert "no scenario 'third'" in capsys.readouterr().err


def test_a_malformed_scenario_is_refused_with_its_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = scenarios(tmp_path, "journey")
    broken = folder / "journey.yaml"
    broken.write_text(broken.read_text().replace("expect: {status: 200}\n  - title", "expect: {typo: 200}\n  - title"))
    assert main(["--targets", str(targets_file(tmp_path, "")), "--scenarios-dir", str(folder)]) == 2
    assert f"{broken}:10: step 1 expect: unknown key `typo`" in capsys.readouterr().err


def test_a_malformed_targets_file_is_refused_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = targets_file(tmp_path, "teleport")
    assert main(["--targets", str(path), "--scenarios-dir", str(scenarios(tmp_path, "journey"))]) == 2
    assert f"{path}:3: node dic: unknown capability 'teleport'" in capsys.readouterr().err


def test_a_stack_that_was_never_brought_up_is_refused_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--stack", "nowhere", "--project-dir", str(tmp_path), "--scenarios-dir", str(scenarios(tmp_path, "j"))]
    assert main(argv) == 2
    assert "bring the stack up first (`hubnode up --stack nowhere`)" in capsys.readouterr().err


def test_only_the_scenarios_bearing_on_a_requirement_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node_url: str
) -> None:
    folder = scenarios(tmp_path, "first")
    argv = ["--targets", str(targets_file(tmp_path, "", node_url)), "--scenarios-dir", str(folder)]
    assert main([*argv, "--requirement", "HUB-FHIR-11"]) == 0
    assert "==> first" in capsys.readouterr().out
    assert main([*argv, "--requirement", "HUB-PROC-01"]) == 2
    assert "no scenario has a step that verifies HUB-PROC-01" in capsys.readouterr().err


def test_the_summary_counts_each_outcome_per_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.check import summary  # noqa: PLC0415 - the table alone

    steps = (
        StepResult(1, "a", "read", Outcome.PASSED, (), 0.1),
        StepResult(2, "b", "read", Outcome.FAILED, (), 0.1, "count 0"),
        StepResult(3, "c", "read", Outcome.NOT_APPLICABLE, (), 0.0, "no portal"),
    )
    table = summary(RunResult("t", "now", (ScenarioResult("journey", "J", 2, "now", steps),)))
    header, row = table.splitlines()
    assert header.split() == ["scenario", "passed", "failed", "error", "not-applicable", "outcome"]
    assert row.split() == ["journey", "1", "1", "0", "1", "failed"]
