"""Issue 12: the suite judges a node it did not bring up. A plain HAPI FHIR server, named in a targets file
with only the `fhir` capability, gets the FHIR-level requirements checked and everything else reported not
applicable with the reason; a node the suite cannot reach as told ends with one clear error, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance import check
from conformance.requirements import load_requirements
from infra.local import LocalLauncher
from tests.integration.conftest import node_plan

pytestmark = pytest.mark.usefixtures("built")
#: What a server that only speaks FHIR can show (docs/scenarios.md, fhir-server.yaml).
FHIR_LEVEL = {"HUB-FHIR-01", "HUB-FHIR-02", "HUB-FHIR-11", "HUB-TRN-01", "HUB-TRN-02", "HUB-TRN-03"}


def test_a_plain_hapi_server_is_judged_on_what_it_can_do(launcher: LocalLauncher, tmp_path: Path) -> None:
    plan = node_plan("itest-foreign")
    launcher.up([plan])
    fhir_url = plan.endpoints["fhir"]
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        f"name: a plain HAPI FHIR server\n"
        f"nodes:\n"
        f"  dic: {{role: dic, public_url: {fhir_url.removesuffix('/fhir')!r}, fhir_url: {fhir_url!r},"
        f" capabilities: [fhir]}}\n"
    )
    report = tmp_path / "report"

    status = check.main(["--targets", str(targets), "--report-dir", str(report)])

    certificate = json.loads((report / "certificate.json").read_text())
    grouped = certificate["requirements"]
    assert status == 0, grouped
    assert set(grouped["passed"]) == FHIR_LEVEL
    assert grouped["failed"] == grouped["error"] == grouped["not_tested"] == []
    assert set(grouped["not_applicable"]) == set(load_requirements()) - FHIR_LEVEL
    assert certificate["result"] == "incomplete"  # never "passed": the hub-node requirements were not shown
    results = json.loads((report / "results.json").read_text())
    reasons = {
        step["message"]
        for scenario in results["scenarios"]
        for step in scenario["steps"]
        if step["outcome"] == "not-applicable"
    }
    assert "node dic lacks the capability 'ingest'" in reasons


def test_a_target_that_refuses_the_suite_ends_with_one_error_naming_it(
    launcher: LocalLauncher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = node_plan("itest-unreachable")
    launcher.up([plan])
    fhir_url = plan.endpoints["fhir"]
    https_url = fhir_url.replace("http://", "https://")  # HAPI speaks no TLS: the handshake fails
    targets = tmp_path / "targets.yaml"
    targets.write_text(
        "name: told wrong\n"
        "nodes:\n"
        f"  dic: {{role: dic, public_url: {https_url.removesuffix('/fhir')!r}, fhir_url: {https_url!r},"
        " capabilities: [fhir]}\n"
    )

    status = check.main(["--targets", str(targets), "--report-dir", str(tmp_path / "report")])

    err = capsys.readouterr().err
    assert status == check.EXIT_INVALID
    assert "1 target problem(s)" in err
    assert "dic" in err
    assert "Traceback" not in err
    assert not (tmp_path / "report").exists()
