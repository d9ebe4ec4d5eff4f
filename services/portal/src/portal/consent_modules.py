"""The MII broad consent's policies as patients read them, and what withdrawing each stops on this federation.

Pure. Labels are plain language in German and English; `blocks` names the processes of
docs/federation.md ("Processes and consent") that ask the trust centre for that policy, so a
withdrawal can say at once what it now prevents. Policies no process asks for block nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

POLICY_SYSTEM = "urn:oid:2.16.840.1.113883.3.1937.777.24.5.3"
POLICY_OID = POLICY_SYSTEM.removeprefix("urn:oid:")
PROFILE = (
    "https://www.medizininformatik-initiative.de/fhir/modul-consent/StructureDefinition/mii-pr-consent-einwilligung"
)
BROAD_CONSENT_POLICY = "urn:oid:2.16.840.1.113883.3.1937.777.24.2.1791"
MII_CATEGORY_SYSTEM = (
    "https://www.medizininformatik-initiative.de/fhir/modul-consent/CodeSystem/mii-cs-consent-version-modules"
)
#: A consent given in the portal runs this long (the MII template's usual term), unless withdrawn.
TERM = timedelta(days=30 * 365)


@dataclass(frozen=True)
class Policy:
    """One policy of the broad consent: its code (".8"), what it allows, and which processes need it."""

    code: str
    de: str
    en: str
    blocks: tuple[str, ...] = ()

    @property
    def oid(self) -> str:
        """The policy's full code, as the trust centre names it."""
        return f"{POLICY_OID}.{self.code}"


#: Processes by their names in docs/federation.md, as patients read them.
PROCESSES = {
    "careSummary": {
        "de": "Weitergabe Ihrer Behandlungsdaten an eine andere behandelnde Einrichtung (careSummary)",
        "en": "Sending your treatment data to another site that treats you (careSummary)",
    },
    "dataSend": {
        "de": "Pseudonymisierte Auszüge für Forschungsprojekte (dataSend)",
        "en": "Pseudonymised extracts for research projects (dataSend)",
    },
    "portal-clinicians": {
        "de": "Einsicht Ihrer Ärztinnen und Ärzte im Portal",
        "en": "Your clinicians' view in the portal",
    },
}

POLICIES: tuple[Policy, ...] = (
    Policy("2", "Identitätsdaten erheben", "Collect identifying data"),
    Policy("3", "Identitätsdaten speichern und verarbeiten", "Store and process identifying data"),
    Policy("4", "Identitätsdaten mit Dritten zusammenführen", "Link identifying data with third parties"),
    Policy(
        "5",
        "Identitätsdaten für die Behandlung bereitstellen",
        "Make identifying data available for your treatment",
        ("careSummary", "portal-clinicians"),
    ),
    Policy("6", "Medizinische Daten erheben", "Collect medical data"),
    Policy("7", "Medizinische Daten speichern und verarbeiten", "Store and process medical data"),
    Policy("8", "Medizinische Daten wissenschaftlich nutzen", "Use medical data for research", ("dataSend",)),
    Policy("9", "Medizinische Daten mit Dritten zusammenführen", "Link medical data with third parties"),
    Policy("37", "Erneut kontaktiert werden (Rekontaktierung)", "Be contacted again (recontact)"),
)
BY_CODE = {policy.code: policy for policy in POLICIES}
#: The policy a clinician's view of a patient needs: the treatment consent (IDAT bereitstellen).
TREATMENT = "5"


def policy(code: str) -> Policy | None:
    """The policy a code names (".8", "8" or the full OID), None if it is not one of the broad consent's."""
    return BY_CODE.get(code.removeprefix(f"{POLICY_OID}.").lstrip("."))


def grant_consent(person: dict[str, str], now: datetime, code: str) -> dict[str, Any]:
    """An MII consent of `person` (an Identifier) permitting one policy from today on, dated `now`."""
    start, end = now.date().isoformat(), (now + TERM).date().isoformat()
    return {
        "resourceType": "Consent",
        "meta": {"profile": [PROFILE]},
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "research"}]},
        "category": [
            {"coding": [{"system": "http://loinc.org", "code": "57016-8"}]},
            {"coding": [{"system": MII_CATEGORY_SYSTEM, "code": "2.16.840.1.113883.3.1937.777.24.2.184"}]},
        ],
        "patient": {"identifier": person},
        "dateTime": now.isoformat(timespec="seconds"),
        "policy": [{"uri": BROAD_CONSENT_POLICY}],
        "provision": {
            "type": "deny",
            "period": {"start": start, "end": end},
            "provision": [
                {
                    "type": "permit",
                    "period": {"start": start, "end": end},
                    "code": [{"coding": [{"system": POLICY_SYSTEM, "code": f"{POLICY_OID}.{code}"}]}],
                }
            ],
        },
    }
