"""scripts/refresh-profiles and scripts/check-profile-validation, without Docker and without GitHub."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.local_http import serving

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
PROFILES = SCRIPTS.parent / "services" / "hapi" / "src" / "main" / "resources" / "profiles"


def script(name: str) -> ModuleType:
    """A script without a .py suffix, imported as a module."""
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(SCRIPTS / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def mirrors(tmp_path: Path) -> Path:
    """MIRRORS/acme+kds/repo: a bare repository whose tag v1 holds one package's generated resources."""
    work = tmp_path / "work"
    generated = work / "fsh-generated" / "resources"
    generated.mkdir(parents=True)
    (work / "package.json").write_text(json.dumps({"name": "acme.kds", "version": "1.0.0", "license": "CC-BY-4.0"}))
    resources = {
        "StructureDefinition-p.json": {
            "resourceType": "StructureDefinition",
            "url": "https://acme.example/StructureDefinition/p",
            "kind": "resource",
            "text": {"div": "<div>narrative</div>"},
        },
        "StructureDefinition-lm.json": {"resourceType": "StructureDefinition", "url": "u", "kind": "logical"},
        "ValueSet-v.json": {"resourceType": "ValueSet", "url": "https://acme.example/ValueSet/v"},
        "Patient-example.json": {"resourceType": "Patient", "meta": {"profile": ["https://acme.example/p"]}},
        "SearchParameter-s.json": {"resourceType": "SearchParameter"},
        "Bundle-search-parameters.json": {
            "resourceType": "Bundle",
            "entry": [{"resource": {"resourceType": "SearchParameter"}}],
        },
        "Bundle-record.json": {
            "resourceType": "Bundle",
            "entry": [
                {"resource": {"resourceType": "Patient", "text": {"div": "<div/>"}}},
                {"resource": {"resourceType": "Encounter"}},
            ],
        },
    }
    for name, resource in resources.items():
        (generated / name).write_text(json.dumps(resource, indent=2))
    (generated / "CodeSystem-c.xml").write_text(
        '<CodeSystem xmlns="http://hl7.org/fhir"><url value="https://acme.example/CodeSystem/c"/></CodeSystem>'
    )
    git(work, "init", "-q")
    git(work, "add", ".")
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "kds")
    git(work, "tag", "v1")
    root = tmp_path / "mirrors"
    root.mkdir()
    git(tmp_path, "clone", "-q", "--bare", str(work), str(root / "acme+kds" / "repo"))
    return root


def test_refresh_keeps_only_conformance_resources_and_records_their_source(mirrors: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "packages.toml"
    manifest.write_text(
        '[[package]]\nname = "acme.kds"\nrepo = "acme/kds"\nref = "v1"\npaths = ["fsh-generated/resources"]\n'
    )
    target = tmp_path / "profiles"
    refresh = script("refresh-profiles")
    argv = [str(mirrors), "--manifest", str(manifest), "--target", str(target)]

    assert refresh.main(argv) == 0

    files = sorted(p.name for p in (target / "acme.kds").iterdir())
    assert files == ["CodeSystem-c.xml", "StructureDefinition-p.json", "ValueSet-v.json"]
    assert "text" not in json.loads((target / "acme.kds" / "StructureDefinition-p.json").read_text())
    assert (target / "INDEX").read_text().splitlines() == [f"acme.kds/{name}" for name in files]
    source = (target / "SOURCE.md").read_text()
    assert "| acme.kds | 1.0.0 | https://github.com/acme/kds | v1 |" in source
    assert "| CC-BY-4.0 | 3 |" in source
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert refresh.main(argv) == 0
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before


def test_refresh_with_examples_keeps_the_instances_and_what_lies_beside_them(mirrors: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "packages.toml"
    manifest.write_text(
        '[[package]]\nname = "acme.kds"\nrepo = "acme/kds"\nref = "v1"\npaths = ["fsh-generated/resources"]\n'
    )
    target = tmp_path / "examples"
    target.mkdir()
    (target / "known-errors.json").write_text("{}")
    refresh = script("refresh-profiles")
    argv = [str(mirrors), "--examples", "--manifest", str(manifest), "--target", str(target)]

    assert refresh.main(argv) == 0

    assert sorted(p.name for p in (target / "kds").iterdir()) == ["Bundle-record.json", "Patient-example.json"]
    record = json.loads((target / "kds" / "Bundle-record.json").read_text())
    assert "text" not in record["entry"][0]["resource"]
    assert "| acme.kds | kds | 1.0.0 | https://github.com/acme/kds | v1 |" in (target / "SOURCE.md").read_text()
    assert "| CC-BY-4.0 | 2 | 3 | 1 |" in (target / "SOURCE.md").read_text()
    assert (target / "known-errors.json").read_text() == "{}"


def test_refresh_refuses_a_missing_snapshot_by_name(tmp_path: Path) -> None:
    manifest = tmp_path / "packages.toml"
    manifest.write_text('[[package]]\nname = "x"\nrepo = "acme/none"\nref = "v1"\npaths = ["a"]\n')
    refresh = script("refresh-profiles")
    with pytest.raises(SystemExit, match="no snapshot of acme/none"):
        refresh.main([str(tmp_path), "--manifest", str(manifest), "--target", str(tmp_path / "out")])


def test_the_vendored_index_lists_exactly_the_vendored_files() -> None:
    listed = set((PROFILES / "INDEX").read_text(encoding="utf-8").split())
    present = {str(p.relative_to(PROFILES)) for p in PROFILES.glob("*/*")}
    assert listed == present


class FakeFhir(BaseHTTPRequestHandler):
    """Answers $validate for Observations with an error outcome and for anything else with a 500."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.path.startswith("/fhir/Observation/"):
            status, issue = 200, {"severity": "error", "expression": ["Observation.code"], "diagnostics": "missing"}
        else:
            status, issue = 500, {"severity": "fatal", "diagnostics": "HAPI-0888"}
        body = json.dumps({"resourceType": "OperationOutcome", "issue": [issue]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_fhir() -> Iterator[str]:
    with serving(FakeFhir) as url:
        yield f"{url}/fhir"


def write_bundle(folder: Path, *resources: dict[str, str]) -> None:
    entries = [{"resource": r} for r in resources]
    (folder / "Bundle-b.json").write_text(json.dumps({"resourceType": "Bundle", "entry": entries}))


def test_the_check_lists_errors_and_passes_when_no_answer_is_a_5xx(
    fake_fhir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_bundle(tmp_path, {"resourceType": "Observation", "id": "o1"})
    assert script("check-profile-validation").main([fake_fhir, str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  b  Observation/o1  Observation.code  missing" in out
    assert "1 with errors" in out


def test_the_check_fails_on_any_5xx(fake_fhir: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_bundle(tmp_path, {"resourceType": "Observation", "id": "o1"}, {"resourceType": "Procedure", "id": "p1"})
    assert script("check-profile-validation").main([fake_fhir, str(tmp_path)]) == 1
    assert "5xx: b Procedure/p1 HTTP 500" in capsys.readouterr().out


def test_the_check_fails_when_the_server_does_not_answer(tmp_path: Path) -> None:
    write_bundle(tmp_path, {"resourceType": "Observation", "id": "o1"})
    assert script("check-profile-validation").main(["http://127.0.0.1:9/fhir", str(tmp_path)]) == 1
