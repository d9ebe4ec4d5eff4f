"""The federation's allow list: a FHIR R4 `Bundle` of one `Organization` and one `Endpoint` per node.

Pure. Shape as docs/federation.md, "PKI and allow list" (DSF identifier systems, so a DSF-style
node reads it too). The output depends on nothing but its inputs: ids are name-based UUIDs, entries
are sorted by site and the JSON keys too, so the same nodes give the same bytes and a re-run does
not look like a change to a node (or to `pulumi up`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ORGANIZATION_IDENTIFIER = "http://dsf.dev/sid/organization-identifier"
ENDPOINT_IDENTIFIER = "http://dsf.dev/sid/endpoint-identifier"
THUMBPRINT_EXTENSION = "http://dsf.dev/fhir/StructureDefinition/extension-certificate-thumbprint"
NODE_ROLE_SYSTEM = "https://hubnode.org/fhir/CodeSystem/node-role"
#: Namespace of the name-based UUIDs that make ids stable across runs and hosts.
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://hubnode.org/fhir/allow-list")


@dataclass(frozen=True)
class AllowedNode:
    """One node the federation's nodes accept: who it is, where its peer door is, its certificate."""

    site: str
    role: str
    host: str
    peer_port: int
    thumbprint: str

    @property
    def address(self) -> str:
        """The base of the node's FHIR API for peers."""
        return f"https://{self.host}:{self.peer_port}/fhir"


def allow_list(nodes: Iterable[AllowedNode]) -> dict[str, Any]:
    """The allow-list Bundle (type `collection`) as plain JSON data, nodes in site order."""
    entries: list[dict[str, Any]] = []
    for node in sorted(nodes, key=lambda n: n.site):
        organization, endpoint = _id("Organization", node.site), _id("Endpoint", node.site)
        entries += [
            {
                "fullUrl": f"urn:uuid:{organization}",
                "resource": {
                    "resourceType": "Organization",
                    "id": organization,
                    "extension": [{"url": THUMBPRINT_EXTENSION, "valueString": node.thumbprint}],
                    "identifier": [{"system": ORGANIZATION_IDENTIFIER, "value": node.site}],
                    "active": True,
                    "type": [{"coding": [{"system": NODE_ROLE_SYSTEM, "code": node.role}]}],
                    "name": node.site,
                    "endpoint": [{"reference": f"urn:uuid:{endpoint}"}],
                },
            },
            {
                "fullUrl": f"urn:uuid:{endpoint}",
                "resource": {
                    "resourceType": "Endpoint",
                    "id": endpoint,
                    "identifier": [{"system": ENDPOINT_IDENTIFIER, "value": node.host}],
                    "status": "active",
                    "connectionType": {
                        "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                        "code": "hl7-fhir-rest",
                    },
                    "managingOrganization": {"reference": f"urn:uuid:{organization}"},
                    "payloadType": [{"coding": [{"system": "http://hl7.org/fhir/resource-types", "code": "Task"}]}],
                    "address": node.address,
                },
            },
        ]
    return {"resourceType": "Bundle", "id": _id("Bundle", "allow-list"), "type": "collection", "entry": entries}


def allow_list_json(nodes: Iterable[AllowedNode]) -> str:
    """The allow list as the file every node reads (`/run/hubnode/allow-list.json`): stable bytes."""
    return json.dumps(allow_list(nodes), indent=2, sort_keys=True) + "\n"


def _id(resource_type: str, name: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{resource_type}/{name}"))
