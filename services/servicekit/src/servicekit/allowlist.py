"""The federation's allow list: which organisations exist, where they answer, which certificate is theirs.

Every node gets the same FHIR `Bundle` of `Organization` + `Endpoint` (docs/federation.md, "PKI and
allow list"). It is parsed once at start-up into typed entries; a malformed entry stops the service
with a message naming it, rather than silently trusting or refusing a peer. The connector and the
trust centre read the same list the same way (`servicekit.identity` resolves a caller by it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

THUMBPRINT_EXTENSION = "http://dsf.dev/fhir/StructureDefinition/extension-certificate-thumbprint"
ROLE_SYSTEM = "https://hubnode.org/fhir/CodeSystem/node-role"
ORGANIZATION_SYSTEM = "http://dsf.dev/sid/organization-identifier"
ENDPOINT_SYSTEM = "http://dsf.dev/sid/endpoint-identifier"
_THUMBPRINT = re.compile(r"[0-9a-f]{128}")


class NodeRole(StrEnum):
    """A node's role in the federation (DSF organisation roles)."""

    DIC = "dic"
    PRACTICE = "practice"
    RESEARCH = "research"
    TTP = "ttp"


class AllowListError(ValueError):
    """The allow list cannot be used; the message names the entry at fault."""


@dataclass(frozen=True)
class Peer:
    """One organisation of the federation as the allow list declares it."""

    site: str
    role: NodeRole
    thumbprint: str
    address: str
    host: str


@dataclass(frozen=True)
class AllowList:
    """Every organisation of the federation, looked up by certificate thumbprint or by site."""

    peers: tuple[Peer, ...]

    def by_thumbprint(self, thumbprint: str) -> Peer | None:
        """The organisation whose certificate has this SHA-512 thumbprint (lowercase hex)."""
        return next((peer for peer in self.peers if peer.thumbprint == thumbprint.lower()), None)

    def by_site(self, site: str) -> Peer | None:
        """The organisation of `site`."""
        return next((peer for peer in self.peers if peer.site == site), None)


def parse_allow_list(bundle: Any) -> AllowList:  # noqa: ANN401 -- decoded JSON, checked here
    """The allow list from its Bundle; AllowListError naming the entry at fault otherwise."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise AllowListError("the allow list must be a FHIR Bundle")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise AllowListError("Bundle.entry must be a list")
    organizations: list[tuple[str, dict[str, Any]]] = []
    endpoints: dict[str, tuple[str, dict[str, Any]]] = {}
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(resource, dict) or kind not in ("Organization", "Endpoint"):
            raise AllowListError(f"{where}: expected an Organization or Endpoint resource")
        if kind == "Organization":
            organizations.append((where, resource))
            continue
        full_url = entry.get("fullUrl")
        for key in (full_url, f"Endpoint/{resource.get('id')}"):
            if isinstance(key, str):
                endpoints[key] = (where, resource)
    peers = tuple(_peer(where, organization, endpoints) for where, organization in organizations)
    for attribute in ("site", "thumbprint"):
        values = [getattr(peer, attribute) for peer in peers]
        duplicated = sorted({value for value in values if values.count(value) > 1})
        if duplicated:
            raise AllowListError(f"the allow list names the same {attribute} twice: {', '.join(duplicated)}")
    return AllowList(peers)


def _peer(where: str, organization: dict[str, Any], endpoints: Mapping[str, tuple[str, dict[str, Any]]]) -> Peer:
    site = _identifier(organization, ORGANIZATION_SYSTEM, where)
    where = f"{where} (Organization {site!r})"
    roles = [
        coding.get("code")
        for concept in _list(organization, "type", where)
        for coding in (concept.get("coding", []) if isinstance(concept, dict) else [])
        if isinstance(coding, dict) and coding.get("system") == ROLE_SYSTEM
    ]
    known = {role.value: role for role in NodeRole}
    if len(roles) != 1 or roles[0] not in known:
        raise AllowListError(f"{where}: needs exactly one type of {ROLE_SYSTEM}, one of {', '.join(known)}")
    thumbprints = [
        extension.get("valueString")
        for extension in _list(organization, "extension", where)
        if isinstance(extension, dict) and extension.get("url") == THUMBPRINT_EXTENSION
    ]
    if len(thumbprints) != 1 or not isinstance(thumbprints[0], str) or not _THUMBPRINT.fullmatch(thumbprints[0]):
        raise AllowListError(f"{where}: needs one {THUMBPRINT_EXTENSION} with 128 lowercase hex digits (SHA-512)")
    references = [r.get("reference") for r in _list(organization, "endpoint", where) if isinstance(r, dict)]
    found = [endpoints[r] for r in references if isinstance(r, str) and r in endpoints]
    if len(found) != 1:
        raise AllowListError(f"{where}: Organization.endpoint must reference exactly one Endpoint of the Bundle")
    endpoint_where, endpoint = found[0]
    address = endpoint.get("address")
    if not isinstance(address, str) or not address.startswith("https://"):
        raise AllowListError(f"{endpoint_where} (Endpoint of {site!r}): address must be an https:// URL")
    host = _identifier(endpoint, ENDPOINT_SYSTEM, f"{endpoint_where} (Endpoint of {site!r})")
    return Peer(site, known[roles[0]], thumbprints[0], address.rstrip("/"), host)


def _list(resource: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = resource.get(key, [])
    if not isinstance(value, list):
        raise AllowListError(f"{where}: {key} must be a list")
    return value


def _identifier(resource: Mapping[str, Any], system: str, where: str) -> str:
    values = [
        identifier.get("value")
        for identifier in _list(resource, "identifier", where)
        if isinstance(identifier, dict) and identifier.get("system") == system
    ]
    if len(values) != 1 or not isinstance(values[0], str) or not values[0]:
        raise AllowListError(f"{where}: needs exactly one identifier of {system}")
    value: str = values[0]
    return value
