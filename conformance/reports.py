"""Reports of a run, for CI (JUnit XML), tools (JSON), people (HTML), FHIR (TestReport) and certification.

All are written from one `RunResult`. Not applicable is reported as skipped (JUnit), `skip` (TestReport)
and `not_applicable` (certificate), and is never counted as passed anywhere.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jinja2

from conformance.requirements import Requirement
from conformance.results import Outcome, RunResult, ScenarioResult, StepResult

TEMPLATES_DIR = Path(__file__).with_name("templates")
_TESTREPORT_RESULT = {
    Outcome.PASSED: "pass",
    Outcome.FAILED: "fail",
    Outcome.ERROR: "fail",
    Outcome.NOT_APPLICABLE: "pending",
}
_ASSERT_RESULT = {
    Outcome.PASSED: "pass",
    Outcome.FAILED: "fail",
    Outcome.ERROR: "error",
    Outcome.NOT_APPLICABLE: "skip",
}


@dataclass(frozen=True)
class ReportFiles:
    """Where `write_reports` put each report."""

    junit: Path
    results: Path
    html: Path
    certificate: Path
    test_reports: tuple[Path, ...]


def write_reports(run: RunResult, requirements: Mapping[str, Requirement], folder: Path) -> ReportFiles:
    """Write every report of `run` into `folder` (created if needed) and say where."""
    folder.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        junit=folder / "junit.xml",
        results=folder / "results.json",
        html=folder / "report.html",
        certificate=folder / "certificate.json",
        test_reports=tuple(folder / f"TestReport-{scenario.name}.json" for scenario in run.scenarios),
    )
    files.junit.write_text(junit_xml(run), encoding="utf-8")
    files.results.write_text(_dumps(results_json(run)), encoding="utf-8")
    files.html.write_text(html_report(run, requirements), encoding="utf-8")
    files.certificate.write_text(_dumps(certificate(run, requirements)), encoding="utf-8")
    for scenario, path in zip(run.scenarios, files.test_reports, strict=True):
        path.write_text(_dumps(test_report(scenario, run)), encoding="utf-8")
    return files


def junit_xml(run: RunResult) -> str:
    """JUnit XML: one testsuite per scenario, one testcase per step; not applicable is `skipped`."""
    root = ET.Element("testsuites", name=f"hubnode conformance: {run.target}")
    _junit_counts(root, [step for scenario in run.scenarios for step in scenario.steps])
    for scenario in run.scenarios:
        suite = ET.SubElement(root, "testsuite", name=scenario.name, timestamp=scenario.started)
        _junit_counts(suite, list(scenario.steps))
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="journey", value=str(scenario.journey))
        ET.SubElement(properties, "property", name="target", value=run.target)
        for step in scenario.steps:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"conformance.{scenario.name}",
                name=f"{step.index:02d} {step.title}",
                time=f"{step.duration_s:.3f}",
            )
            if step.requirements:
                case_properties = ET.SubElement(case, "properties")
                for requirement in step.requirements:
                    ET.SubElement(case_properties, "property", name="requirement", value=requirement)
            if step.outcome is Outcome.NOT_APPLICABLE:
                ET.SubElement(case, "skipped", message=f"not applicable: {step.message}")
            elif step.outcome in {Outcome.FAILED, Outcome.ERROR}:
                tag = "failure" if step.outcome is Outcome.FAILED else "error"
                ET.SubElement(case, tag, message=step.message).text = failure_text(step)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def results_json(run: RunResult) -> dict[str, Any]:
    """The whole model as JSON, plus each requirement's combined outcome."""
    data = asdict(run)
    for scenario, scenario_data in zip(run.scenarios, data["scenarios"], strict=True):
        scenario_data["outcome"] = scenario.outcome.value
        scenario_data["duration_s"] = scenario.duration_s
    data["requirements"] = {rid: outcome.value for rid, outcome in run.requirement_outcomes().items()}
    return data


def test_report(scenario: ScenarioResult, run: RunResult) -> dict[str, Any]:
    """A FHIR R4 TestReport of one scenario: one test per step, its assert's result the step's outcome."""
    applicable = [step for step in scenario.steps if step.outcome is not Outcome.NOT_APPLICABLE]
    passed = sum(step.outcome is Outcome.PASSED for step in applicable)
    report: dict[str, Any] = {
        "resourceType": "TestReport",
        "id": scenario.name,
        "name": scenario.title,
        "status": "completed",
        "testScript": {"display": f"scenarios/{scenario.name}.yaml"},
        "result": _TESTREPORT_RESULT[scenario.outcome],
        "tester": f"hubnode conformance suite against {run.target}",
        "issued": scenario.started,
        "test": [_test(step) for step in scenario.steps],
    }
    if applicable:
        report["score"] = round(100 * passed / len(applicable), 1)
    return report


def certificate(run: RunResult, requirements: Mapping[str, Requirement]) -> dict[str, Any]:
    """Which requirements the target passed, failed, could not be tested on (not applicable) or were not run.

    `result` is `passed` only when nothing failed and every SHALL requirement passed; a SHALL requirement
    that was not applicable or not run makes it `incomplete`, so a certificate never overstates.
    """
    outcomes = run.requirement_outcomes()
    grouped: dict[str, list[str]] = {"passed": [], "failed": [], "error": [], "not_applicable": [], "not_tested": []}
    for requirement in requirements:
        outcome = outcomes.get(requirement)
        key = "not_tested" if outcome is None else outcome.value.replace("-", "_")
        grouped[key].append(requirement)
    unknown = sorted(set(outcomes) - set(requirements))
    shall = [rid for rid, requirement in requirements.items() if requirement.level == "SHALL"]
    if grouped["failed"] or grouped["error"] or unknown:
        result = "failed"
    elif all(outcomes.get(rid) is Outcome.PASSED for rid in shall):
        result = "passed"
    else:
        result = "incomplete"
    return {
        "target": run.target,
        "issued": run.started,
        "versions": dict(run.versions),
        "result": result,
        "requirements": grouped,
        "unknown_requirements": unknown,
        "counts": {key: len(ids) for key, ids in grouped.items()},
        "scenarios": {scenario.name: scenario.outcome.value for scenario in run.scenarios},
    }


def html_report(run: RunResult, requirements: Mapping[str, Requirement]) -> str:
    """A page a person reads: summary, requirement x scenario matrix, each failure with its HTTP excerpts."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    outcomes = run.requirement_outcomes()
    return environment.get_template("report.html.j2").render(
        run=run,
        requirements=requirements,
        outcomes=outcomes,
        matrix=run.matrix(),
        rows=[*requirements, *sorted(set(outcomes) - set(requirements))],
        counts={outcome.value: sum(o is outcome for o in outcomes.values()) for outcome in Outcome},
        Outcome=Outcome,
    )


def _test(step: StepResult) -> dict[str, Any]:
    assertion: dict[str, Any] = {"result": _ASSERT_RESULT[step.outcome]}
    if step.message:
        assertion["message"] = step.message
    if step.requirements:
        assertion["detail"] = "verifies " + ", ".join(step.requirements)
    return {"name": f"{step.index:02d} {step.title}", "action": [{"assert": assertion}]}


def _junit_counts(element: ET.Element, steps: list[StepResult]) -> None:
    element.set("tests", str(len(steps)))
    element.set("failures", str(sum(step.outcome is Outcome.FAILED for step in steps)))
    element.set("errors", str(sum(step.outcome is Outcome.ERROR for step in steps)))
    element.set("skipped", str(sum(step.outcome is Outcome.NOT_APPLICABLE for step in steps)))
    element.set("time", f"{sum(step.duration_s for step in steps):.3f}")


def failure_text(step: StepResult) -> str:
    """A failed step as text: its message, then every HTTP exchange it made (JUnit and the pytest plugin)."""
    parts = [step.message]
    for exchange in step.exchanges:
        parts.append(f"{exchange.method} {exchange.url} -> {exchange.status}")
        if exchange.request:
            parts.append(f"request:\n{exchange.request}")
        if exchange.response:
            parts.append(f"response:\n{exchange.response}")
    return "\n".join(parts)


def _dumps(data: object) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
