"""Show that a node works: post a transaction bundle to its FHIR server and read a patient back.

For the demo, and for site IT after `pulumi up`; the conformance suite does the thorough checks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from infra.errors import HubnodeError

FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class SmokeResult:
    """What one smoke run did."""

    resources: int
    seconds: float
    patient_reference: str
    patient_family_name: str


def example_bundle() -> dict[str, Any]:
    """A small transaction (a patient and a diagnosis) for when no real bundle is at hand."""
    patient = {
        "resourceType": "Patient",
        "id": "hubnode-smoke-patient",
        "name": [{"family": "Smoke", "given": ["Test"]}],
        "birthDate": "1970",
    }
    condition = {
        "resourceType": "Condition",
        "id": "hubnode-smoke-condition",
        "subject": {"reference": "Patient/hubnode-smoke-patient"},
        "code": {"coding": [{"system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "code": "C50.9"}]},
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
            for r in (patient, condition)
        ],
    }


def read_bundle(path: Path) -> dict[str, Any]:
    """Load a bundle file, with an error naming the file when it is not a FHIR Bundle."""
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HubnodeError(f"cannot read bundle {path}: {exc}", fix="pass a FHIR JSON Bundle file") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise HubnodeError(f"{path} is not a FHIR Bundle", fix="pass a FHIR JSON Bundle file")
    return bundle


def smoke(fhir_base: str, bundle: dict[str, Any], client: httpx.Client | None = None) -> SmokeResult:
    """Post `bundle` as a transaction, check every entry succeeded, read its first Patient back."""
    http = client or httpx.Client(timeout=120.0)
    started = time.perf_counter()
    response = http.post(fhir_base, json=bundle, headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON})
    if response.status_code != 200:
        raise HubnodeError(
            f"{fhir_base} rejected the transaction with HTTP {response.status_code}: {response.text[:500]}",
            fix="see the OperationOutcome above; `hubnode status` shows whether the node is healthy",
        )
    entries = response.json().get("entry", [])
    failed = [e["response"]["status"] for e in entries if not e["response"]["status"].startswith("2")]
    if failed or len(entries) != len(bundle.get("entry", [])):
        raise HubnodeError(f"transaction answered {len(entries)} entries, failures: {failed}", fix="check the bundle")
    patients = [e["response"]["location"] for e in entries if e["response"].get("location", "").startswith("Patient/")]
    if not patients:
        raise HubnodeError("the bundle holds no Patient to read back", fix="pass a bundle with a Patient")
    reference = "/".join(patients[0].split("/")[:2])
    read = http.get(f"{fhir_base}/{reference}", headers={"Accept": FHIR_JSON})
    if read.status_code != 200:
        raise HubnodeError(f"reading {reference} back answered HTTP {read.status_code}", fix="check the server log")
    names = read.json().get("name", [{}])
    return SmokeResult(len(entries), time.perf_counter() - started, reference, str(names[0].get("family", "")))


def smoke_trustcentre(base: str, token: str, domain: str, original: str, client: httpx.Client | None = None) -> str:
    """Pseudonymise `original` in `domain` with the site's admin token; returns the pseudonym."""
    http = client or httpx.Client(timeout=30.0)
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "target", "valueString": domain}, {"name": "original", "valueString": original}],
    }
    response = http.post(
        f"{base}/gpas/$pseudonymizeAllowCreate",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
    )
    if response.status_code != 200:
        raise HubnodeError(
            f"the trust centre answered HTTP {response.status_code}: {response.text[:500]}",
            fix="see the OperationOutcome above; `hubnode status` shows whether the node is healthy",
        )
    [answer] = response.json()["parameter"]
    if answer["name"] != "pseudonym":
        raise HubnodeError(f"the trust centre gave no pseudonym: {answer}", fix="check the domain's settings")
    return str(answer["part"][2]["valueIdentifier"]["value"])
