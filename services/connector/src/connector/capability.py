"""The connector's CapabilityStatement (`GET /fhir/metadata`): what a FHIR client may do at this node's door.

Served by the connector itself, not proxied from HAPI, since the door allows less than HAPI does:
transactions and batches (ingest), reads and searches, `$import` of NDJSON, process Tasks and the
audit trail, each behind a bearer token (docs/federation.md, "Public API").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connector.tasks import Process

SEARCHABLE = ("Patient", "Encounter", "Condition", "Procedure", "Observation", "MedicationStatement", "Consent")


def capability_statement(site: str) -> dict[str, Any]:
    """The CapabilityStatement of the node `site`."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "kind": "instance",
        "software": {"name": "hubnode connector"},
        "implementation": {"description": f"hubnode node {site}"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "instantiates": [process.canonical for process in Process],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [{"text": "OAuth-style bearer token"}],
                    "description": "Authorization: Bearer <token>; peers use mutual TLS at the peer door",
                },
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
                "operation": [
                    {"name": "import", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/import"}
                ],
                "resource": [
                    *(
                        {"type": kind, "interaction": [{"code": "read"}, {"code": "search-type"}]}
                        for kind in SEARCHABLE
                    ),
                    {"type": "Task", "interaction": [{"code": "create"}, {"code": "read"}]},
                    {"type": "AuditEvent", "interaction": [{"code": "search-type"}]},
                ],
            }
        ],
    }
