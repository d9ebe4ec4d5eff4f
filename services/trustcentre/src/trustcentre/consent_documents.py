"""Consents computed from a template, and the gICS shapes they are answered in.

gICS does not take a Consent: it takes what was signed (a QuestionnaireResponse answering each
module of a template, with Patient, Provenance and scans) and computes the Consent itself, one
nested provision per policy of each answered module. An opt-out template needs no answers: all its
policies hold from now until the person objects. The resources that came along get ids of ours,
with their references rewritten, so nothing a sender chose can collide with what is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from servicekit.fhir import FhirError
from trustcentre.consent_templates import ConsentDomain, Policy, Template
from trustcentre.mii_consent import CONSENT_SCOPE_SYSTEM, LOINC_SYSTEM, RESEARCH_CONSENT_LOINC, PolicyProvision

GICS_CONSENT_PROFILE: Final = "https://ths-greifswald.de/fhir/StructureDefinition/gics/Consent"
RESULT_TYPE_SYSTEM: Final = "http://fhir.de/ConsentManagement/CodeSystem/ResultType"
TEMPLATE_TYPE_SYSTEM: Final = "http://fhir.de/ConsentManagement/CodeSystem/TemplateType"
ANSWER_OID_SYSTEM: Final = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.2"
CONSENT_STATUS_SYSTEM: Final = "https://ths-greifswald.de/fhir/CodeSystem/gics/ConsentStatus"
#: A module's answer -> permit (True), deny (False) or undecided (None), by the two code systems the IG allows.
ANSWERS: Final[Mapping[tuple[str, str], bool | None]] = {
    (ANSWER_OID_SYSTEM, f"{ANSWER_OID_SYSTEM.removeprefix('urn:oid:')}.1"): True,
    (ANSWER_OID_SYSTEM, f"{ANSWER_OID_SYSTEM.removeprefix('urn:oid:')}.2"): False,
    **{(CONSENT_STATUS_SYSTEM, code): True for code in ("ACCEPTED", "ACCEPTED_OPT_OUT")},
    **{
        (CONSENT_STATUS_SYSTEM, code): False
        for code in ("DECLINED", "WITHDRAWN", "INVALIDATED", "REFUSED", "EXPIRED", "OBJECTED")
    },
    **{(CONSENT_STATUS_SYSTEM, code): None for code in ("UNKNOWN", "NOT_ASKED", "NOT_CHOSEN")},
}


def new_id() -> str:
    """A fresh id: a sender's ids are never kept (as in gICS)."""
    return str(uuid.uuid4())


def module_answers(template: Template, response: Mapping[str, Any]) -> dict[str, bool]:
    """Policy key -> permitted, from the answered modules (free-text items, without `|`, carry no policy)."""
    modules = {module.link_id: module for module in template.modules}
    items = response.get("item", [])
    if not isinstance(items, list):
        raise FhirError(400, "structure", "questionnaireResponse.item must be a list", ("questionnaireResponse",))
    decided: dict[str, bool] = {}
    for index, item in enumerate(items):
        where = f"questionnaireResponse.item[{index}]"
        link = item.get("linkId") if isinstance(item, dict) else None
        if not isinstance(link, str):
            raise FhirError(400, "structure", f"{where}.linkId: expected a string", (where,))
        if "|" not in link:
            continue
        module = modules.get(link)
        if module is None:
            known = ", ".join(modules)
            raise FhirError(422, "invalid", f"{where}.linkId: {link!r} is no module of {template.ref}; known: {known}")
        answer = _answer(item, where)
        if answer is not None:
            decided.update(dict.fromkeys(module.policies, answer))
    return decided


def _answer(item: Mapping[str, Any], where: str) -> bool | None:
    answers = item.get("answer")
    coding = answers[0].get("valueCoding") if isinstance(answers, list) and len(answers) == 1 else None
    if not isinstance(coding, dict):
        raise FhirError(400, "invalid", f"{where}.answer: expected one answer with a valueCoding", (where,))
    pair = (str(coding.get("system")), str(coding.get("code")))
    if pair not in ANSWERS:
        raise FhirError(
            422,
            "invalid",
            f"{where}.answer: {pair[0]}|{pair[1]} is not an answer of {ANSWER_OID_SYSTEM} or {CONSENT_STATUS_SYSTEM}",
        )
    return ANSWERS[pair]


def computed_consent(  # noqa: PLR0913 -- what a signed template amounts to
    domain: ConsentDomain,
    template: Template,
    *,
    patient: Mapping[str, Any],
    signed: datetime,
    decisions: Mapping[str, bool],
    source: str | None,
) -> dict[str, Any]:
    """The Consent a template amounts to: a deny (opt-out: a permit) holding one provision per decided policy."""
    end = _years_after(signed, template.validity_years)
    period = {"start": signed.isoformat(timespec="seconds"), "end": end.isoformat(timespec="seconds")}
    categories = [(LOINC_SYSTEM, RESEARCH_CONSENT_LOINC), (RESULT_TYPE_SYSTEM, "document")]
    if template.kind == "opt-out":
        categories.append((TEMPLATE_TYPE_SYSTEM, "CONSENT-OPT-OUT"))
    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "id": new_id(),
        "meta": {"profile": [GICS_CONSENT_PROFILE]},
        "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE_SYSTEM, "code": "research"}]},
        "category": [{"coding": [{"system": system, "code": code}]} for system, code in categories],
        "patient": dict(patient),
        "dateTime": signed.isoformat(timespec="seconds"),
        "organization": [{"display": domain.name}],
        "policy": [{"uri": template.questionnaire}],
        "provision": {
            "type": "permit" if template.kind == "opt-out" else "deny",
            "period": period,
            "provision": [
                {"type": "permit" if permit else "deny", "period": period, "code": _concepts(domain.policies[key])}
                for key, permit in decisions.items()
            ],
        },
    }
    if source is not None:
        resource["sourceReference"] = {"reference": source}
    return resource


def _years_after(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _concepts(policy: Policy) -> list[dict[str, Any]]:
    """A policy as gICS writes it: one CodeableConcept per coding (its own code system's first)."""
    return [{"coding": [{"system": system, "code": code}]} for system, code in policy.codings]


def policy_consent(
    domain: ConsentDomain, stored: Mapping[str, Any], provision: PolicyProvision, permit: bool | None = None
) -> dict[str, Any]:
    """One policy of a stored consent as the Consent gICS answers policy states with (`ResultType` policy)."""
    period = {"start": provision.start.isoformat()}
    if provision.end is not None:
        period["end"] = provision.end.isoformat()
    decided = provision.permit if permit is None else permit
    consent = {
        key: stored[key]
        for key in ("patient", "dateTime", "status", "scope", "policy", "organization")
        if key in stored
    }
    return {
        "resourceType": "Consent",
        "id": new_id(),
        "meta": {"profile": [GICS_CONSENT_PROFILE]},
        **consent,
        "category": [
            {"coding": [{"system": LOINC_SYSTEM, "code": RESEARCH_CONSENT_LOINC}]},
            {"coding": [{"system": RESULT_TYPE_SYSTEM, "code": "policy"}]},
        ],
        "sourceReference": {"reference": f"Consent/{stored.get('id')}"},
        "provision": {
            "type": "permit" if decided else "deny",
            "period": period,
            "code": _concepts(domain.policies[provision.code]),
        },
    }


def with_own_ids(resources: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The resources with new ids and every reference among them rewritten to those ids."""
    ids = [new_id() for _ in resources]
    renamed = {
        f"{r['resourceType']}/{r['id']}": f"{r['resourceType']}/{i}"
        for r, i in zip(resources, ids, strict=True)
        if "id" in r
    }
    return [{**_rewrite(dict(r), renamed), "id": i} for r, i in zip(resources, ids, strict=True)]


def _rewrite(value: Any, renamed: Mapping[str, str]) -> Any:  # noqa: ANN401 -- any JSON
    if isinstance(value, dict):
        return {
            key: renamed.get(item, item) if key == "reference" and isinstance(item, str) else _rewrite(item, renamed)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(item, renamed) for item in value]
    return value


def collection(resources: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A Bundle of type collection."""
    return {
        "resourceType": "Bundle",
        "id": new_id(),
        "type": "collection",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "entry": [
            {"fullUrl": f"urn:uuid:{r['id']}", "resource": dict(r)} if "id" in r else {"resource": dict(r)}
            for r in resources
        ],
    }


def document_resources(resource: Mapping[str, Any], related: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One consent with what came with it, in the IG's order: QuestionnaireResponse, Consent, the rest."""
    responses = [r for r in related if r.get("resourceType") == "QuestionnaireResponse"]
    rest = [r for r in related if r.get("resourceType") != "QuestionnaireResponse"]
    return [*responses, resource, *rest]


def consent_document(resource: Mapping[str, Any], related: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One consent with what came with it, as the Bundle the IG nests per consent."""
    return collection(document_resources(resource, related))
