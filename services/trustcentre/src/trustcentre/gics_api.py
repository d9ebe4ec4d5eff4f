"""The gICS TTP-FHIR gateway operations (IG `mosaic-hgw/ttp-fhir-ig-gics` 2025.2.0) over stored consents.

Every IG operation answers in the IG's shape: `$addConsent` (a signed template: Patient,
QuestionnaireResponse, scans, Provenance), `$addConsentOptOut`, `$isConsented`,
`$currentPolicyStatesForPerson`, `$allPolicyStatesForPerson`, `$allConsentsForPerson`,
`$allConsentsForDomain`, `$allConsentsForTemplate`, `$currentConsentForPersonAndTemplate`,
`$getAllConsentedIdsFor`. hubnode's own shapes stay: `$addConsent` with an MII Consent as
`resource`, `$withdrawConsent` (a new consent denying policies from a date on),
`$consentsForPerson` and `$policyStatesForPerson` (the Parameters the portal reads).
Domains, policies and templates are the stack's (`trustcentre.consent_templates`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS, RESEARCH, TREATMENT
from trustcentre.aliases import person_of_site
from trustcentre.auth import Role
from trustcentre.consent_documents import (
    collection,
    computed_consent,
    consent_document,
    document_resources,
    module_answers,
    policy_consent,
    with_own_ids,
)
from trustcentre.consent_templates import (
    MII_DOMAIN,
    SIGNER_ID_PREFIX,
    ConsentDomain,
    ConsentRegistry,
    Policy,
    Template,
)
from trustcentre.consents import PersonIdentifier, add_consent, parsed, stored_consents
from trustcentre.db import audit_log
from trustcentre.fhir import Parameters, parameters
from trustcentre.mii_consent import (
    POLICY_SYSTEM,
    ConsentInvalid,
    MiiConsent,
    PolicyProvision,
    read_consent,
    withdrawal_consent,
)
from trustcentre.persons import PERSON_SYSTEM
from trustcentre.policy_states import PolicyState, current_policy_states, deciding, policy_state
from trustcentre.web import Context, Endpoint, check_batch, operation

ID_MATCHING_TYPES = ("AT_LEAST_ONE", "ALL", "EXACT")
DEFAULT_PAGE = 100
_POLICY_OID = POLICY_SYSTEM.removeprefix("urn:oid:")
#: What asking about a policy is for: sharing with a treating node (.5), research use (.8), else running the node.
_POLICY_PURPOSE = {f"{_POLICY_OID}.5": TREATMENT, f"{_POLICY_OID}.8": RESEARCH}


def _persons(context: Context, params: Parameters) -> list[PersonIdentifier]:
    found = [PersonIdentifier(system, value) for system, value in params.identifiers("personIdentifier")]
    check_batch(context, len(found), "person identifiers")
    return found


def _named_by_node(context: Context, connection: Connection, persons: list[PersonIdentifier], *, read: bool) -> None:
    """A node's caller names persons by its own person ids (and for a yes/no check by any identifier).

    Reading or writing a person's consents is for the site's staff, or for a node's portal acting for
    a patient enrolled there, who is named by the id that node knows them by: never another node's.
    """
    site = context.caller.site
    if site is None:
        return
    for person in persons:
        if person.system == PERSON_SYSTEM:
            if person_of_site(connection, site, person.value) is None:
                raise FhirError(
                    403, "forbidden", f"{person.value!r} is not a person id of {site!r}", ("personIdentifier",)
                )
        elif read:
            raise FhirError(
                403,
                "forbidden",
                f"{context.caller.name!r} names persons here by its own person ids ({PERSON_SYSTEM})",
                ("personIdentifier",),
            )


def _site_staff_only(context: Context, what: str) -> None:
    """Listing a whole domain or template is the site's staff's: a node speaks for its own patients only."""
    if context.caller.site is not None:
        raise FhirError(
            403, "forbidden", f"{context.caller.name!r} may not list {what}: it speaks for its own patients"
        )


class _Gics:
    """The operations over one registry of consent domains."""

    def __init__(self, registry: ConsentRegistry) -> None:
        self.registry = registry

    def domain(self, params: Parameters, *, required: bool = True) -> ConsentDomain:
        """The `domain` parameter's consent domain (hubnode's own operations default to the MII one)."""
        name = params.string("domain", required=required, default=MII_DOMAIN) or MII_DOMAIN
        return self.registry.domain(name)

    # -- writing ----------------------------------------------------------------------------------

    def add(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$addConsent`: a signed template (the IG), or hubnode's MII Consent as `resource`."""
        resource = params.resource("resource")
        if resource is not None:
            return self._add_resource(context, params, resource)
        domain = self.domain(params)
        patient = _required_resource(params, "patient", "Patient")
        response = _required_resource(params, "questionnaireResponse", "QuestionnaireResponse")
        documents = [
            _typed(location, part, "DocumentReference") for location, part in params.named("documentReference")
        ]
        check_batch(context, len(documents), "documentReference parameters")
        provenance = params.resource("provenance")
        if provenance is not None and provenance.get("resourceType") != "Provenance":
            raise FhirError(400, "invalid", "provenance must carry a Provenance resource", ("provenance",))
        canonical = response.get("questionnaire")
        if not isinstance(canonical, str):
            raise FhirError(
                400, "required", "questionnaireResponse.questionnaire names the template", ("questionnaireResponse",)
            )
        template = domain.template_by_questionnaire(canonical, "questionnaireResponse.questionnaire")
        if response.get("status") != "completed":
            raise FhirError(
                422,
                "invalid",
                "questionnaireResponse.status: only a completed one is a consent",
                ("questionnaireResponse",),
            )
        subject = response.get("subject")
        named = subject.get("reference") if isinstance(subject, dict) else None
        if named is not None and named != f"Patient/{patient.get('id')}":
            raise FhirError(
                422,
                "invalid",
                f"questionnaireResponse.subject: {named!r} is not the patient (Patient/{patient.get('id')})",
                ("questionnaireResponse",),
            )
        signed = _moment(response.get("authored"), "questionnaireResponse.authored")
        decisions = module_answers(template, response)
        related = with_own_ids([patient, response, *documents, *([provenance] if provenance else [])])
        consent = self._store(
            context, domain, template, related=related, signed=signed, decisions=decisions, name="$addConsent"
        )
        return consent_document(consent, related)

    def add_opt_out(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$addConsentOptOut`: every policy of an opt-out template holds from now until the person objects."""
        domain = self.domain(params)
        patient = _required_resource(params, "patient", "Patient")
        canonical = _canonical(params, "questionnaire")
        template = domain.template_by_questionnaire(canonical, "questionnaire")
        if template.kind != "opt-out":
            raise FhirError(422, "invalid", f"questionnaire: {template.ref} is no opt-out template", ("questionnaire",))
        decisions = {key: True for module in template.modules for key in module.policies}
        related = with_own_ids([patient])
        return collection(
            [
                self._store(
                    context,
                    domain,
                    template,
                    related=related,
                    signed=datetime.now(UTC),
                    decisions=decisions,
                    name="$addConsentOptOut",
                )
            ]
        )

    def _store(  # noqa: PLR0913 -- a computed consent and what it came with
        self,
        context: Context,
        domain: ConsentDomain,
        template: Template,
        *,
        related: list[dict[str, Any]],
        signed: datetime,
        decisions: Mapping[str, bool],
        name: str,
    ) -> dict[str, Any]:
        """Store the consent `template` amounts to, filed under the Patient's signer id; returns the Consent."""
        patient = related[0]
        signer = _signer(domain, patient)
        responses = [r for r in related if r["resourceType"] == "QuestionnaireResponse"]
        source = f"QuestionnaireResponse/{responses[0]['id']}" if responses else None
        reference = {
            "reference": f"Patient/{patient['id']}",
            "identifier": {"system": signer.system, "value": signer.value},
        }
        resource = computed_consent(
            domain, template, patient=reference, signed=signed, decisions=decisions, source=source
        )
        with context.engine.begin() as connection:
            _named_by_node(context, connection, [signer], read=True)
            consent_id, person = add_consent(connection, domain, resource, template.ref, related)
            audit_log.record(
                connection, context.success(name, [person.value], OPERATIONS, f"consent {consent_id} ({template.ref})")
            )
        return {**resource, "id": consent_id}

    def _add_resource(self, context: Context, params: Parameters, resource: Mapping[str, Any]) -> dict[str, Any]:
        """The `$addConsent` of hubnode: an MII Consent as it is, answered by its id."""
        domain = self.domain(params, required=False)
        with context.engine.begin() as connection:
            patient = resource.get("patient")
            named = patient.get("identifier") if isinstance(patient, dict) else None
            if isinstance(named, dict):
                _named_by_node(
                    context,
                    connection,
                    [PersonIdentifier(str(named.get("system")), str(named.get("value")))],
                    read=True,
                )
            elif context.caller.site is not None:
                raise FhirError(422, "required", "Consent.patient.identifier names the person", ("Consent.patient",))
            consent_id, person = add_consent(connection, domain, resource)
            audit_log.record(
                connection,
                context.success("$addConsent", [person.value], OPERATIONS, f"consent {consent_id}"),
            )
        return parameters(
            {"name": "consentId", "valueString": consent_id}, {"name": "domain", "valueString": domain.name}
        )

    def withdraw(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$withdrawConsent` (hubnode): one person denies policies from a date on."""
        persons = _persons(context, params)
        if len(persons) != 1:
            raise FhirError(400, "invalid", "a withdrawal names exactly one personIdentifier", ("personIdentifier",))
        [person] = persons
        domain = self.domain(params, required=False)
        codes = [_policy(domain, Parameters((part,), location)).key for location, part in params.named("policy")]
        withdrawn_on = params.date("withdrawalDate") or datetime.now(UTC).date()
        try:
            patient = {"identifier": {"system": person.system, "value": person.value}}
            resource = withdrawal_consent(patient, withdrawn_on, codes, datetime.now(UTC), domain.policy_keys())
        except (ConsentInvalid, ValueError) as exc:
            raise FhirError(400, "invalid", str(exc), ("policy",)) from None
        with context.engine.begin() as connection:
            _named_by_node(context, connection, persons, read=True)
            consent_id, _ = add_consent(connection, domain, resource)
            audit_log.record(
                connection,
                context.success(
                    "$withdrawConsent", [person.value], OPERATIONS, f"withdrawal {consent_id} from {withdrawn_on}"
                ),
            )
        return parameters(
            {"name": "consentId", "valueString": consent_id},
            {"name": "withdrawnFrom", "valueDate": withdrawn_on.isoformat()},
        )

    # -- asking about policies --------------------------------------------------------------------

    def is_consented(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$isConsented`: true only if the policy is ACCEPTED on the request date."""
        persons = _persons(context, params)
        domain = self.domain(params, required=False)
        config = _config(params)
        policy = _versioned_policy(domain, params, config)
        matching = _id_matching(config)
        unknown_is_decline = config.boolean("unknownStateIsConsideredAsDecline", default=False)
        day = config.date("requestDate") or datetime.now(UTC).date()
        with context.engine.begin() as connection:
            _named_by_node(context, connection, persons, read=False)
            groups = [persons] if matching == "AT_LEAST_ONE" else [[p] for p in persons]
            states = [
                policy_state(
                    parsed(_resources(connection, domain, group), domain),
                    policy.key,
                    day,
                    unknown_is_decline=unknown_is_decline,
                )
                for group in groups
            ]
            purpose = next((_POLICY_PURPOSE[c] for _, c in policy.codings if c in _POLICY_PURPOSE), OPERATIONS)
            audit_log.record(
                connection,
                context.success("$isConsented", _subjects(persons), purpose, f"policy {policy.key} on {day}"),
            )
        return parameters({"name": "consented", "valueBoolean": all(s is PolicyState.ACCEPTED for s in states)})

    def current_states(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$currentPolicyStatesForPerson`: one Consent per signed policy, as it stands on the request date."""
        persons = _persons(context, params)
        domain = self.domain(params)
        config = _config(params)
        day = config.date("requestDate") or datetime.now(UTC).date()
        unknown_is_decline = config.boolean("unknownStateIsConsideredAsDecline", default=True)
        with context.engine.begin() as connection:
            _named_by_node(context, connection, persons, read=True)
            resources = _resources(connection, domain, persons)
            audit_log.record(
                connection, context.success("$currentPolicyStatesForPerson", _subjects(persons), OPERATIONS)
            )
        consents = parsed(resources, domain)
        by_id = dict(zip((id(c) for c in consents), resources, strict=True))
        answer = []
        for key in sorted({p.code for consent in consents for p in consent.provisions}):
            found = deciding(consents, key, day)
            if found is not None:
                answer.append(policy_consent(domain, by_id[id(found[0])], found[1]))
            elif unknown_is_decline:
                consent, provision = _last_signed(consents, key)
                answer.append(policy_consent(domain, by_id[id(consent)], provision, permit=False))
        return collection(answer)

    def all_states(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$allPolicyStatesForPerson`: every policy ever signed, one Consent each, permit or deny."""
        persons = _persons(context, params)
        domain = self.domain(params)
        with context.engine.begin() as connection:
            _named_by_node(context, connection, persons, read=True)
            resources = _resources(connection, domain, persons)
            audit_log.record(connection, context.success("$allPolicyStatesForPerson", _subjects(persons), OPERATIONS))
        policies = domain.policy_keys()
        return collection(
            policy_consent(domain, resource, provision, permit=provision.permit and consent.status == "active")
            for resource in resources
            for consent in [read_consent(dict(resource), policies)]
            for provision in consent.provisions
        )

    def states_parameters(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$policyStatesForPerson` (hubnode): every policy of the domain with ACCEPTED, DECLINED or UNKNOWN."""
        persons = _persons(context, params)
        domain = self.domain(params, required=False)
        config = _config(params)
        day = config.date("requestDate") or datetime.now(UTC).date()
        unknown_is_decline = config.boolean("unknownStateIsConsideredAsDecline", default=False)
        with context.engine.begin() as connection:
            _named_by_node(context, connection, persons, read=True)
            states = current_policy_states(
                parsed(_resources(connection, domain, persons), domain), day, domain.policies
            )
            audit_log.record(connection, context.success("$policyStatesForPerson", _subjects(persons), OPERATIONS))
        return parameters(
            *(_state_part(domain.policies[key], state, unknown_is_decline) for key, state in sorted(states.items()))
        )

    def consented_ids(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$getAllConsentedIdsFor`: the signer ids of one type whose policy is ACCEPTED on the request date."""
        _site_staff_only(context, "a domain's consented persons")
        domain = self.domain(params)
        signer_type = params.string("signerIdTypeName")
        if signer_type not in domain.signer_id_types:
            known = ", ".join(domain.signer_id_types) or "none"
            raise FhirError(
                404,
                "not-found",
                f"signerIdTypeName: {signer_type!r} is no signer id type of {domain.name!r}; known: {known}",
                ("signerIdTypeName",),
            )
        config = _config(params)
        policy = _versioned_policy(domain, params, config)
        _id_matching(config)
        day = config.date("requestDate") or datetime.now(UTC).date()
        system = f"{SIGNER_ID_PREFIX}{signer_type}"
        with context.engine.begin() as connection:
            by_signer: dict[PersonIdentifier, list[Mapping[str, Any]]] = {}
            for stored in stored_consents(connection, domain.name):
                if stored.person.system == system:
                    by_signer.setdefault(stored.person, []).append(stored.resource)
            consented = [
                signer
                for signer, resources in sorted(by_signer.items(), key=lambda found: found[0].value)
                if policy_state(parsed(resources, domain), policy.key, day) is PolicyState.ACCEPTED
            ]
            audit_log.record(
                connection,
                context.success(
                    "$getAllConsentedIdsFor", _subjects(consented), OPERATIONS, f"policy {policy.key} on {day}"
                ),
            )
        return parameters(
            *(
                {"name": "personIdentifier", "valueIdentifier": {"system": p.system, "value": p.value}}
                for p in consented
            )
        )

    # -- reading consents -------------------------------------------------------------------------

    def all_for_person(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$allConsentsForPerson`: one Bundle per consent, with what came with it."""
        persons = _persons(context, params)
        domain = self.domain(params)
        with context.engine.begin() as connection:
            _named_by_node(context, connection, persons, read=True)
            found = stored_consents(connection, domain.name, persons)
            audit_log.record(connection, context.success("$allConsentsForPerson", _subjects(persons), OPERATIONS))
        return collection(consent_document(s.resource, s.related) for s in found)

    def consents_for_person(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$consentsForPerson` (hubnode): the person's Consents, oldest first, as a searchset."""
        persons = _persons(context, params)
        domain = self.domain(params, required=False)
        with context.engine.begin() as connection:
            _named_by_node(context, connection, persons, read=True)
            found = _resources(connection, domain, persons)
            audit_log.record(connection, context.success("$consentsForPerson", _subjects(persons), OPERATIONS))
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [{"resource": r} for r in found],
        }

    def all_for_domain(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$allConsentsForDomain`: every consent of the domain, a page at a time (`_count`, `_offset`)."""
        _site_staff_only(context, "a domain's consents")
        domain = self.domain(params)
        ref = params.string("template", required=False)
        template = None if ref is None else domain.template_by_ref(ref).ref
        count, offset = _page(params, context)
        with context.engine.begin() as connection:
            found = stored_consents(connection, domain.name, template=template)[offset : offset + count]
            audit_log.record(
                connection,
                context.success("$allConsentsForDomain", _subjects([s.person for s in found]), OPERATIONS, domain.name),
            )
        return collection(r for s in found for r in document_resources(s.resource, s.related))

    def all_for_template(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$allConsentsForTemplate`: every consent computed from one template, one Bundle each."""
        _site_staff_only(context, "a template's consents")
        domain = self.domain(params)
        template = domain.template_by_ref(params.string("template") or "")
        count, offset = _page(params, context)
        with context.engine.begin() as connection:
            found = stored_consents(connection, domain.name, template=template.ref)[offset : offset + count]
            audit_log.record(
                connection,
                context.success(
                    "$allConsentsForTemplate", _subjects([s.person for s in found]), OPERATIONS, template.ref
                ),
            )
        return collection(consent_document(s.resource, s.related) for s in found)

    def current_for_template(self, context: Context, params: Parameters) -> dict[str, Any]:
        """`$currentConsentForPersonAndTemplate`: the highest template version's newest consent (or just the newest)."""
        persons = _persons(context, params)
        domain = self.domain(params)
        template = domain.template_by_ref(params.string("template") or "")
        any_version = params.boolean("ignore-version-number", default=False)
        refs = {t.ref for t in domain.templates if t.name == template.name} if any_version else {template.ref}
        with context.engine.begin() as connection:
            _named_by_node(context, connection, persons, read=True)
            found = [s for s in stored_consents(connection, domain.name, persons) if s.template in refs]
            audit_log.record(
                connection,
                context.success("$currentConsentForPersonAndTemplate", _subjects(persons), OPERATIONS, template.ref),
            )
        if not found:
            raise FhirError(
                404, "not-found", f"no consent of {template.ref} for this personIdentifier", ("personIdentifier",)
            )
        newest = found[-1]  # oldest first, and every one here is of the one template version asked for
        return collection([consent_document(newest.resource, newest.related)])


def gics_endpoints(registry: ConsentRegistry) -> Mapping[str, Endpoint]:
    """Operation name -> endpoint."""
    gics = _Gics(registry)
    served = {
        "$addConsent": (Role.CONSENT_WRITE, gics.add),
        "$addConsentOptOut": (Role.CONSENT_WRITE, gics.add_opt_out),
        "$withdrawConsent": (Role.CONSENT_WRITE, gics.withdraw),
        "$isConsented": (Role.CONSENT_CHECK, gics.is_consented),
        "$currentPolicyStatesForPerson": (Role.CONSENT_READ, gics.current_states),
        "$allPolicyStatesForPerson": (Role.CONSENT_READ, gics.all_states),
        "$policyStatesForPerson": (Role.CONSENT_READ, gics.states_parameters),
        "$getAllConsentedIdsFor": (Role.CONSENT_READ, gics.consented_ids),
        "$allConsentsForPerson": (Role.CONSENT_READ, gics.all_for_person),
        "$consentsForPerson": (Role.CONSENT_READ, gics.consents_for_person),
        "$allConsentsForDomain": (Role.CONSENT_READ, gics.all_for_domain),
        "$allConsentsForTemplate": (Role.CONSENT_READ, gics.all_for_template),
        "$currentConsentForPersonAndTemplate": (Role.CONSENT_READ, gics.current_for_template),
    }
    return {name: operation(name, role, work) for name, (role, work) in served.items()}


def _resources(
    connection: Connection, domain: ConsentDomain, persons: Sequence[PersonIdentifier]
) -> list[Mapping[str, Any]]:
    return [stored.resource for stored in stored_consents(connection, domain.name, persons)]


def _subjects(persons: Sequence[PersonIdentifier]) -> list[str]:
    return [p.value for p in persons]


def _policy(domain: ConsentDomain, params: Parameters) -> Policy:
    """The `policy` Coding as a policy of `domain` (an MII code may be given by its suffix, ".8" as "8")."""
    coding = params.coding("policy")
    if coding is None:
        raise FhirError(400, "required", "parameter 'policy' (valueCoding) is required", ("policy",))
    system, code = str(coding["system"]), str(coding["code"])
    if system == POLICY_SYSTEM and not code.startswith(_POLICY_OID):
        code = f"{_POLICY_OID}.{code}"
    return domain.policy(system, code)


def _versioned_policy(domain: ConsentDomain, params: Parameters, config: Parameters) -> Policy:
    """The policy in the `version` asked for (any version with `ignoreVersionNumber`, or none given)."""
    policy = _policy(domain, params)
    version = params.string("version", required=False)
    ignore = config.boolean("ignoreVersionNumber", default=False)
    if version is not None and not ignore and policy.version is not None and version != policy.version:
        raise FhirError(
            404,
            "not-found",
            f"version: policy {policy.key!r} is in version {policy.version}, not {version}",
            ("version",),
        )
    return policy


def _config(params: Parameters) -> Parameters:
    """The `config` of gICS: a nested Parameters resource (the IG) or parts (hubnode's callers)."""
    found = list(params.named("config"))
    if not found:
        return Parameters(())
    location, part = found[0]
    nested = part.get("resource")
    if nested is None:
        return params.sub("config") or Parameters(())
    if not isinstance(nested, dict) or nested.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", f"{location} (config) must carry a Parameters resource", (location,))
    inner = nested.get("parameter", [])
    if not isinstance(inner, list):
        raise FhirError(400, "structure", f"{location}.resource.parameter must be a list", (location,))
    return Parameters.from_list(inner, f"{location}.resource.parameter")


def _id_matching(config: Parameters) -> str:
    """`idMatchingType` (valueCoding of gICS's IdMatchingType, or valueString); EXACT counts as ALL."""
    found = list(config.named("idMatchingType"))
    if not found:
        return "AT_LEAST_ONE"
    location, part = found[0]
    value = (
        part.get("valueCoding", {}).get("code")
        if isinstance(part.get("valueCoding"), dict)
        else part.get("valueString")
    )
    if value not in ID_MATCHING_TYPES:
        raise FhirError(
            400, "invalid", f"config.idMatchingType {value!r}: one of {', '.join(ID_MATCHING_TYPES)}", (location,)
        )
    return "AT_LEAST_ONE" if value == "AT_LEAST_ONE" else "ALL"


def _page(params: Parameters, context: Context) -> tuple[int, int]:
    """`_count` (default 100, at most the batch limit) and `_offset` (default 0), neither negative."""
    values = []
    for name, default in (("_count", DEFAULT_PAGE), ("_offset", 0)):
        found = list(params.named(name))
        value = found[0][1].get("valueInteger", found[0][1].get("valueString")) if found else default
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FhirError(400, "invalid", f"{name} must be a whole number, not negative", (name,))
        values.append(value)
    check_batch(context, values[0], "consents per page (_count)")
    return values[0], values[1]


def _typed(location: str, part: Mapping[str, Any], resource_type: str) -> Mapping[str, Any]:
    resource = part.get("resource")
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        raise FhirError(400, "invalid", f"{location} ({part['name']}) must carry a {resource_type}", (location,))
    return resource


def _required_resource(params: Parameters, name: str, resource_type: str) -> Mapping[str, Any]:
    found = list(params.named(name))
    if not found:
        raise FhirError(400, "required", f"parameter {name!r} ({resource_type}) is required", (name,))
    if len(found) > 1:
        raise FhirError(400, "invalid", f"parameter {name!r} may appear only once", (name,))
    return _typed(*found[0], resource_type)


def _canonical(params: Parameters, name: str) -> str:
    found = list(params.named(name))
    value = found[0][1].get("valueCanonical", found[0][1].get("valueUri")) if found else None
    if not isinstance(value, str) or not value:
        raise FhirError(400, "required", f"parameter {name!r} (valueCanonical) is required", (name,))
    return value


def _moment(value: object, where: str) -> datetime:
    """A FHIR dateTime with a time zone (a bare date counts from midnight UTC)."""
    if not isinstance(value, str):
        raise FhirError(400, "required", f"{where}: expected a FHIR dateTime", (where,))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FhirError(400, "invalid", f"{where}: {value!r} is not a FHIR dateTime", (where,)) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _signer(domain: ConsentDomain, patient: Mapping[str, Any]) -> PersonIdentifier:
    """The signer id a consent is filed under: the Patient's first identifier of a signer id type of the domain.

    As in gICS, identifier systems are `https://ths-greifswald.de/fhir/gics/identifiers/<type>`; a
    node's caller may name its patient by its own person id (`urn:hubnode:person`) instead.
    """
    identifiers = patient.get("identifier")
    allowed = {f"{SIGNER_ID_PREFIX}{t}" for t in domain.signer_id_types} | {PERSON_SYSTEM}
    for identifier in identifiers if isinstance(identifiers, list) else []:
        system = identifier.get("system") if isinstance(identifier, dict) else None
        value = identifier.get("value") if isinstance(identifier, dict) else None
        if system in allowed and isinstance(value, str) and value.strip():
            return PersonIdentifier(str(system), value)
    raise FhirError(
        422,
        "invalid",
        f"patient.identifier: none of system {', '.join(sorted(allowed))} (signer id types of {domain.name!r})",
        ("patient",),
    )


def _last_signed(consents: Sequence[MiiConsent], key: str) -> tuple[MiiConsent, PolicyProvision]:
    """The latest consent that named policy `key`, with its provision (for a state no provision covers today)."""
    return max(
        ((consent, provision) for consent in consents for provision in consent.provisions if provision.code == key),
        key=lambda found: found[0].date_time,
    )


def _state_part(policy: Policy, state: PolicyState, unknown_is_decline: bool) -> dict[str, Any]:
    shown = PolicyState.DECLINED if unknown_is_decline and state is PolicyState.UNKNOWN else state
    # the portal reads policies by their MII OIDs, whatever a declared domain names them first
    system, code = next((c for c in policy.codings if c[0] == POLICY_SYSTEM), policy.codings[0])
    return {
        "name": "policyState",
        "part": [
            {"name": "policy", "valueCoding": {"system": system, "code": code}},
            {"name": "state", "valueCode": shown.value},
        ],
    }
