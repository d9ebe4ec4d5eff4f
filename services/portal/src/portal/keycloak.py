"""The portal's service account at Keycloak: after an enrolment, the login's `patient_id` attribute is set.

Only administrators (and this account, with `manage-users`) may set the attributes behind the SMART
`patient` and `fhirUser` claims (infra/idp_realm.py), so a user can never make themself someone
else's patient. Its token comes from the client-credentials grant, over the node's back channel.
"""

from __future__ import annotations

from typing import Any

import httpx

from portal.upstream import UpstreamError

PATIENT_ATTRIBUTE = "patient_id"
FHIR_USER_ATTRIBUTE = "fhir_user"


class KeycloakAdmin:
    """Sets user attributes in the node's realm through Keycloak's admin REST API."""

    def __init__(
        self, realm_url: str, client_id: str, secret: str, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        """`realm_url` is the realm's back-channel base (`http://idp:8180/idp/realms/hubnode`)."""
        self._realm_url = realm_url
        self._admin_url = realm_url.replace("/realms/", "/admin/realms/", 1)
        self._credentials = (client_id, secret)
        self._client = httpx.AsyncClient(timeout=30, transport=transport)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def bind_patient(self, user_id: str, person_id: str) -> None:
        """Make the login `user_id` the patient the node knows as `person_id` (its next token says so)."""
        token = await self._token()
        headers = {"Authorization": f"Bearer {token}"}
        url = f"{self._admin_url}/users/{user_id}"
        user = await self._call("GET", url, headers=headers)
        attributes = dict(user.get("attributes") or {})
        attributes[PATIENT_ATTRIBUTE] = [person_id]
        attributes[FHIR_USER_ATTRIBUTE] = [f"Patient/{person_id}"]
        await self._call("PUT", url, headers=headers, json={**user, "attributes": attributes})

    async def _token(self) -> str:
        answer = await self._call(
            "POST",
            f"{self._realm_url}/protocol/openid-connect/token",
            data={"grant_type": "client_credentials"},
            auth=self._credentials,
        )
        token = answer.get("access_token")
        if not isinstance(token, str):
            raise UpstreamError("identity provider", 502, "the service account got no token")
        return token

    async def _call(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401 -- httpx's options
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise UpstreamError("identity provider", 503, f"not reachable ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise UpstreamError("identity provider", 502, f"{method} answered {response.status_code}")
        if not response.content:
            return {}
        answer = response.json()
        return answer if isinstance(answer, dict) else {}
