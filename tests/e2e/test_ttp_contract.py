"""The switch to a site's own gPAS/gICS/E-PIX, proven on real nodes: a connector speaking the MOSAIC IGs only.

The local federation's dic links its patients through the E-PIX IG's `$addPatient`
(`trustCentre: {epixDomain: dic-patients}` in `Pulumi.federation.yaml`), the practice through hubnode's
`$requestMPI`. The trust centre's own audit trail tells which operations each connector called, and
both name one person alike. Then every request example of the three IGs goes to the live trust
centre byte for byte.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from fixtures.synthetic import transaction_bundle
from servicekit.kvnr import KVNR_SYSTEM, make_kvnr
from tests.conftest import PROJECT_DIR
from tests.e2e.conftest import Federation
from tests.unit.trustcentre.test_gics_ig_examples import MII_D, PATDAT, opt_out, signed

SOURCE_SYSTEM = "https://hubnode.org/fhir/sid/source"
IG_EXAMPLES = PROJECT_DIR / "fixtures" / "data" / "ttp-fhir-ig"
TTP = "/ttp-fhir/fhir"
#: The E-PIX examples that name the IG's own persons (MPI 1001000000066, identities 52 and 53), which
#: a live trust centre holds only when the IG's authors' database is loaded; the unit tier seeds them
#: (tests/unit/trustcentre/test_epix_ig_examples.py). Here they must be refused as not found, by name.
NAMING_THE_IGS_PERSONS = frozenset(
    {
        "UpdatePatient",
        "AssignIdentity",
        "AssignIdentityByIdentifier",
        "SetReferenceIdentity",
        "AddPossibleMatch",
        "QueryPossibleMatches",
        "RemovePossibleMatches",
    }
)
#: The order a site would call them in: what a later example reads, an earlier one writes.
SERVICE_ORDER = ("gpas", "gics", "epix")
GPAS_ORDER = (
    "InsertValuePseudonymPairs",
    "PseudonymizeAllowCreate",
    "Pseudonymize",
    "DePseudonymize",
    "PseudonymizeSecondary",
    "AnonymizeOriginals",
    "DeletePseudonyms",
)


def tc_events(federation: Federation, entity: str) -> list[dict[str, Any]]:
    """The trust centre's audit records about `entity`, as its administrator reads them."""
    with federation.client("dic", "tc-admin-token") as client:
        answer = client.get(f"{TTP}/AuditEvent", params={"entity": entity})
    assert answer.status_code == 200, answer.text
    return [entry["resource"] for entry in answer.json().get("entry", [])]


def one_patient(site: str, record: str, kvnr: str) -> dict[str, Any]:
    patient = {
        "resourceType": "Patient",
        "id": record,
        "identifier": [{"system": KVNR_SYSTEM, "value": kvnr}],
        "name": [{"family": "Quelle", "given": ["Ida"]}],
        "gender": "female",
        "birthDate": "1961-03-04",
    }
    return transaction_bundle(f"ttp-{site}-{record}", [patient])


def test_the_dic_links_by_add_patient_the_practice_by_request_mpi_and_both_name_one_person(
    federation: Federation,
) -> None:
    kvnr = make_kvnr("Q", str(uuid.uuid4().int)[:8])
    record = f"ttp-{uuid.uuid4().hex[:12]}"
    mpis = {}
    for site, caller, operation, other in (
        ("dic", "connector", "$addPatient", "$requestMPI"),  # the trust centre's own node: its token
        ("practice", "practice-connector", "$requestMPI", "$addPatient"),  # by its certificate
    ):
        answer = federation.ingest(site, one_patient(site, record, kvnr))
        assert answer.status_code == 200, answer.text
        events = tc_events(federation, f"Patient/{record}")
        mine = [e for e in events if e["agent"][0]["who"]["display"] == caller]
        called = {e["subtype"][0]["code"] for e in mine}
        assert operation in called, f"{site}: {called}"
        assert other not in called, f"{site} called {other}: it must link through {operation} only"
        [linked] = [e for e in mine if e["subtype"][0]["code"] == operation][-1:]
        mpis[site] = {entity["what"]["identifier"]["value"] for entity in linked["entity"]}
    assert mpis["dic"] & mpis["practice"] - {f"Patient/{record}", kvnr}, "one person at the trust centre"


def examples(service: str) -> list[Path]:
    """The service's request examples: gPAS in `GPAS_ORDER`, gICS's writes before its questions."""
    found = sorted((IG_EXAMPLES / service).glob("Parameters-*-request-example-*.json"))
    if service == "gpas":
        return sorted(found, key=lambda path: GPAS_ORDER.index(_operation(path)))
    return sorted(found, key=lambda path: not _operation(path).startswith("Add"))


def _operation(path: Path) -> str:
    """`Parameters-Parameters-AddPatient-request-example-1.json` (E-PIX, gPAS), `Parameters-IsConsented-...` (gICS)."""
    return path.name.removeprefix("Parameters-").removeprefix("Parameters-").split("-")[0]


def consent_the_gics_examples_persons(federation: Federation) -> None:
    """Through gICS's own operations, what the gICS query examples ask about: dic_1H51T consented and opted
    out, dic_GCC83 refused (as the unit tier's seed; a live node is filled only through its API)."""
    for body in (
        signed("dic_1H51T", "MII", MII_D, "2019-01-01", **{PATDAT: True}),
        signed("dic_1H51T", "num", "NUM+Einwilligung|1.0", "2019-01-01", **{"MDAT_erheben|1.0": True}),
        signed("dic_GCC83", "MII", MII_D, "2019-01-01", **{PATDAT: False}),
    ):
        federation.trustcentre("gics/$addConsent", body)
    federation.trustcentre("gics/$addConsentOptOut", opt_out("dic_1H51T"))


def test_every_ig_request_example_goes_to_the_live_trust_centre_unchanged(federation: Federation) -> None:
    answered: dict[str, int] = {}
    consent_the_gics_examples_persons(federation)
    with federation.client("dic", "tc-admin-token") as client:
        for service in SERVICE_ORDER:
            for path in examples(service):
                operation = _operation(path)
                name = f"${operation[0].lower()}{operation[1:]}"
                response = client.post(
                    f"{TTP}/{service}/{name}",
                    content=path.read_bytes(),
                    headers={"Content-Type": "application/fhir+json"},
                )
                answered[f"{service}/{path.name}"] = response.status_code
                check(service, operation, response)
    assert len(answered) >= 25, answered


def check(service: str, operation: str, response: httpx.Response) -> None:
    """2xx with a FHIR answer; the examples naming the IG's own persons: 404 naming what is missing."""
    body = response.json()
    if service == "epix" and operation in NAMING_THE_IGS_PERSONS:
        assert response.status_code == 404, f"{operation}: {response.status_code} {response.text[:300]}"
        assert body["resourceType"] == "OperationOutcome"
        assert "no " in json.dumps(body["issue"]), body
        return
    assert response.status_code in (200, 201), f"{service} {operation}: {response.status_code} {response.text[:500]}"
    assert body["resourceType"] in ("Parameters", "Bundle", "OperationOutcome"), body
