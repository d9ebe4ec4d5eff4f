"""The gICS TTP-FHIR gateway operations over MII consents.

`$addConsent` (Parameters with `domain` and the Consent as `resource`), `$isConsented`,
`$allConsentsForPerson`, `$currentPolicyStatesForPerson`, and `$withdrawConsent`, which records a
withdrawal as a new consent denying the policies from a date on (earlier history stays readable).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from servicekit.fhir import FhirError
from servicekit.purpose import OPERATIONS, RESEARCH, TREATMENT
from trustcentre.aliases import person_of_site
from trustcentre.auth import Role
from trustcentre.consents import PersonIdentifier, add_consent, consents_of, parsed
from trustcentre.db import audit_log
from trustcentre.fhir import Parameters, parameters
from trustcentre.mii_consent import POLICY_SYSTEM, ConsentInvalid, withdrawal_consent
from trustcentre.persons import PERSON_SYSTEM
from trustcentre.policy_states import PolicyState, current_policy_states, policy_state
from trustcentre.web import Context, Endpoint, check_batch, operation

DEFAULT_DOMAIN = "MII"
ID_MATCHING_TYPES = ("AT_LEAST_ONE", "ALL")
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


def _domain(params: Parameters) -> str:
    return params.string("domain", required=False, default=DEFAULT_DOMAIN) or DEFAULT_DOMAIN


def _policy_code(params: Parameters) -> str:
    coding = params.coding("policy")
    if coding is None:
        raise FhirError(400, "required", "parameter 'policy' (valueCoding) is required", ("policy",))
    if coding["system"] != POLICY_SYSTEM:
        raise FhirError(400, "invalid", f"policy system {coding['system']!r} is not {POLICY_SYSTEM}", ("policy",))
    code = str(coding["code"])
    return code if code.startswith(_POLICY_OID) else f"{_POLICY_OID}.{code}"


def _subjects(persons: list[PersonIdentifier]) -> list[str]:
    return [p.value for p in persons]


def _add(context: Context, params: Parameters) -> dict[str, Any]:
    resource = params.resource("resource")
    if resource is None:
        raise FhirError(400, "required", "parameter 'resource' (the Consent) is required", ("resource",))
    domain = _domain(params)
    with context.engine.begin() as connection:
        patient = resource.get("patient")
        named = patient.get("identifier") if isinstance(patient, dict) else None
        if isinstance(named, dict):
            _named_by_node(
                context, connection, [PersonIdentifier(str(named.get("system")), str(named.get("value")))], read=True
            )
        elif context.caller.site is not None:
            raise FhirError(422, "required", "Consent.patient.identifier names the person", ("Consent.patient",))
        consent_id, person = add_consent(connection, domain, resource)
        audit_log.record(
            connection,
            context.success("$addConsent", [person.value], OPERATIONS, f"consent {consent_id}"),
        )
    return parameters({"name": "consentId", "valueString": consent_id}, {"name": "domain", "valueString": domain})


def _is_consented(context: Context, params: Parameters) -> dict[str, Any]:
    persons = _persons(context, params)
    code = _policy_code(params)
    config = params.sub("config") or Parameters(())
    matching = config.string("idMatchingType", required=False, default="AT_LEAST_ONE")
    if matching not in ID_MATCHING_TYPES:
        raise FhirError(
            400,
            "invalid",
            f"config.idMatchingType {matching!r}: one of {', '.join(ID_MATCHING_TYPES)}",
            ("config",),
        )
    unknown_is_decline = config.boolean("unknownStateIsConsideredAsDecline", default=False)
    day = config.date("requestDate") or datetime.now(UTC).date()
    domain = _domain(params)
    with context.engine.begin() as connection:
        _named_by_node(context, connection, persons, read=False)
        groups = [persons] if matching == "AT_LEAST_ONE" else [[p] for p in persons]
        states = [
            policy_state(
                parsed(consents_of(connection, domain, group)), code, day, unknown_is_decline=unknown_is_decline
            )
            for group in groups
        ]
        audit_log.record(
            connection,
            context.success(
                "$isConsented", _subjects(persons), _POLICY_PURPOSE.get(code, OPERATIONS), f"policy {code} on {day}"
            ),
        )
    return parameters({"name": "consented", "valueBoolean": all(s is PolicyState.ACCEPTED for s in states)})


def _all_for_person(context: Context, params: Parameters) -> dict[str, Any]:
    persons = _persons(context, params)
    with context.engine.begin() as connection:
        _named_by_node(context, connection, persons, read=True)
        found = consents_of(connection, _domain(params), persons)
        audit_log.record(
            connection,
            context.success("$allConsentsForPerson", _subjects(persons), OPERATIONS),
        )

    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(found),
        "entry": [{"resource": r} for r in found],
    }


def _current_states(context: Context, params: Parameters) -> dict[str, Any]:
    persons = _persons(context, params)
    config = params.sub("config") or Parameters(())
    day = config.date("requestDate") or datetime.now(UTC).date()
    unknown_is_decline = config.boolean("unknownStateIsConsideredAsDecline", default=False)
    with context.engine.begin() as connection:
        _named_by_node(context, connection, persons, read=True)
        states = current_policy_states(parsed(consents_of(connection, _domain(params), persons)), day)
        audit_log.record(
            connection,
            context.success("$currentPolicyStatesForPerson", _subjects(persons), OPERATIONS),
        )
    return parameters(*(_state_part(code, state, unknown_is_decline) for code, state in sorted(states.items())))


def _withdraw(context: Context, params: Parameters) -> dict[str, Any]:
    persons = _persons(context, params)
    if len(persons) != 1:
        raise FhirError(400, "invalid", "a withdrawal names exactly one personIdentifier", ("personIdentifier",))
    [person] = persons
    codes = [_policy_code(Parameters((part,), location)) for location, part in params.named("policy")]
    withdrawn_on = params.date("withdrawalDate") or datetime.now(UTC).date()
    domain = _domain(params)
    try:
        patient = {"identifier": {"system": person.system, "value": person.value}}
        resource = withdrawal_consent(patient, withdrawn_on, codes, datetime.now(UTC))
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


def gics_endpoints() -> Mapping[str, Endpoint]:
    """Operation name -> endpoint."""
    return {
        "$addConsent": operation("$addConsent", Role.CONSENT_WRITE, _add),
        "$withdrawConsent": operation("$withdrawConsent", Role.CONSENT_WRITE, _withdraw),
        "$isConsented": operation("$isConsented", Role.CONSENT_CHECK, _is_consented),
        "$allConsentsForPerson": operation("$allConsentsForPerson", Role.CONSENT_READ, _all_for_person),
        "$currentPolicyStatesForPerson": operation("$currentPolicyStatesForPerson", Role.CONSENT_READ, _current_states),
    }


def _state_part(code: str, state: PolicyState, unknown_is_decline: bool) -> dict[str, Any]:
    shown = PolicyState.DECLINED if unknown_is_decline and state is PolicyState.UNKNOWN else state
    return {
        "name": "policyState",
        "part": [
            {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": code}},
            {"name": "state", "valueCode": shown.value},
        ],
    }
