"""Calling the node's services: one small JSON client, and the one error every page turns into a clear refusal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"


class UpstreamError(Exception):
    """A service of the node refused or could not be reached; `status` is what the portal answers with."""

    def __init__(self, service: str, status: int, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.message = message


class FhirClient:
    """Bearer-authenticated FHIR JSON calls to one service base URL."""

    def __init__(
        self,
        service: str,
        base_url: str,
        token: str,
        *,
        verify: str | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.service = service
        headers = {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}
        self._base = base_url.rstrip("/")
        self._client = httpx.AsyncClient(headers=headers, verify=verify, transport=transport, timeout=120)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def get(
        self, path: str, params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """GET a resource or search (`headers`: e.g. the purpose of an emergency read)."""
        return await self._send("GET", path, params=params, headers=headers or {})

    async def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a FHIR JSON body."""
        return await self._send("POST", path, json=body, headers={"Content-Type": FHIR_JSON})

    async def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401 -- httpx's options
        try:
            url = f"{self._base}/{path}" if path else self._base
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise UpstreamError(self.service, 503, f"not reachable ({type(exc).__name__})") from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code >= 400:
            raise UpstreamError(self.service, _status(response.status_code), _diagnostics(answer, response))
        if not isinstance(answer, dict):
            raise UpstreamError(self.service, 502, "answered something that is not a FHIR resource")
        return answer


def _status(upstream: int) -> int:
    """What the portal answers when a service refused: its refusal as is, its own failure as 502."""
    return upstream if upstream < 500 else 503 if upstream == 503 else 502


def _diagnostics(answer: object, response: httpx.Response) -> str:
    if isinstance(answer, dict):
        issues = answer.get("issue")
        if isinstance(issues, list) and issues and isinstance(issues[0], dict):
            return str(issues[0].get("diagnostics", ""))[:300]
    return f"HTTP {response.status_code}"


def resources(bundle: Mapping[str, Any], resource_type: str | None = None) -> list[dict[str, Any]]:
    """The resources of a searchset Bundle (of one type, if given)."""
    found = []
    for entry in bundle.get("entry", []) if isinstance(bundle.get("entry"), list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and (resource_type is None or resource.get("resourceType") == resource_type):
            found.append(resource)
    return found
