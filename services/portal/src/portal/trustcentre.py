"""The trust centre as the portal uses it: enrolment, a patient's consents, their ledger.

The portal names a patient only by the id its node knows them by (`urn:hubnode:person`), which it
learns when the patient redeems an enrolment code; the trust centre refuses it any other person.
Consent operations are gICS's (hubnode's `$policyStatesForPerson`, `$consentsForPerson`,
`$withdrawConsent`, `$addConsent`, `$isConsented`), so a site's real gICS could answer them too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from portal.consent_modules import POLICY_OID, POLICY_SYSTEM, grant_consent
from portal.upstream import FhirClient, UpstreamError, resources

PERSON_SYSTEM = "urn:hubnode:person"
DOMAIN = "MII"


def _person(person_id: str, name: str = "personIdentifier") -> dict[str, Any]:
    return {"name": name, "valueIdentifier": {"system": PERSON_SYSTEM, "value": person_id}}


def _parameters(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parts)}


def _values(answer: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [p for p in answer.get("parameter", []) if isinstance(p, dict) and p.get("name") == name]


class TrustCentre:
    """Calls to the federation's trust centre with the portal's own grant."""

    def __init__(self, client: FhirClient) -> None:
        self._client = client

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def issue_enrolment(self, system: str, value: str, staff: str) -> tuple[str, str]:
        """A one-time code for the person the site knows by `system|value`, and until when it is valid."""
        answer = await self._client.post(
            "epix/$issueEnrolment",
            _parameters(
                {"name": "identifier", "valueIdentifier": {"system": system, "value": value}},
                {"name": "issuedBy", "valueString": staff},
            ),
        )
        code = next((p.get("valueString") for p in _values(answer, "code")), None)
        expires = next((p.get("valueDateTime") for p in _values(answer, "expires")), "")
        if not isinstance(code, str):
            raise UpstreamError("trust centre", 502, "$issueEnrolment answered no code")
        return code, str(expires)

    async def redeem_enrolment(self, code: str, account: str) -> str:
        """The person id the code binds to (the code is used up)."""
        answer = await self._client.post(
            "epix/$redeemEnrolment",
            _parameters({"name": "code", "valueString": code}, {"name": "account", "valueString": account}),
        )
        person: dict[str, Any] = next((p.get("valueIdentifier", {}) for p in _values(answer, "person")), {})
        if person.get("system") != PERSON_SYSTEM or not isinstance(person.get("value"), str):
            raise UpstreamError("trust centre", 502, "$redeemEnrolment answered no person id")
        return str(person["value"])

    async def policy_states(self, person_id: str) -> dict[str, str]:
        """Policy code (full OID) -> ACCEPTED, DECLINED or UNKNOWN today."""
        answer = await self._client.post(
            "gics/$policyStatesForPerson",
            _parameters(_person(person_id), {"name": "domain", "valueString": DOMAIN}),
        )
        states = {}
        for part in _values(answer, "policyState"):
            named = {p.get("name"): p for p in part.get("part", []) if isinstance(p, dict)}
            code = named.get("policy", {}).get("valueCoding", {}).get("code")
            state = named.get("state", {}).get("valueCode")
            if isinstance(code, str) and isinstance(state, str):
                states[code] = state
        return states

    async def consents(self, person_id: str) -> list[dict[str, Any]]:
        """Every Consent about the person, oldest first: the history of their decisions."""
        answer = await self._client.post(
            "gics/$consentsForPerson", _parameters(_person(person_id), {"name": "domain", "valueString": DOMAIN})
        )
        return resources(answer, "Consent")

    async def withdraw(self, person_id: str, code: str) -> tuple[str, str]:
        """Withdraw one policy from today on: the new consent's id and the day it counts from."""
        answer = await self._client.post(
            "gics/$withdrawConsent",
            _parameters(
                _person(person_id),
                {"name": "domain", "valueString": DOMAIN},
                {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": f"{POLICY_OID}.{code}"}},
            ),
        )
        consent = next((p.get("valueString") for p in _values(answer, "consentId")), "")
        since = next((p.get("valueDate") for p in _values(answer, "withdrawnFrom")), "")
        return str(consent), str(since)

    async def grant(self, person_id: str, code: str) -> tuple[str, str]:
        """Grant one policy from today on: the new consent's id and the day it counts from."""
        today = datetime.now(UTC)
        resource = grant_consent({"system": PERSON_SYSTEM, "value": person_id}, today, code)
        answer = await self._client.post(
            "gics/$addConsent",
            _parameters({"name": "domain", "valueString": DOMAIN}, {"name": "resource", "resource": resource}),
        )
        consent = next((p.get("valueString") for p in _values(answer, "consentId")), "")
        return str(consent), today.date().isoformat()

    async def is_consented(self, person_id: str, code: str, day: date | None = None) -> bool:
        """Whether the person consents to policy `code` (".5", ".8", ...) today; unknown counts as no."""
        answer = await self._client.post(
            "gics/$isConsented",
            _parameters(
                _person(person_id),
                {"name": "domain", "valueString": DOMAIN},
                {"name": "policy", "valueCoding": {"system": POLICY_SYSTEM, "code": f"{POLICY_OID}.{code}"}},
                {
                    "name": "config",
                    "part": [
                        {"name": "unknownStateIsConsideredAsDecline", "valueBoolean": True},
                        {"name": "requestDate", "valueDate": (day or datetime.now(UTC).date()).isoformat()},
                    ],
                },
            ),
        )
        return any(p.get("valueBoolean") is True for p in _values(answer, "consented"))

    async def ledger_tickets(self, person_id: str) -> list[dict[str, Any]]:
        """One ticket (a `ticket` parameter: site, ticket, expires) per other node that knows the person."""
        answer = await self._client.post("epix/$ledgerTickets", _parameters(_person(person_id, "person")))
        return [p for p in answer.get("parameter", []) if isinstance(p, dict) and p.get("name") == "ticket"]

    async def ledger(self, person_id: str) -> list[dict[str, Any]]:
        """The trust centre's AuditEvents naming the person (under any of their names)."""
        answer = await self._client.get("AuditEvent", {"patient": f"{PERSON_SYSTEM}|{person_id}"})
        return resources(answer, "AuditEvent")
