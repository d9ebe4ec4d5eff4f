"""A stand-in for the node's Keycloak in the fast tier: discovery, keys, authorization code with PKCE, admin users.

Only what the portal uses, with Keycloak's paths and claim shapes (realm roles in `realm_access`, the
SMART `patient` claim); signing keys are real RS256 keys made per test run. The integration tier runs
the portal against the real Keycloak.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import urlencode

from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

REALM = "/idp/realms/hubnode"
PUBLIC = "https://idp.test"
BACK_CHANNEL = "http://idp.internal"
ISSUER = f"{PUBLIC}{REALM}"
CLIENT_ID, CLIENT_SECRET = "portal", "portal-secret"
SERVICE_ID, SERVICE_SECRET = "portal-service", "service-secret"


@cache
def signing_key() -> RSAKey:
    """One RS256 key for the test run: making a 2048-bit key costs more than most tests."""
    return RSAKey.generate_key(2048, parameters={"kid": "test-key"})


@dataclass
class Account:
    subject: str
    username: str
    roles: tuple[str, ...]
    attributes: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class StandInIdp:
    """The realm: its accounts, its key, the codes it handed out."""

    accounts: dict[str, Account] = field(default_factory=dict)
    key: RSAKey = field(default_factory=signing_key)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, username: str, *roles: str, patient: str = "") -> Account:
        account = Account(secrets.token_hex(8), username, roles)
        if patient:
            account.attributes["patient_id"] = [patient]
        self.accounts[username] = account
        return account

    def token(self, username: str, *, lifetime: int = 300, azp: str = CLIENT_ID, **extra: Any) -> str:
        """An access token for `username` as Keycloak issues one to the portal client."""
        account = self.accounts[username]
        claims = self._claims(account, lifetime) | {"azp": azp, "typ": "Bearer"} | extra
        return jwt.encode({"alg": "RS256", "kid": self.key.kid}, claims, self.key)

    def _claims(self, account: Account, lifetime: int) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": account.subject,
            "iat": now,
            "exp": now + lifetime,
            "preferred_username": account.username,
            "name": account.username.title(),
            "realm_access": {"roles": list(account.roles)},
        }
        patient = account.attributes.get("patient_id")
        if patient:
            claims["patient"] = patient[0]
        return claims

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(f"{REALM}/.well-known/openid-configuration", self._discovery),
                Route(f"{REALM}/protocol/openid-connect/auth", self._authorize),
                Route(f"{REALM}/protocol/openid-connect/token", self._token, methods=["POST"]),
                Route(f"{REALM}/protocol/openid-connect/certs", self._certs),
                Route("/idp/admin/realms/hubnode/users/{id}", self._user, methods=["GET", "PUT"]),
            ]
        )

    async def _discovery(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "issuer": ISSUER,
                "authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth",
                "token_endpoint": f"{BACK_CHANNEL}{REALM}/protocol/openid-connect/token",
                "jwks_uri": f"{BACK_CHANNEL}{REALM}/protocol/openid-connect/certs",
                "end_session_endpoint": f"{ISSUER}/protocol/openid-connect/logout",
            }
        )

    async def _certs(self, _request: Request) -> Response:
        return JSONResponse({"keys": [self.key.as_dict(private=False)]})

    async def _authorize(self, request: Request) -> Response:
        """Where the browser signs in; the test names the account in `username` (no password form here)."""
        params = request.query_params
        if params.get("client_id") != CLIENT_ID or params.get("code_challenge_method") != "S256":
            return JSONResponse({"error": "invalid_request"}, 400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "account": self.accounts[params["username"]],
            "challenge": params["code_challenge"],
            "nonce": params["nonce"],
            "redirect_uri": params["redirect_uri"],
        }
        query = urlencode({"code": code, "state": params["state"]})
        return RedirectResponse(f"{params['redirect_uri']}?{query}", 302)

    async def _token(self, request: Request) -> Response:
        form = await request.form()
        client = base64.b64decode(request.headers.get("authorization", "Basic ").split()[1] or b"").decode()
        if form.get("grant_type") == "client_credentials":
            if client != f"{SERVICE_ID}:{SERVICE_SECRET}":
                return JSONResponse({"error": "unauthorized_client"}, 401)
            return JSONResponse({"access_token": "service-token", "token_type": "Bearer"})
        if client != f"{CLIENT_ID}:{CLIENT_SECRET}":
            return JSONResponse({"error": "unauthorized_client"}, 401)
        issued = self.codes.pop(str(form.get("code")), None)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if issued is None or issued["challenge"] != challenge or issued["redirect_uri"] != form.get("redirect_uri"):
            return JSONResponse({"error": "invalid_grant"}, 400)
        account: Account = issued["account"]
        id_claims = self._claims(account, 300) | {"aud": CLIENT_ID, "azp": CLIENT_ID, "nonce": issued["nonce"]}
        id_token = jwt.encode({"alg": "RS256", "kid": self.key.kid}, id_claims, self.key)
        return JSONResponse(
            {"access_token": self.token(account.username), "id_token": id_token, "token_type": "Bearer"}
        )

    async def _user(self, request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer service-token":
            return JSONResponse({"error": "unauthorized"}, 401)
        account = next((a for a in self.accounts.values() if a.subject == request.path_params["id"]), None)
        if account is None:
            return JSONResponse({"error": "not found"}, 404)
        if request.method == "PUT":
            account.attributes = dict((await request.json())["attributes"])
            return Response(status_code=204)
        return JSONResponse({"id": account.subject, "username": account.username, "attributes": account.attributes})
