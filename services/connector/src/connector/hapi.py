"""The node's HAPI FHIR server as the connector sees it: a few typed calls over one HTTP client.

Everything the connector writes goes through `transaction` (HAPI applies a transaction atomically,
so an ingest is all-or-nothing); reads follow `next` links so callers get whole result sets. Failures
are `connector.upstream`'s two kinds: refused (4xx, with HAPI's OperationOutcome) or unavailable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

from connector.transform import relative_references
from connector.upstream import UpstreamUnavailable, checked, send
from servicekit.fhir import FHIR_JSON

SERVICE = "HAPI"
#: Pages followed at most in one search: a runaway `next` chain must not loop forever.
MAX_PAGES = 1000
#: How far `journey` follows references out of the patient compartment (Encounter -> PractitionerRole ->
#: Practitioner, Organization).
MAX_REFERENCE_DEPTH = 3


@dataclass(frozen=True)
class Read:
    """A read by id: the resource (None: HAPI has none there), and whether HAPI deleted one there."""

    resource: dict[str, Any] | None
    deleted: bool = False


class HapiClient:
    """Async calls to one HAPI FHIR base URL."""

    def __init__(
        self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 120.0
    ) -> None:
        """Talk to `base_url` (e.g. `http://fhir:8080/fhir`); `transport` lets tests stand in for HAPI."""
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url + "/", transport=transport, timeout=timeout, headers={"Accept": FHIR_JSON}
        )
        self._by_identifier: frozenset[str] | None = None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """POST a transaction (or batch) Bundle; the response Bundle."""
        response = await self._send("POST", "", json=bundle, headers={"Content-Type": FHIR_JSON})
        return checked(response, SERVICE)

    async def validate(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """`POST Bundle/$validate`: HAPI's OperationOutcome on a collection Bundle's resources and their profiles.

        The first call for a module's profiles builds their snapshots (seconds, up to ~20 s on a cold
        server); the client's timeout allows for it.
        """
        response = await self._send("POST", "Bundle/$validate", json=bundle, headers={"Content-Type": FHIR_JSON})
        return checked(response, SERVICE)

    async def searchable_by_identifier(self) -> frozenset[str]:
        """The resource types HAPI can search by `identifier`, as its CapabilityStatement says (asked once)."""
        if self._by_identifier is None:
            statement = checked(await self._send("GET", "metadata"), SERVICE)
            self._by_identifier = frozenset(
                str(resource.get("type"))
                for rest in statement.get("rest", [])
                for resource in rest.get("resource", [])
                if any(parameter.get("name") == "identifier" for parameter in resource.get("searchParam", []))
            )
        return self._by_identifier

    async def holds_nothing(self) -> bool:
        """Whether HAPI has never held a resource: its system history (deletions included) is empty."""
        history = checked(await self._send("GET", "_history", params={"_count": "1"}), SERVICE)
        return not history.get("entry")

    async def search(self, resource_type: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Every resource matching a search, all pages followed (included resources too)."""
        return await self._all_pages(resource_type, params)

    async def read(self, reference: str) -> Read:
        """What HAPI holds at `Type/id`: the resource, nothing (404), or nothing since a deletion (410)."""
        response = await self._send("GET", reference)
        if response.status_code in (HTTPStatus.NOT_FOUND, HTTPStatus.GONE):
            return Read(None, deleted=response.status_code == HTTPStatus.GONE)
        return Read(checked(response, SERVICE))

    async def lookup(self, resource_type: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """The few resources a search by identifier finds, searched synchronously and never stored.

        `Cache-Control: no-store` spares HAPI storing a search (and the connector waiting on its
        background loading) that nobody will page through: finding the patient a process names.
        """
        return await self._all_pages(resource_type, params, {"Cache-Control": "no-store"})

    async def everything(self, patient_id: str) -> list[dict[str, Any]]:
        """`Patient/<id>/$everything`, all pages followed."""
        return await self._all_pages(f"Patient/{patient_id}/$everything", {})

    async def journey(self, patient_id: str) -> list[dict[str, Any]]:
        """`$everything` plus whatever its resources reference, so the set stands alone at another node.

        HAPI's `$everything` leaves out resources outside the patient compartment that the journey
        names (an Encounter's PractitionerRole, a Procedure's Location); a receiver could not store
        references to them. They are read in batches, following references up to MAX_REFERENCE_DEPTH.
        """
        resources = await self.everything(patient_id)
        have = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources}
        for _ in range(MAX_REFERENCE_DEPTH):
            missing = sorted({ref for r in resources for ref in relative_references(r)} - have)
            if not missing:
                break
            fetched = await self.read_all(missing)
            have.update(missing)
            resources.extend(fetched)
        return resources

    async def read_all(self, references: Sequence[str]) -> list[dict[str, Any]]:
        """The resources `Type/id` in one batch; those HAPI does not have are left out."""
        batch = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"request": {"method": "GET", "url": reference}} for reference in references],
        }
        answer = await self.transaction(batch)
        return [
            e["resource"]
            for e in answer.get("entry", [])
            if isinstance(e.get("resource"), dict) and e["resource"].get("resourceType") != "OperationOutcome"
        ]

    async def count(self, resource_type: str, params: Mapping[str, str]) -> int:
        """How many resources match a search (`_summary=count`)."""
        response = await self._send("GET", resource_type, params={**params, "_summary": "count"})
        total = checked(response, SERVICE).get("total")
        if not isinstance(total, int):
            raise UpstreamUnavailable(f"HAPI's count of {resource_type} carried no total")
        return total

    async def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> httpx.Response:
        """A raw GET below the base (for the read proxy): HAPI's answer, unless it failed (5xx).

        `params` as pairs, so a parameter given twice (a date range) reaches HAPI twice.
        """
        response = await self._send("GET", path, params=list(params))
        if response.status_code >= 500:
            raise UpstreamUnavailable(f"HAPI answered {response.status_code} to GET {path}")
        return response

    async def pages(
        self, path: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """A search's resources page by page (included ones too): a caller folding them holds one page at a time."""
        bundle = checked(await self._send("GET", path, params=params, headers=headers), SERVICE)
        for _ in range(MAX_PAGES):
            entries = bundle.get("entry", [])
            yield [e["resource"] for e in entries if isinstance(e.get("resource"), dict)]
            following = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None)
            if not isinstance(following, str):
                return
            bundle = checked(await self._send("GET", following, headers=headers), SERVICE)
        raise UpstreamUnavailable(f"HAPI's search {path} did not end after {MAX_PAGES} pages")

    async def _all_pages(
        self, path: str, params: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        return [resource async for page in self.pages(path, params, headers) for resource in page]

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:  # noqa: ANN401 -- httpx options
        return await send(self._client, SERVICE, method, url, **kwargs)
