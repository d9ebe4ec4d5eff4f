"""`hubnode inventory`: what a node holds, taken from outside as counts and digests; `hubnode compare`: two of them.

A node is inventoried through its gateway as its site administrator reaches it (the stack's endpoints
file, the admin tokens in `.hubnode/<stack>/secrets/<site>/`, the federation CA): first the audit trails
(the connector's `AuditEvent/$inventory`, then the trust centre's `$inventory` with all its stores), so
the reads that follow, which the connector records, are not in what is counted; then every FHIR R4
resource type: its count, and if it holds any, its resources page by page (Bundle `next` links), each
as canonical JSON with `meta.versionId` and `meta.lastUpdated` left out, spilled to a temporary SQLite
file and hashed in id order. Memory holds one page, however many resources the node has.

To verify a restore: back the node up, inventory it, restore, inventory the restored node, compare.
Taken in that order, the reads of the first inventory are in neither copy's trail.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from infra.errors import HubnodeError
from infra.load import node_door
from infra.progress import Progress
from infra.state import StackState

FORMAT = 1
#: The trust centre's site-admin token (the connector's, `cn-admin-token`, comes with the node's door).
TRUSTCENTRE_TOKEN_FILE = "tc-admin-token"  # noqa: S105 -- a file name
PAGE_SIZE = 500
VOLATILE_META = ("versionId", "lastUpdated")
#: The resource types of FHIR R4 (4.0.1, hl7.org/fhir/R4/resourcelist.html) a node's FHIR store may hold;
#: not AuditEvent (at the connector's door it is the connector's own trail, counted apart), Parameters
#: or OperationOutcome (never stored).
RESOURCE_TYPES: tuple[str, ...] = (
    "Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment", "AppointmentResponse",
    "Basic", "Binary", "BiologicallyDerivedProduct", "BodyStructure", "Bundle", "CapabilityStatement", "CarePlan",
    "CareTeam", "CatalogEntry", "ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression",
    "CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition", "Composition", "ConceptMap",
    "Condition", "Consent", "Contract", "Coverage", "CoverageEligibilityRequest", "CoverageEligibilityResponse",
    "DetectedIssue", "Device", "DeviceDefinition", "DeviceMetric", "DeviceRequest", "DeviceUseStatement",
    "DiagnosticReport", "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis", "Encounter", "Endpoint",
    "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare", "EventDefinition", "Evidence", "EvidenceVariable",
    "ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "GraphDefinition", "Group",
    "GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization", "ImmunizationEvaluation",
    "ImmunizationRecommendation", "ImplementationGuide", "InsurancePlan", "Invoice", "Library", "Linkage", "List",
    "Location", "Measure", "MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
    "MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductContraindication", "MedicinalProductIndication",
    "MedicinalProductIngredient", "MedicinalProductInteraction", "MedicinalProductManufactured",
    "MedicinalProductPackaged", "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect",
    "MessageDefinition", "MessageHeader", "MolecularSequence", "NamingSystem", "NutritionOrder", "Observation",
    "ObservationDefinition", "OperationDefinition", "Organization", "OrganizationAffiliation", "Patient",
    "PaymentNotice", "PaymentReconciliation", "Person", "PlanDefinition", "Practitioner", "PractitionerRole",
    "Procedure", "Provenance", "Questionnaire", "QuestionnaireResponse", "RelatedPerson", "RequestGroup",
    "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy", "ResearchSubject", "RiskAssessment",
    "RiskEvidenceSynthesis", "Schedule", "SearchParameter", "ServiceRequest", "Slot", "Specimen", "SpecimenDefinition",
    "StructureDefinition", "StructureMap", "Subscription", "Substance", "SubstanceNucleicAcid", "SubstancePolymer",
    "SubstanceProtein", "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
    "SupplyDelivery", "SupplyRequest", "Task", "TerminologyCapabilities", "TestReport", "TestScript", "ValueSet",
    "VerificationResult", "VisionPrescription",
)  # fmt: skip


@dataclass(frozen=True)
class Access:
    """How the site's administrator reaches a node: its gateway, admin tokens (trust centre: if it runs one), CA."""

    site: str
    gateway: str
    connector_token: str
    trustcentre_token: str | None
    ca_file: Path | None

    def client(self) -> httpx.Client:
        """A client that trusts the federation CA (or the system's CAs for a gateway it did not sign)."""
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        return httpx.Client(verify=verify, timeout=120.0)


def node_access(state: StackState, site: str | None) -> Access:
    """The node `site` (None: the stack's only one) as `hubnode up` brought it up here."""
    door = node_door(state, site, doing="an inventory")
    token_file = state.secrets_dir(door.site) / TRUSTCENTRE_TOKEN_FILE
    token = token_file.read_text(encoding="utf-8").strip() if token_file.is_file() else None
    return Access(door.site, door.fhir_url.removesuffix("/fhir"), door.token, token, door.ca_file)


def take(access: Access, client: httpx.Client, progress: Progress, stack: str) -> dict[str, Any]:
    """The node's inventory: audit trails and trust-centre stores first, then the FHIR resources per type."""
    stores: dict[str, dict[str, Any]] = {}
    reader = _Reader(access, client)
    stores.update(_parameters_stores("connector", reader.get("/fhir/AuditEvent/$inventory", access.connector_token)))
    if access.trustcentre_token is not None:
        found = _parameters_stores("trustcentre", reader.get("/ttp-fhir/fhir/$inventory", access.trustcentre_token))
        stores.update(found)
        progress.note(f"trust centre: {len(found)} stores")
    for kind in RESOURCE_TYPES:
        total = reader.get(f"/fhir/{kind}?_summary=count", access.connector_token).get("total")
        if isinstance(total, int) and total > 0:
            stores[f"fhir/{kind}"] = _resources(reader, kind, access.connector_token)
            progress.note(f"{kind}: {stores[f'fhir/{kind}']['count']}")
    return {
        "format": FORMAT,
        "stack": stack,
        "site": access.site,
        "taken": datetime.now(UTC).isoformat(timespec="seconds"),
        "stores": dict(sorted(stores.items())),
    }


class _Reader:
    """GETs at the node's gateway as its administrator; anything but 200 is one error naming what was asked."""

    def __init__(self, access: Access, client: httpx.Client) -> None:
        self._gateway, self._client = access.gateway, client

    def get(self, path: str, token: str) -> dict[str, Any]:
        url = f"{self._gateway}{path}"
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        try:
            answer = self._client.get(url, headers=headers)
        except httpx.HTTPError as error:
            raise HubnodeError(
                f"GET {url}: no answer ({error})", fix="is the stack up? see: hubnode status --stack ..."
            ) from None
        try:
            body = answer.json()
        except ValueError:
            body = None
        if answer.status_code != httpx.codes.OK or not isinstance(body, dict):
            raise HubnodeError(
                f"GET {url}: {answer.status_code} {_diagnostics(body) or answer.text[:200]}",
                fix="the node must run this version of hubnode's services (hubnode up builds them)",
            )
        return body

    def pages(self, kind: str, token: str) -> Iterator[dict[str, Any]]:
        """The search set of `kind`, page by page; next links are followed at the gateway, never elsewhere."""
        path: str | None = f"/fhir/{kind}?_count={PAGE_SIZE}"
        while path is not None:
            page = self.get(path, token)
            yield page
            link = next((link.get("url") for link in page.get("link", []) if link.get("relation") == "next"), None)
            path = _at_gateway(link) if isinstance(link, str) else None


def _at_gateway(url: str) -> str:
    """A link's path and query, to be asked at the gateway (a node's public URL may name another host)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


def _diagnostics(body: object) -> str:
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(issue.get("diagnostics", "")) for issue in body.get("issue", []))
    return ""


def _parameters_stores(prefix: str, answer: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`store` parameters of an `$inventory` answer as `{prefix/name: {count, digest}}`."""
    found = {}
    for parameter in answer.get("parameter", []):
        parts = {part.get("name"): part for part in parameter.get("part", [])}
        try:
            name = str(parts["name"]["valueString"])
            found[f"{prefix}/{name}"] = {
                "count": int(parts["count"]["valueInteger"]),
                "digest": str(parts["digest"]["valueString"]),
            }
        except (KeyError, TypeError, ValueError):
            raise HubnodeError(f"the {prefix}'s $inventory answered a store without name, count and digest") from None
    return found


def canonical(resource: Mapping[str, Any]) -> bytes:
    """A resource as canonical JSON (sorted keys, no spaces), its version and update time left out."""
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in VOLATILE_META}
    plain = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        plain["meta"] = meta
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _resources(reader: _Reader, kind: str, token: str) -> dict[str, Any]:
    """Count and digest of every resource of `kind`: spilled to disk by id, then hashed in id order."""
    with tempfile.TemporaryDirectory(prefix="hubnode-inventory-") as folder:
        spill = sqlite3.connect(Path(folder) / "spill.db")
        try:
            spill.execute("CREATE TABLE resources (id TEXT PRIMARY KEY, content BLOB NOT NULL)")
            for page in reader.pages(kind, token):
                rows = [
                    (str(entry["resource"].get("id")), canonical(entry["resource"]))
                    for entry in page.get("entry", [])
                    if isinstance(entry.get("resource"), dict) and entry["resource"].get("resourceType") == kind
                ]
                spill.executemany("INSERT OR IGNORE INTO resources VALUES (?, ?)", rows)
            hashed, count = hashlib.sha256(), 0
            for (content,) in spill.execute("SELECT content FROM resources ORDER BY id"):
                hashed.update(content + b"\n")
                count += 1
        finally:
            spill.close()
    return {"count": count, "digest": hashed.hexdigest()}
