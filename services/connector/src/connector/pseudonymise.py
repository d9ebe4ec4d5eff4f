"""A patient's resources as a research extract (`dataSend`): pseudonymised, nothing identifying left.

Nothing identifying may leave the clinical domain (docs/federation.md, "Processes and consent"), so the
extract is built by keeping, not by deleting what is known to be bad:

- The Patient is rebuilt from scratch: id and identifier = the pseudonym in the project's domain
  (`https://hubnode.org/fhir/sid/pseudonym/<domain>`), `gender`, and the birth YEAR. Nothing else.
- Only clinical resource types are kept (KEPT_TYPES). Other Patients, RelatedPerson, Person, and also
  Practitioner, PractitionerRole, Organization, Location and the like are dropped: a research node needs
  none of them, and a practitioner's or a small practice's name narrows down who the patient is.
- In every kept resource, at any depth: identifiers of every kind (`identifier`, `*Identifier`,
  `valueIdentifier`), narrative and free text (`text`, `note`, `comment`, `description`, `valueString`,
  ...), names, telecom, addresses, photos, contacts, attachments, contained resources, element ids and
  Reference.display are removed; `meta` keeps only `profile`. Dates and codes are kept.
- References to the patient point to the pseudonymised Patient, references to other kept resources
  to their new ids; any other reference (a dropped resource, a contained one, an outside URL) is removed.
- A kept resource that had identifiers gets ONE in their place, since the profiles it keeps in
  `meta.profile` may require one (the MII lab Observation's `analyseBefundCode` slice): system
  `https://hubnode.org/fhir/sid/pseudonym/<domain>/<Type>`, value = its new id, and, where the original
  identifier had them, its `type` (only codes of the public identifier-type code systems, system and code)
  and an assigner naming the pseudonym domain (`https://hubnode.org/fhir/sid/pseudonym-domain|<domain>`).
  It is derived from the new id and the domain alone, so it names nobody and no site.

New ids never derive from the original ones (those never leave the node): a resource's id is a uuid5 of
the domain, the pseudonym, its type and its ordinal among the patient's resources of that type, ordered
by their original id, so a replay of the same data yields the same ids.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

#: Rounds of removing elements made incomplete by scrubbing, before a resource is given up.
MAX_PRUNING_ROUNDS = 20
PSEUDONYM_SYSTEM_BASE = "https://hubnode.org/fhir/sid/pseudonym/"
#: Who assigns a kept resource's replacement identifier: the pseudonym domain (the research project).
PSEUDONYM_DOMAIN_SYSTEM = "https://hubnode.org/fhir/sid/pseudonym-domain"
#: Code systems whose identifier-type codes a replacement identifier carries over; a site's own code
#: system is not among them, as its URL or codes could name the site.
IDENTIFIER_TYPE_SYSTEMS = frozenset(
    {"http://terminology.hl7.org/CodeSystem/v2-0203", "http://fhir.de/CodeSystem/identifier-type-de-basis"}
)
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://hubnode.org/fhir/pseudonymised")
KEPT_TYPES = frozenset(
    {
        "AllergyIntolerance",
        "Condition",
        "DiagnosticReport",
        "Encounter",
        "Immunization",
        "Medication",
        "MedicationAdministration",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Procedure",
        "QuestionnaireResponse",
        "Specimen",
    }
)
REMOVED_KEYS = frozenset(
    {
        "address",
        "comment",
        "conclusion",
        "contact",
        "contained",
        "content",
        "description",
        "id",
        "identifier",
        "name",
        "note",
        "patientInstruction",
        "photo",
        "presentedForm",
        "summary",
        "telecom",
        "text",
        "title",
        "uid",
    }
)
#: value[x] types that are free text, names, contact data, identifiers or documents.
REMOVED_VALUE_TYPES = frozenset(
    {
        "Address",
        "Attachment",
        "Base64Binary",
        "ContactPoint",
        "HumanName",
        "Identifier",
        "Markdown",
        "Oid",
        "String",
        "Uri",
        "Url",
        "Uuid",
    }
)
REFERENCE_KEYS = frozenset({"reference", "type", "identifier", "display", "id", "extension"})
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_YEAR = re.compile(r"\d{4}")

Resolve = Callable[[str], str | None]


def pseudonym_identifier(domain: str, pseudonym: str) -> dict[str, str]:
    """The patient's identifier in the research extract."""
    return {"system": f"{PSEUDONYM_SYSTEM_BASE}{domain}", "value": pseudonym}


def replacement_identifier(domain: str, resource_type: str, new_id: str, originals: object) -> dict[str, Any] | None:
    """The one identifier a kept resource gets in the extract in place of `originals`; None if it had none.

    The model is the first original identifier with a type from IDENTIFIER_TYPE_SYSTEMS (else the first):
    its type codes are kept, and an assigner, if it had one, becomes the pseudonym domain.
    """
    found = [i for i in (originals if isinstance(originals, list) else [originals]) if isinstance(i, dict)]
    if not found:
        return None
    typed = [(i, _public_type_codes(i)) for i in found]
    model, codes = next(((i, c) for i, c in typed if c), typed[0])
    identifier: dict[str, Any] = {}
    if codes:
        identifier["type"] = {"coding": codes}
    identifier |= {"system": f"{PSEUDONYM_SYSTEM_BASE}{domain}/{resource_type}", "value": new_id}
    if "assigner" in model:
        identifier["assigner"] = {"identifier": {"system": PSEUDONYM_DOMAIN_SYSTEM, "value": domain}}
    return identifier


def _public_type_codes(identifier: Mapping[str, Any]) -> list[dict[str, str]]:
    kind = identifier.get("type")
    codings = kind.get("coding") if isinstance(kind, dict) else None
    return [
        {"system": c["system"], "code": c["code"]}
        for c in (codings if isinstance(codings, list) else [])
        if isinstance(c, dict) and c.get("system") in IDENTIFIER_TYPE_SYSTEMS and isinstance(c.get("code"), str)
    ]


def pseudonymise(
    resources: Sequence[Mapping[str, Any]], patient_id: str, pseudonym: str, domain: str
) -> list[dict[str, Any]]:
    """The research extract of one patient from their resources (e.g. `Patient/<id>/$everything`).

    `patient_id` is the patient's id among those resources; `pseudonym` theirs in the project's `domain`.
    The Patient comes first, then the kept resources by type and original id.
    """
    patient = next(
        (r for r in resources if r.get("resourceType") == "Patient" and r.get("id") == patient_id),
        None,
    )
    if patient is None:
        raise ValueError(f"the resources hold no Patient/{patient_id}")
    kept = sorted(
        (r for r in resources if r.get("resourceType") in KEPT_TYPES),
        key=lambda r: (str(r["resourceType"]), str(r.get("id", ""))),
    )
    while True:  # each round drops one resource that scrubbing left invalid, so it ends
        extract, invalid = _extract(patient, patient_id, kept, pseudonym, domain)
        if invalid is None:
            return extract
        kept.remove(invalid)


def _extract(
    patient: Mapping[str, Any], patient_id: str, kept: Sequence[Mapping[str, Any]], pseudonym: str, domain: str
) -> tuple[list[dict[str, Any]], Mapping[str, Any] | None]:
    """The extract of `kept`, or else the first of them that scrubbing leaves invalid.

    A resource becomes invalid when, say, its only required reference pointed at a dropped resource.
    """
    patient_id_new = _new_id(domain, pseudonym, "Patient", 0, preferred=pseudonym)
    new_ids = {f"Patient/{patient_id}": f"Patient/{patient_id_new}"}
    ordinals: dict[str, int] = {}
    renamed: list[tuple[str, Mapping[str, Any]]] = []
    for resource in kept:
        kind = str(resource["resourceType"])
        ordinal = ordinals[kind] = ordinals.get(kind, -1) + 1
        new_id = _new_id(domain, pseudonym, kind, ordinal)
        if isinstance(resource.get("id"), str):
            new_ids[f"{kind}/{resource['id']}"] = f"{kind}/{new_id}"
        renamed.append((new_id, resource))
    resolve = _resolver(new_ids)
    extract = [_patient(patient_id_new, patient, pseudonym, domain)]
    for new_id, resource in renamed:
        clinical = _still_valid(_clinical(resource, new_id, resolve, domain))
        if clinical is None:
            return extract, resource
        extract.append(clinical)
    return extract, None


def _new_id(domain: str, pseudonym: str, kind: str, ordinal: int, preferred: str | None = None) -> str:
    if preferred is not None and _FHIR_ID.fullmatch(preferred):
        return preferred
    return str(uuid.uuid5(ID_NAMESPACE, f"{domain}|{pseudonym}|{kind}|{ordinal}"))


def _resolver(new_ids: Mapping[str, str]) -> Resolve:
    """Relative references (`Type/id`) and absolute ones ending in `Type/id[/_history/n]`."""

    def resolve(reference: str) -> str | None:
        if "://" in reference:
            reference = "/".join(reference.split("/_history/", maxsplit=1)[0].split("/")[-2:])
        return new_ids.get(reference)

    return resolve


def _patient(new_id: str, patient: Mapping[str, Any], pseudonym: str, domain: str) -> dict[str, Any]:
    extract: dict[str, Any] = {
        "resourceType": "Patient",
        "id": new_id,
        "identifier": [pseudonym_identifier(domain, pseudonym)],
    }
    if isinstance(patient.get("gender"), str):
        extract["gender"] = patient["gender"]
    birth_date = patient.get("birthDate")
    if isinstance(birth_date, str) and _YEAR.fullmatch(birth_date[:4]):
        extract["birthDate"] = birth_date[:4]
    return extract


def _clinical(resource: Mapping[str, Any], new_id: str, resolve: Resolve, domain: str) -> dict[str, Any]:
    content = {key: value for key, value in resource.items() if key not in ("resourceType", "meta")}
    kind = str(resource["resourceType"])
    extract: dict[str, Any] = {"resourceType": kind, "id": new_id}
    meta = resource.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("profile"), list):
        extract["meta"] = {"profile": [p for p in meta["profile"] if isinstance(p, str)]}
    replacement = replacement_identifier(domain, kind, new_id, resource.get("identifier"))
    if replacement is not None:  # a list where the type has many, one Identifier where it has one
        extract["identifier"] = [replacement] if isinstance(resource["identifier"], list) else replacement
    extract.update(_scrub(content, resolve) or {})
    return extract


def _scrub(value: Any, resolve: Resolve) -> Any:  # noqa: ANN401 -- any JSON value
    """`value` with everything identifying removed; None when nothing is left of it."""
    if isinstance(value, list):
        items = [cleaned for cleaned in (_scrub(item, resolve) for item in value) if cleaned is not None]
        return items or None
    if not isinstance(value, dict):
        return value
    if "reference" in value or ("identifier" in value and set(value) <= REFERENCE_KEYS):
        target = resolve(value["reference"]) if isinstance(value.get("reference"), str) else None
        return {"reference": target} if target else None
    kept = {}
    for key, item in value.items():
        if _removed(key) or (key == "display" and "code" not in value):
            continue
        cleaned = _scrub(item, resolve)
        if cleaned is not None:
            kept[key] = cleaned
    if set(kept) <= {"url"}:  # empty, or an extension whose value was removed
        return None
    return kept


def _still_valid(resource: dict[str, Any]) -> dict[str, Any] | None:
    """`resource` without the elements that lost a required part to scrubbing; None if the resource itself did.

    Removing a reference can leave its element incomplete (an `Encounter.location` without `location`):
    such an element goes entirely, as the rules above would have it anyway.
    """
    model = get_fhir_model_class(str(resource["resourceType"]))
    for _ in range(MAX_PRUNING_ROUNDS):
        try:
            model.model_validate(resource)
        except ValidationError as invalid:
            places = {tuple(error["loc"][:-1]) for error in invalid.errors()}
            if () in places or not all(_remove_at(resource, place) for place in sorted(places, reverse=True)):
                return None
        else:
            return resource
    return None


def _remove_at(resource: dict[str, Any], place: tuple[int | str, ...]) -> bool:
    """Remove the element at `place` (keys and list indices), and a list it leaves empty; False if not there."""
    chain: list[Any] = [resource]
    for step in place[:-1]:
        try:
            chain.append(chain[-1][step])
        except (KeyError, IndexError, TypeError):
            return False
    parent, last = chain[-1], place[-1]
    if isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        del parent[last]
        if not parent:  # a list is never the resource itself, so it has a key in the element above
            del chain[-2][place[-2]]
        return True
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    return False


def _removed(key: str) -> bool:
    bare = key.lstrip("_")
    return (
        bare in REMOVED_KEYS
        or bare.endswith("Identifier")
        or (bare.startswith("value") and bare.removeprefix("value") in REMOVED_VALUE_TYPES)
    )
