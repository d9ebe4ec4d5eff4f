"""The vendored MII module examples (fixtures/data/mii-examples) and how they are validated, without a server."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fixtures.mii_examples import (
    EXAMPLES,
    Example,
    Issue,
    Measurement,
    Request,
    examples,
    issues_of,
    known_errors,
    measure,
    report,
    transactions,
    validation_requests,
    write_known_errors,
    write_transactions,
)
from tests.unit.test_profile_scripts import script

ROW = re.compile(
    r"^\| (?P<package>[\w.]+) \| (?P<short>\w+) \|.*\| (?P<files>\d+) \| (?P<resources>\d+) \| (?P<profiled>\d+) \|$"
)


def source_rows() -> dict[str, dict[str, int]]:
    """Short name -> files, resources, profiled as SOURCE.md records them."""
    rows = [m for line in (EXAMPLES / "SOURCE.md").read_text().splitlines() if (m := ROW.match(line))]
    return {m["short"]: {k: int(m[k]) for k in ("files", "resources", "profiled")} for m in rows}


def test_source_md_lists_every_package_of_the_manifest_once() -> None:
    manifest = script("refresh-profiles").read_manifest(script("refresh-profiles").MANIFEST)
    assert list(source_rows()) == [p.short_name for p in manifest]


def test_the_vendored_folders_hold_exactly_what_source_md_counts() -> None:
    found = examples()
    on_disk = {folder.name: len(list(folder.iterdir())) for folder in EXAMPLES.iterdir() if folder.is_dir()}
    resources = Counter(e.module for e in found)
    profiled = Counter(e.module for e in found if declares_a_profile(e))
    recorded = source_rows()
    assert on_disk == {short: row["files"] for short, row in recorded.items() if row["files"]}
    assert dict(resources) == {short: row["resources"] for short, row in recorded.items() if row["resources"]}
    assert dict(profiled) == {short: row["profiled"] for short, row in recorded.items() if row["profiled"]}
    assert all(profiled[short] for short in on_disk), "every module with examples declares profiles in some"


def declares_a_profile(example: Example) -> bool:
    if example.xml is not None:
        root = ET.fromstring(example.xml)  # noqa: S314 (our vendored files)
        return root.find("{http://hl7.org/fhir}meta/{http://hl7.org/fhir}profile") is not None
    assert example.resource is not None
    return bool(example.resource.get("meta", {}).get("profile"))


def test_every_vendored_file_is_an_instance_resource_that_parses() -> None:
    refresh = script("refresh-profiles")
    for path in sorted(EXAMPLES.glob("*/*")):
        assert path.suffix in {".json", ".xml"}, path
        resource_type, _ = refresh.kind_of(path.name, path.read_bytes())
        assert resource_type is not None, f"{path}: no FHIR resource"
        assert resource_type not in refresh.CONFORMANCE_TYPES, path
        if path.suffix == ".json":
            assert "text" not in json.loads(path.read_text()), f"{path}: narrative left in"


def test_every_example_has_a_type_and_a_unique_key() -> None:
    found = examples()
    assert len(found) == sum(row["resources"] for row in source_rows().values())
    assert len({e.key for e in found}) == len(found)
    assert all(e.resource_type and (e.resource is None) != (e.xml is None) for e in found)


def test_the_known_errors_name_vendored_examples_and_each_message_has_a_one_line_reason() -> None:
    known = known_errors()
    keys = {e.key for e in examples()}
    assert set(known.errors) <= keys
    used = {message_id for pairs in known.errors.values() for _, message_id in pairs}
    assert set(known.reasons) == used
    assert all(reason and reason != "TODO" and "\n" not in reason for reason in known.reasons.values())


def json_example(key: str, resource_type: str = "Observation", resource_id: str = "o") -> Example:
    return Example(key, resource_type, resource_id, {"resourceType": resource_type, "id": resource_id})


def test_examples_of_a_module_go_in_batches_each_entry_on_a_base_of_its_own() -> None:
    found = [json_example(f"labor/o{i}.json", resource_id=f"o{i}") for i in range(5)] + [json_example("fall/e.json")]
    requests = validation_requests(found, batch=2)
    assert [[e.key for e in r.examples] for r in requests] == [
        ["labor/o0.json", "labor/o1.json"],
        ["labor/o2.json", "labor/o3.json"],
        ["labor/o4.json"],
        ["fall/e.json"],
    ]
    bundle = json.loads(requests[0].body)
    assert bundle["type"] == "collection"
    assert [e["fullUrl"] for e in bundle["entry"]] == [
        "https://entry-0.validation.invalid/fhir/Observation/o0",
        "https://entry-1.validation.invalid/fhir/Observation/o1",
    ]
    assert requests[0].path == "Bundle/$validate"
    assert requests[0].content_type == "application/fhir+json"


def test_xml_examples_go_in_an_xml_collection_as_published() -> None:
    xml = b'<?xml version="1.0"?>\n<Consent xmlns="http://hl7.org/fhir"><id value="c"/></Consent>'
    [request] = validation_requests([Example("consent/c.xml", "Consent", "c", xml=xml)])
    assert request.content_type == "application/fhir+xml"
    bundle = ET.fromstring(request.body)  # noqa: S314 (built by the test)
    ns = "{http://hl7.org/fhir}"
    assert bundle.find(f"{ns}entry/{ns}fullUrl").get("value") == "https://entry-0.validation.invalid/fhir/Consent/c"
    assert bundle.find(f"{ns}entry/{ns}resource/{ns}Consent/{ns}id").get("value") == "c"


def issue(severity: str, where: str, message_id: str = "M", diagnostics: str = "d") -> dict[str, Any]:
    extension = [
        {"url": "http://hl7.org/fhir/StructureDefinition/operationoutcome-message-id", "valueString": message_id}
    ]
    return {"severity": severity, "expression": [where], "diagnostics": diagnostics, "extension": extension}


def test_issues_are_filed_under_the_example_of_their_entry_with_path_and_message_id() -> None:
    request = validation_requests([json_example("a/o.json"), json_example("a/p.json", resource_id="p")])[0]
    outcome = {
        "issue": [
            issue(
                "error", "Bundle.entry[1].resource/*Observation/p*/.code.coding[0]", "Validation_VAL_Profile_Minimum"
            ),
            issue("warning", "Bundle.entry[0].resource", "dom-6"),
            issue("information", "Bundle.entry[0].resource.status"),
            issue("fatal", "Bundle.entry[0].resource.status", "X"),
        ]
    }
    assert issues_of(request, outcome) == {
        "a/p.json": [Issue("error", "code.coding[0]", "Validation_VAL_Profile_Minimum", "d")],
        "a/o.json": [Issue("warning", "", "dom-6", "d"), Issue("error", "status", "X", "d")],
    }


class FakeServer:
    """Answers a collection with an unparsable entry as HAPI does (HAPI-0450 about the body), else by a rule."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, request: Request) -> tuple[int, Mapping[str, Any]]:
        self.calls.append([e.key for e in request.examples])
        if any(e.resource_id == "bad" for e in request.examples):
            text = "HAPI-0450: Failed to parse request body as JSON resource."
            return 400, {"issue": [{"severity": "error", "diagnostics": text}]}
        errors = [
            issue("error", f"Bundle.entry[{i}].resource.code", "Missing")
            for i, e in enumerate(request.examples)
            if e.resource_id == "nocode"
        ]
        return 200, {"issue": errors}


def test_a_collection_hapi_cannot_parse_is_asked_again_example_by_example() -> None:
    found = [json_example("m/a.json", resource_id="nocode"), json_example("m/b.json", resource_id="bad")]
    server = FakeServer()
    measurement = measure(found, server)
    assert server.calls == [["m/a.json", "m/b.json"], ["m/a.json"], ["m/b.json"]]
    assert measurement.errors() == {"m/a.json": [("code", "Missing")], "m/b.json": [("", "HAPI-0450")]}
    assert measurement.server_errors == ()


def test_a_5xx_is_reported_by_the_measurement() -> None:
    measurement = measure([json_example("m/a.json")], lambda _: (500, {"issue": []}))
    assert measurement.server_errors == ('m/a.json ...: HTTP 500: {"issue": []}',)
    assert "5xx: m/a.json" in report(measurement)


def test_the_report_counts_per_module_and_groups_errors_by_message_id() -> None:
    found = (json_example("m/a.json"), json_example("m/b.json"), json_example("n/c.json"))
    issues = {
        "m/a.json": [Issue("error", "code", "Missing", "code missing"), Issue("warning", "", "W", "w")],
        "n/c.json": [Issue("error", "code", "Missing", "code missing")],
    }
    text = report(Measurement(found, issues, ()))
    assert re.search(r"^m\s+2\s+1\s+1\s+1$", text, re.MULTILINE), text
    assert re.search(r"^total\s+3\s+2\s+2\s+1$", text, re.MULTILINE), text
    assert "     2  Missing  [m, n]" in text


def test_writing_the_known_errors_keeps_the_reasons_and_marks_a_new_message(tmp_path: Path) -> None:
    path = tmp_path / "known-errors.json"
    path.write_text(json.dumps({"reasons": {"Old": "why", "Gone": "was"}, "errors": {}}))
    issues = {"m/a.json": [Issue("error", "x", "New", ""), Issue("error", "y", "Old", "")]}
    write_known_errors(Measurement((json_example("m/a.json"),), issues, ()), path)
    known = known_errors(path)
    assert known.reasons == {"New": "TODO", "Old": "why"}
    assert known.errors == {"m/a.json": [("x", "New"), ("y", "Old")]}


def resource_example(key: str, resource: dict[str, Any], full_url: str = "") -> Example:
    return Example(key, resource["resourceType"], resource.get("id", ""), resource, full_url=full_url)


def test_a_module_transaction_puts_each_resource_by_id_after_those_it_references() -> None:
    patient = {"resourceType": "Patient", "id": "p"}
    encounter = {"resourceType": "Encounter", "id": "e", "subject": {"reference": "Patient/p"}}
    condition = {
        "resourceType": "Condition",
        "id": "c",
        "subject": {"reference": "https://example.org/fhir/Patient/p"},
        "encounter": {"reference": "Encounter/e"},
        "evidence": [{"detail": [{"reference": "Observation/elsewhere"}]}],
    }
    unnamed = {"resourceType": "Observation", "subject": {"reference": "urn:uuid:1"}}
    found = [
        resource_example("m/Condition-c.json", condition),
        resource_example("m/Bundle-b.json#0", encounter),
        resource_example("m/Bundle-b.json#1", patient),
        resource_example("m/Bundle-b.json#2", unnamed, full_url="urn:uuid:2"),
        resource_example("m/Patient-p.json", patient),
        resource_example("m/Patient-p2.json", {**patient, "gender": "male"}),
        Example("n/c.xml", "Consent", "c", xml=b"<Consent/>"),
    ]

    [made] = transactions(found)

    assert made.module == "m"
    assert [e["request"] for e in made.bundle["entry"]] == [
        {"method": "PUT", "url": "Patient/p"},
        {"method": "PUT", "url": "Encounter/e"},
        {"method": "PUT", "url": "Condition/c"},
        {"method": "POST", "url": "Observation"},
    ]
    assert made.bundle["entry"][3]["fullUrl"] == "urn:uuid:2"
    assert made.duplicates == ("m/Patient-p.json",)
    assert made.conflicts == ("m/Patient-p2.json",)
    assert made.unresolved == ("Observation/elsewhere", "urn:uuid:1")


def test_references_in_a_cycle_still_give_every_resource_one_entry(tmp_path: Path) -> None:
    a = {"resourceType": "Observation", "id": "a", "hasMember": [{"reference": "Observation/b"}]}
    b = {"resourceType": "Observation", "id": "b", "derivedFrom": [{"reference": "Observation/a"}]}
    text = write_transactions([resource_example("m/a.json", a), resource_example("m/b.json", b)], tmp_path)
    bundle = json.loads((tmp_path / "m.json").read_text())
    assert sorted(e["request"]["url"] for e in bundle["entry"]) == ["Observation/a", "Observation/b"]
    assert re.search(r"^m\s+2\s+0\s+0\s+0$", text, re.MULTILINE), text
