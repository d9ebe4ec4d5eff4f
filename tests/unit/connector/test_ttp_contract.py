"""The connector on a trust centre through the MOSAIC IGs only: E-PIX `$addPatient`, gICS domains, a site's CA.

With an E-PIX domain set the connector links by `$addPatient` (never hubnode's `$requestMPI`), so a
site's own E-PIX can stand behind the trust-centre URL. Against hubnode's trust centre both ways must
name a person alike, or a node switched from one to the other would split its patients.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from starlette.testclient import TestClient

from connector.app import create_app
from connector.settings import Settings, TtpContract
from connector.transform import PERSON_SYSTEM
from connector.trustcentre_client import TrustCentreClient
from connector.upstream import UpstreamUnavailable
from servicekit.config import ConfigError
from servicekit.kvnr import KVNR_SYSTEM, make_kvnr
from tests.conftest import PROJECT_DIR
from tests.unit.connector.conftest import connector_settings, headers, mii_bundle
from tests.unit.connector.fake_fhir import FakeFhir
from tests.unit.trustcentre.conftest import headers as trustcentre_headers

EPIX_EXAMPLES = PROJECT_DIR / "fixtures" / "data" / "ttp-fhir-ig" / "epix"
IG_CONTRACT = TtpContract(epix_domain="study")
T = TypeVar("T")
TC = "/ttp-fhir/fhir"
TC_URL = f"http://tc.test{TC}"
RESEARCH_POLICY = "2.16.840.1.113883.3.1937.777.24.5.3.8"


@pytest.fixture
def trustcentre(trustcentre_transport: httpx.ASGITransport) -> Iterator[TestClient]:
    """The trust centre the connectors call, asked directly as its administrator."""
    with TestClient(trustcentre_transport.app) as client:
        yield client


def connector(
    tmp_path: Path, fhir: FakeFhir, transport: httpx.AsyncBaseTransport, contract: TtpContract, name: str
) -> TestClient:
    settings = connector_settings(tmp_path / name, trustcentre_contract=contract)
    (tmp_path / name).mkdir()
    app = create_app(settings, hapi_transport=fhir.transport(), trustcentre_transport=transport)
    return TestClient(app, raise_server_exceptions=False)


def operations(trustcentre: TestClient, entity: str) -> list[str]:
    """The trust-centre operations its audit trail records about `entity`, in order."""
    answer = trustcentre.get(
        "/ttp-fhir/fhir/AuditEvent", params={"entity": entity}, headers=trustcentre_headers("admin")
    )
    assert answer.status_code == 200, answer.text
    return [e["resource"]["subtype"][0]["code"] for e in answer.json().get("entry", [])]


def person_of(fhir: FakeFhir) -> str:
    [patient] = fhir.of_type("Patient")
    return next(i["value"] for i in patient["identifier"] if i["system"] == PERSON_SYSTEM)


def test_a_node_on_the_e_pix_ig_links_by_add_patient_and_never_by_request_mpi(
    tmp_path: Path, trustcentre_transport: httpx.ASGITransport, trustcentre: TestClient
) -> None:
    fhir = FakeFhir()
    with connector(tmp_path, fhir, trustcentre_transport, IG_CONTRACT, "ig") as client:
        answer = client.post("/fhir", content=json.dumps(mii_bundle("pat-1")), headers=headers("source"))
    assert answer.status_code == 200, answer.text
    person = person_of(fhir)
    asked = operations(trustcentre, "Patient/mii-exa-test-data-patient-1")
    assert "$addPatient" in asked
    assert "$requestMPI" not in asked
    assert person


def test_both_contracts_name_a_person_alike_so_a_node_can_switch(
    tmp_path: Path, trustcentre_transport: httpx.ASGITransport
) -> None:
    persons = []
    for name, contract in (("hubnode", TtpContract()), ("ig", IG_CONTRACT)):
        fhir = FakeFhir()
        with connector(tmp_path, fhir, trustcentre_transport, contract, name) as client:
            answer = client.post("/fhir", content=json.dumps(mii_bundle("pat-1")), headers=headers("source"))
        assert answer.status_code == 200, answer.text
        persons.append(person_of(fhir))
    assert persons[0] == persons[1]


def test_one_person_under_two_source_records_is_one_person_through_add_patient(
    tmp_path: Path, trustcentre_transport: httpx.ASGITransport
) -> None:
    kvnr = {"system": KVNR_SYSTEM, "value": make_kvnr("K", "27182818")}
    found = []
    for record in ("r1", "r2"):
        fhir = FakeFhir()
        patient = {"resourceType": "Patient", "id": record, "identifier": [kvnr], "gender": "female"}
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": patient, "request": {"method": "PUT", "url": f"Patient/{record}"}}],
        }
        with connector(tmp_path, fhir, trustcentre_transport, IG_CONTRACT, record) as client:
            assert client.post("/fhir", content=json.dumps(bundle), headers=headers("source")).status_code == 200
        found.append(person_of(fhir))
    assert found[0] == found[1]


def test_a_domain_the_node_may_not_use_is_refused_and_nothing_is_stored(
    tmp_path: Path, trustcentre_transport: httpx.ASGITransport
) -> None:
    fhir = FakeFhir()
    with connector(tmp_path, fhir, trustcentre_transport, TtpContract(epix_domain="clinic"), "other") as client:
        answer = client.post("/fhir", content=json.dumps(mii_bundle("pat-1")), headers=headers("source"))
    assert answer.status_code == 422, answer.text
    assert "may not use domain 'clinic'" in answer.json()["issue"][0]["diagnostics"]
    assert fhir.resources == {}


def run(client: TrustCentreClient, call: Coroutine[Any, Any, T]) -> T:
    """Await one call of `client`, then close it."""

    async def once() -> T:
        try:
            return await call
        finally:
            await client.aclose()

    return asyncio.run(once())


def recorded(answer: dict[str, Any], asked: list[dict[str, Any]]) -> httpx.MockTransport:
    """A trust centre that answers every call with `answer` and keeps the requests' bodies."""

    def handle(request: httpx.Request) -> httpx.Response:
        asked.append({"path": request.url.path, "body": json.loads(request.content)})
        return httpx.Response(200, json=answer, headers={"Content-Type": "application/fhir+json"})

    return httpx.MockTransport(handle)


def test_a_site_e_pix_answering_as_the_ig_example_names_the_person_by_its_mpi() -> None:
    example = json.loads((EPIX_EXAMPLES / "Parameters-Parameters-AddPatient-response-example-1.json").read_text())
    asked: list[dict[str, Any]] = []
    client = TrustCentreClient(
        "https://ttp.ukl.example/ttp-fhir/fhir",
        "dic",
        contract=TtpContract("MIRACUM", "KlinikumXY"),
        transport=recorded(example, asked),
    )
    patient = mii_bundle("pat-1")["entry"][0]["resource"]
    person = run(client, client.person_id(patient, ("https://hubnode.org/fhir/sid/source/dic", "Patient/p1")))
    assert person == "1001000000066"
    [call] = asked
    assert call["path"] == "/ttp-fhir/fhir/epix/$addPatient"
    sent = {p["name"]: p for p in call["body"]["parameter"]}
    assert sent["domain"]["valueString"] == "MIRACUM"
    assert sent["source"]["valueString"] == "KlinikumXY"
    assert sent["saveAction"]["valueCoding"]["code"] == "SAVE_ALL"
    identity = sent["identity"]["resource"]
    assert identity["identifier"][0] == {"system": "https://hubnode.org/fhir/sid/source/dic", "value": "Patient/p1"}
    assert set(identity) <= {"resourceType", "identifier", "name", "gender", "birthDate"}, "only what links"


def test_an_add_patient_answer_naming_no_person_is_an_upstream_failure_not_a_guess() -> None:
    answer = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "matchResult",
                "part": [{"name": "matchStatus", "valueCoding": {"code": "MULTIPLE_MATCH"}}],
            }
        ],
    }
    client = TrustCentreClient(
        "http://tc.test/ttp-fhir/fhir", "dic", contract=IG_CONTRACT, transport=recorded(answer, [])
    )
    with pytest.raises(UpstreamUnavailable, match="MULTIPLE_MATCH"):
        run(client, client.person_id({"resourceType": "Patient"}, ("https://hubnode.org/fhir/sid/source/dic", "P/p")))


def test_consent_is_asked_in_the_domain_the_node_names() -> None:
    asked: list[dict[str, Any]] = []
    answer = {"resourceType": "Parameters", "parameter": [{"name": "consented", "valueBoolean": True}]}
    contract = TtpContract(consent_domain="MIRACUM-BC")
    client = TrustCentreClient(
        "http://tc.test/ttp-fhir/fhir", "dic", contract=contract, transport=recorded(answer, asked)
    )
    assert run(client, client.is_consented(("https://ukl.example/mrn", "m1"), RESEARCH_POLICY, date(2025, 1, 2)))
    domain = next(p for p in asked[0]["body"]["parameter"] if p["name"] == "domain")
    assert domain["valueString"] == "MIRACUM-BC"


BASE_ENVIRONMENT = {
    "CN_SITE": "dic",
    "CN_ROLE": "dic",
    "CN_FHIR_URL": "http://fhir:8080/fhir",
    "CN_TRUSTCENTRE_URL": "https://ttp.ukl.example/ttp-fhir/fhir",
}


def environment(tmp_path: Path, **changes: str) -> dict[str, str]:
    callers = tmp_path / "callers.json"
    callers.write_text("[]")
    return {**BASE_ENVIRONMENT, "CN_CALLERS_FILE": str(callers), **changes}


def test_the_contract_is_read_from_the_environment(tmp_path: Path) -> None:
    ca = tmp_path / "site-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.from_environment(
        environment(tmp_path, CN_EPIX_DOMAIN="MII", CN_EPIX_SOURCE="UKL", CN_TRUSTCENTRE_CA_FILE=str(ca))
    )
    assert settings.trustcentre_contract == TtpContract("MII", "UKL", "MII")
    assert settings.trustcentre_ca == ca
    assert Settings.from_environment(environment(tmp_path)).trustcentre_contract == TtpContract()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"CN_EPIX_SOURCE": "UKL"}, "CN_EPIX_SOURCE"),
        ({"CN_EPIX_DOMAIN": " MII"}, "CN_EPIX_DOMAIN"),
        ({"CN_CONSENT_DOMAIN": ""}, "CN_CONSENT_DOMAIN"),
        ({"CN_TRUSTCENTRE_CA_FILE": "/nowhere/ca.pem"}, "CN_TRUSTCENTRE_CA_FILE"),
    ],
)
def test_a_wrong_contract_setting_stops_the_start_naming_it(
    tmp_path: Path, changes: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        Settings.from_environment(environment(tmp_path, **changes))
