"""Signing in through the node's Keycloak: OpenID Connect authorization code with PKCE (S256).

The portal is a confidential client (a backend for the browser): the browser sees the identity
provider's login page and the authorization code, never a token. State, nonce and the PKCE verifier
wait in the server-side session; the callback accepts a code only with the state it was sent with,
and an ID token only with that nonce, signed by a key the realm publishes, for this client, from the
public issuer, not expired. Bearer tokens at the portal's FHIR API are checked the same way.

Discovery, keys and the token endpoint are fetched over the back channel inside the node; the issuer
the tokens name (and the discovery document states) is the public one.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from portal.settings import Settings

#: What the portal asks for: who the user is, their roles, and the SMART claims its pages need.
SCOPE = "openid profile fhirUser launch/patient"
#: Seconds a login may take from the portal's redirect to the callback.
LOGIN_WINDOW_S = 600
#: Clock difference tolerated between the portal and Keycloak.
LEEWAY_S = 30
#: Keys are fetched again at most this often when a token names a key not seen yet.
KEYS_REFRESH_S = 30
ALGORITHMS = ("RS256",)


class TokenRejectedError(Exception):
    """A token (or a callback) that must not be believed; the message says why, for the audit."""


@dataclass(frozen=True)
class Endpoints:
    """The realm's endpoints: where browsers go (public), where the portal calls (back channel)."""

    authorization: str
    token: str
    jwks: str
    end_session: str


@dataclass(frozen=True)
class SignIn:
    """What a finished sign-in tells about the user, from the ID token's verified claims."""

    subject: str
    username: str
    name: str
    roles: tuple[str, ...]
    #: The `patient` claim: the id this node knows the enrolled person by (empty: not enrolled).
    patient: str
    id_token: str


class Oidc:
    """The portal's OpenID Connect client against one realm."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._client = httpx.AsyncClient(timeout=30, transport=transport)
        self._endpoints: Endpoints | None = None
        self._keys: KeySet | None = None
        self._keys_fetched = 0.0
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    @property
    def redirect_uri(self) -> str:
        """The callback Keycloak sends the browser back to (registered in the realm)."""
        return f"{self._settings.public_url}/auth/callback"

    async def endpoints(self) -> Endpoints:
        """The realm's endpoints from its discovery document (fetched once), whose issuer must be ours."""
        if self._endpoints is None:
            url = f"{self._settings.idp_url}/.well-known/openid-configuration"
            found = await self._json("GET", url)
            if found.get("issuer") != self._settings.issuer:
                raise TokenRejectedError(
                    f"the realm's issuer is {found.get('issuer')!r}, not {self._settings.issuer!r}"
                )
            self._endpoints = Endpoints(
                authorization=str(found["authorization_endpoint"]),
                token=str(found["token_endpoint"]),
                jwks=str(found["jwks_uri"]),
                end_session=str(found["end_session_endpoint"]),
            )
        return self._endpoints

    async def login(self) -> tuple[str, dict[str, Any]]:
        """The identity provider's URL to send the browser to, and what the callback must find again."""
        endpoints = await self.endpoints()
        pending = {
            "state": secrets.token_urlsafe(32),
            "nonce": secrets.token_urlsafe(32),
            "verifier": secrets.token_urlsafe(64),
            "started": int(time.time()),
        }
        url = prepare_grant_uri(
            endpoints.authorization,
            self._settings.client_id,
            "code",
            redirect_uri=self.redirect_uri,
            scope=SCOPE,
            state=pending["state"],
            nonce=pending["nonce"],
            code_challenge=create_s256_code_challenge(pending["verifier"]),
            code_challenge_method="S256",
        )
        return url, pending

    async def finish(self, pending: Mapping[str, Any] | None, state: str | None, code: str | None) -> SignIn:
        """Exchange the callback's code (state checked first) and verify the ID token it brings."""
        if not pending or not isinstance(pending.get("state"), str):
            raise TokenRejectedError("a callback without a sign-in started in this browser")
        if not state or not secrets.compare_digest(str(pending["state"]), state):
            raise TokenRejectedError("the callback's state is not the one this sign-in was sent with")
        if time.time() - float(pending.get("started", 0)) > LOGIN_WINDOW_S:
            raise TokenRejectedError("the sign-in took too long; start it again")
        if not code:
            raise TokenRejectedError("the callback carries no authorization code")
        endpoints = await self.endpoints()
        answer = await self._json(
            "POST",
            endpoints.token,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self.redirect_uri,
                "code_verifier": str(pending["verifier"]),
            },
            auth=(self._settings.client_id, self._settings.client_secret),
        )
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise TokenRejectedError("the token answer carries no ID token")
        claims = await self.verify(id_token, audience=self._settings.client_id)
        if not secrets.compare_digest(str(claims.get("nonce", "")), str(pending["nonce"])):
            raise TokenRejectedError("the ID token's nonce is not the one this sign-in was sent with")
        access = answer.get("access_token")
        roles = roles_of(await self.verify(access)) if isinstance(access, str) else ()
        return SignIn(
            subject=str(claims["sub"]),
            username=str(claims.get("preferred_username", "")),
            name=str(claims.get("name", "")),
            roles=roles,
            patient=str(claims.get("patient", "")),
            id_token=id_token,
        )

    async def verify(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        """The claims of a token signed by the realm, from our issuer, unexpired (and for `audience`, if given).

        An access token must have been issued to the portal's client (`azp`), so a token another client
        of the realm obtained is refused here.
        """
        try:
            header = jws.extract_compact(token.encode()).headers()
        except (JoseError, ValueError) as exc:
            raise TokenRejectedError(f"not a signed token: {exc}") from None
        keys = await self._key_set(str(header.get("kid", "")))
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
            registry = jwt.JWTClaimsRegistry(
                leeway=LEEWAY_S,
                iss={"essential": True, "value": self._settings.issuer},
                exp={"essential": True},
                sub={"essential": True},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise TokenRejectedError(f"token refused: {exc}") from None
        claims = dict(decoded.claims)
        if audience is not None and audience not in _audiences(claims):
            raise TokenRejectedError(f"the token is not for {audience!r}")
        if audience is None and claims.get("azp") != self._settings.client_id:
            raise TokenRejectedError(f"the token was issued to {claims.get('azp')!r}, not to the portal")
        return claims

    async def logout_url(self, id_token: str | None) -> str:
        """Keycloak's end-session URL: ends the single sign-on session, then back to the portal's start page."""
        endpoints = await self.endpoints()
        parameters = {
            "post_logout_redirect_uri": f"{self._settings.public_url}/",
            "client_id": self._settings.client_id,
        }
        if id_token:
            parameters["id_token_hint"] = id_token
        return str(httpx.URL(endpoints.end_session, params=parameters))

    async def _key_set(self, kid: str) -> KeySet:
        async with self._lock:
            stale = time.monotonic() - self._keys_fetched > KEYS_REFRESH_S
            known = self._keys is not None and any(key.kid == kid for key in self._keys.keys)
            if self._keys is None or (not known and stale):
                endpoints = await self.endpoints()
                self._keys = KeySet.import_key_set(await self._json("GET", endpoints.jwks))  # type: ignore[arg-type]
                self._keys_fetched = time.monotonic()
            return self._keys

    async def _json(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:  # noqa: ANN401 -- httpx's options
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise TokenRejectedError(f"the identity provider cannot be reached: {exc}") from None
        if response.status_code != 200:
            raise TokenRejectedError(f"the identity provider answered {response.status_code}: {response.text[:200]}")
        answer = response.json()
        if not isinstance(answer, dict):
            raise TokenRejectedError("the identity provider's answer is not a JSON object")
        return answer


def roles_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The realm roles a token's claims carry."""
    access = claims.get("realm_access")
    roles = access.get("roles", []) if isinstance(access, dict) else []
    return tuple(sorted(str(role) for role in roles if isinstance(role, str)))


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    audience = claims.get("aud")
    return [audience] if isinstance(audience, str) else [str(a) for a in audience] if isinstance(audience, list) else []
