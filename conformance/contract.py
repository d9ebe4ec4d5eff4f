"""The published contract as the suite reads it (docs/federation.md): the names that travel on the wire.

The suite keeps its own copy of these names instead of importing the services' constants: a certifier
judges a node by the contract, not by our implementation of it, and a shared helper's bug must not be
certified as conformant. `tests/unit/conformance/test_contract.py` holds every name here against
docs/federation.md and against the services, so a name renamed on either side is caught.
"""

from __future__ import annotations

from enum import StrEnum

PROCESS_BASE = "https://hubnode.org/fhir/process/"
PROCESS_VERSION = "1.0"
INPUT_SYSTEM = "https://hubnode.org/fhir/CodeSystem/process-input"
OUTPUT_SYSTEM = "https://hubnode.org/fhir/CodeSystem/process-output"
IDEMPOTENCY_SYSTEM = "https://hubnode.org/fhir/sid/idempotency-key"
ORGANIZATION_SYSTEM = "http://dsf.dev/sid/organization-identifier"
#: Identifier systems of research pseudonyms: this base plus the project's pseudonym domain.
PSEUDONYM_SYSTEM_BASE = "https://hubnode.org/fhir/sid/pseudonym/"
#: The content type of a Bundle carried in a Task input (`bundle`, valueAttachment).
BUNDLE_CONTENT_TYPE = "application/fhir+json"
FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
#: The consent domain processes check (gICS `domain`).
CONSENT_DOMAIN = "MII"
#: Headers the gateway sets towards the services behind it, always overwriting what a client sent.
IDENTITY_HEADERS = (
    "X-Hubnode-Gateway-Secret",
    "X-Hubnode-Client-Verify",
    "X-Hubnode-Client-Cert",
    "X-Hubnode-Client-Subject",
)


class Process(StrEnum):
    """The processes nodes run with each other (docs/federation.md, "Public API")."""

    PING = "ping"
    CARE_SUMMARY = "careSummary"
    FEASIBILITY = "feasibility"
    DATA_SEND = "dataSend"

    @property
    def canonical(self) -> str:
        """`Task.instantiatesCanonical` of this process."""
        return f"{PROCESS_BASE}{self.value}|{PROCESS_VERSION}"


#: The MII policy (suffix of the policy OID) a process needs before anything about a patient may cross.
PROCESS_CONSENT = {Process.CARE_SUMMARY: "5", Process.DATA_SEND: "8"}
