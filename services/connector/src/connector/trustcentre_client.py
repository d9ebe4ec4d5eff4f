"""The trust centre as the connector sees it: linkage, consent and pseudonyms.

Calls a TTP-FHIR API (`.../ttp-fhir/fhir/{epix,gics,gpas}/$operation`) in the Parameters shapes of
E-PIX, gICS and gPAS. Consent (`$isConsented`) and pseudonyms (`$pseudonymizeAllowCreate`) are the
MOSAIC IGs' operations already; linkage is the IG's `$addPatient` when the node names an E-PIX domain
(`TtpContract.epix_domain`), so a site's own MOSAIC gateway can stand behind the URL, and hubnode's
`$requestMPI` otherwise. A local trust centre is reached with a bearer token; one on another node
through that node's peer gateway with the node certificate (mutual TLS); a site's own gateway with a
bearer token over TLS checked against the site's CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import httpx

from connector.settings import ClientCertificate, TtpContract
from connector.transform import PERSON_SYSTEM
from connector.upstream import UpstreamUnavailable, checked, send
from servicekit.fhir import FHIR_JSON
from servicekit.kvnr import KVNR_SYSTEM, is_valid_kvnr

SERVICE = "trust centre"
POLICY_SYSTEM = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
#: The E-PIX IG's MPI identifiers: what a site's own E-PIX names a person by.
EPIX_MPI_SYSTEM = "https://ths-greifswald.de/fhir/epix/identifier/MPI"
EPIX_SAVE_ACTION_SYSTEM = "https://ths-greifswald.de/fhir/CodeSystem/epix/SaveAction"
#: What the trust centre accepts as an identifier's system or value.
MAX_VALUE_LENGTH = 255
SEXES = frozenset({"male", "female", "other", "unknown"})


class TrustCentreClient:
    """Async calls to one trust centre base URL (`.../ttp-fhir/fhir`)."""

    def __init__(  # noqa: PLR0913 -- where, as whom, how to connect, and in which contract
        self,
        base_url: str,
        source: str,
        *,
        token: str | None = None,
        certificate: ClientCertificate | None = None,
        ca_file: Path | None = None,
        contract: TtpContract | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        """Call `base_url` as linkage source `source`.

        Over https: checked against `ca_file` when given (a site's own gateway; no client certificate),
        else mutual TLS with the node `certificate` (a peer's gateway), else the system's trust store.
        """
        headers = {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=str(ca_file))
        elif certificate is not None and base_url.startswith("https://"):
            verify = ssl.create_default_context(cafile=str(certificate.ca))
            verify.load_cert_chain(str(certificate.certificate), str(certificate.key))
        self.source = source
        self.contract = contract or TtpContract()
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/", headers=headers, verify=verify, transport=transport, timeout=timeout
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def person_id(self, patient: Mapping[str, Any], source_identifier: tuple[str, str]) -> str:
        """The id this node knows `patient`'s person by, linked by identifiers and demographics.

        `source_identifier` (the connector's own key for the record) is always sent, so a patient
        without usable identifiers is still linked, and a replay finds the same person. The trust
        centre links by the identifiers this node may assert (its own systems, a KVNR) and ignores
        the rest. hubnode's trust centre answers with this node's id of the person, never the master
        person id; a site's own E-PIX with its MPI id, which is then the site's own name for the person.
        """
        if self.contract.epix_domain is not None:
            return await self._added_patient(self.contract.epix_domain, patient, source_identifier)
        parts = [_identifier_part("identifier", source_identifier)]
        parts += [_identifier_part("identifier", pair) for pair in linkable_identifiers(patient)]
        parts.append({"name": "source", "valueString": self.source})
        parts += _demographics(patient)
        answer = await self._operation("epix/$requestMPI", parts)
        person = _first(answer, "person").get("valueIdentifier", {})
        if person.get("system") != PERSON_SYSTEM or not isinstance(person.get("value"), str):
            raise UpstreamUnavailable(f"the trust centre's $requestMPI answer carried no {PERSON_SYSTEM} person id")
        return str(person["value"])

    async def _added_patient(self, domain: str, patient: Mapping[str, Any], source_identifier: tuple[str, str]) -> str:
        """E-PIX `$addPatient` of the patient's linkable identity; the person its `mpiPerson` names.

        Sent as the IG's identity `Patient` with only what linkage needs (identifiers, name, sex, birth
        date): addresses and the rest of the record stay at the node. `SAVE_ALL` keeps every identity,
        so E-PIX decides links and review, not the connector.
        """
        identity = {
            "resourceType": "Patient",
            "identifier": [
                {"system": system, "value": value}
                for system, value in (source_identifier, *linkable_identifiers(patient))
            ],
            **_identity_demographics(patient),
        }
        answer = await self._operation(
            "epix/$addPatient",
            [
                {"name": "domain", "valueString": domain},
                {"name": "source", "valueString": self.contract.epix_source or self.source},
                {"name": "identity", "resource": identity},
                {"name": "saveAction", "valueCoding": {"system": EPIX_SAVE_ACTION_SYSTEM, "code": "SAVE_ALL"}},
                {"name": "forceReferenceUpdate", "valueBoolean": False},
            ],
        )
        result = _first(answer, "matchResult").get("part", [])
        person = next((p.get("resource") for p in result if p.get("name") == "mpiPerson"), None)
        names = person.get("identifier", []) if isinstance(person, dict) else []
        known = (PERSON_SYSTEM, EPIX_MPI_SYSTEM)
        found = next((i["value"] for i in names if i.get("system") in known and _text(i.get("value"))), None)
        if found is None:
            status = next((p.get("valueCoding", {}).get("code") for p in result if p.get("name") == "matchStatus"), "")
            raise UpstreamUnavailable(
                f"the trust centre's $addPatient answer (matchStatus {status}) named no person"
                f" by {PERSON_SYSTEM} or {EPIX_MPI_SYSTEM}"
            )
        return str(found)

    async def is_consented(self, identifier: tuple[str, str], policy_code: str, request_date: date) -> bool:
        """Whether the person has consented to `policy_code` on `request_date` (gICS `$isConsented`, MII)."""
        answer = await self._operation(
            "gics/$isConsented",
            [
                _identifier_part("personIdentifier", identifier),
                {"name": "domain", "valueString": self.contract.consent_domain},
                {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": policy_code}},
                {
                    "name": "config",
                    "part": [
                        {"name": "unknownStateIsConsideredAsDecline", "valueBoolean": True},
                        {"name": "requestDate", "valueDate": request_date.isoformat()},
                    ],
                },
            ],
        )
        consented = _first(answer, "consented").get("valueBoolean")
        if not isinstance(consented, bool):
            raise UpstreamUnavailable("the trust centre's $isConsented answer carried no consented boolean")
        return consented

    async def pseudonymize(self, domain: str, originals: Sequence[str]) -> dict[str, str]:
        """Original -> pseudonym in `domain`, created where missing (gPAS `$pseudonymizeAllowCreate`)."""
        parts = [
            {"name": "target", "valueString": domain},
            *({"name": "original", "valueString": o} for o in originals),
        ]
        answer = await self._operation("gpas/$pseudonymizeAllowCreate", parts)
        found: dict[str, str] = {}
        for parameter in answer.get("parameter", []):
            values = {p.get("name"): p.get("valueIdentifier", {}).get("value") for p in parameter.get("part", [])}
            if parameter.get("name") == "pseudonym" and isinstance(values.get("original"), str):
                found[values["original"]] = str(values.get("pseudonym"))
        missing = [o for o in originals if o not in found]
        if missing:
            raise UpstreamUnavailable(f"the trust centre gave no pseudonym in {domain!r} for {len(missing)} originals")
        return found

    async def redeem_ledger_ticket(self, ticket: str) -> tuple[str, tuple[str, str]]:
        """The site that asked, and the name (system, value) this node knows the ticket's person by."""
        answer = await self._operation("epix/$redeemLedgerTicket", [{"name": "ticket", "valueString": ticket}])
        requester = _first(answer, "requester").get("valueString")
        name = _first(answer, "name").get("valueIdentifier", {})
        if (
            not isinstance(requester, str)
            or not isinstance(name.get("system"), str)
            or not isinstance(name.get("value"), str)
        ):
            raise UpstreamUnavailable("the trust centre's $redeemLedgerTicket answer lacks its requester or name")
        return requester, (name["system"], name["value"])

    async def _operation(self, path: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"resourceType": "Parameters", "parameter": parts}
        return checked(await send(self._client, SERVICE, "POST", path, json=body), SERVICE)


def linkable_identifiers(patient: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The patient's (system, value) identifiers the trust centre can link by.

    Not the person id it gave, and not a KVNR whose check digit is wrong: the trust centre refuses to link
    on a mistyped KVNR, and the record is still worth storing (linked by its other identifiers).
    """
    found = []
    for identifier in patient.get("identifier", []):
        system, value = identifier.get("system"), identifier.get("value")
        if (
            isinstance(system, str)
            and isinstance(value, str)
            and system != PERSON_SYSTEM
            and 0 < len(system) <= MAX_VALUE_LENGTH
            and 0 < len(value.strip()) <= MAX_VALUE_LENGTH
            and (system != KVNR_SYSTEM or is_valid_kvnr(value))
        ):
            found.append((system, value))
    return found


def _identifier_part(name: str, identifier: tuple[str, str]) -> dict[str, Any]:
    return {"name": name, "valueIdentifier": {"system": identifier[0], "value": identifier[1]}}


def _demographics(patient: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Name, sex and birth date for probabilistic matching, as `$requestMPI` parts."""
    found = _identity_demographics(patient)
    parts: list[dict[str, Any]] = []
    if "family" in (name := found.get("name", [{}])[0]):
        parts.append({"name": "family", "valueString": name["family"]})
    if "given" in name:
        parts.append({"name": "given", "valueString": name["given"][0]})
    if "gender" in found:
        parts.append({"name": "gender", "valueString": found["gender"]})
    if "birthDate" in found:
        parts.append({"name": "birthDate", "valueDate": found["birthDate"]})
    return parts


def _identity_demographics(patient: Mapping[str, Any]) -> dict[str, Any]:
    """Name (the official one, else the first), sex and birth date, when the patient is named at all.

    Sex and birth date alone name no one, so they go only with a name; values longer than the trust
    centre keeps are cut, not refused, since the record is still worth linking by its identifiers.
    """
    name = next((n for n in patient.get("name", []) if n.get("use") == "official"), None) or next(
        iter(patient.get("name", [])), None
    )
    family = name.get("family") if name else None
    given = " ".join(g for g in name.get("given", []) if isinstance(g, str)) if name else ""
    named: dict[str, Any] = {}
    if isinstance(family, str) and family.strip():
        named["family"] = family[:MAX_VALUE_LENGTH]
    if given.strip():
        named["given"] = [given[:MAX_VALUE_LENGTH]]
    if not named:
        return {}
    found: dict[str, Any] = {"name": [named]}
    if patient.get("gender") in SEXES:
        found["gender"] = patient["gender"]
    if isinstance(patient.get("birthDate"), str):
        found["birthDate"] = patient["birthDate"]
    return found


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _first(answer: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next((p for p in answer.get("parameter", []) if isinstance(p, dict) and p.get("name") == name), {})
