"""Credentials that are logins rather than tokens: the suite signs in where a node's users do (OAuth 2.0).

A targets file may name, per node, a `logins` entry: an OAuth 2.0 token endpoint, a client, and a
user whose password lies in a file (RFC 6749 section 4.3, the resource owner password grant, which a
local stack's identity provider allows for scripts and tests). The suite asks for a token when a step
first needs the credential and again shortly before it expires; nothing of the node's software is
imported, only the standard is followed.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

#: Ask again when a token has less than this many seconds left.
RENEW_BEFORE_S = 30


class LoginFailedError(Exception):
    """The token endpoint refused the login or could not be reached; the message says which."""


@dataclass(frozen=True)
class Login:
    """A user of a node the suite may sign in as."""

    token_url: str
    client_id: str
    client_secret: Path
    username: str
    password: Path
    scope: str = "openid"


_TOKENS: dict[Login, tuple[str, float]] = {}
_LOCK = threading.Lock()


def access_token(login: Login, ca_file: Path | None) -> str:
    """A current access token for `login` (a new one when the last is near its end)."""
    with _LOCK:
        held = _TOKENS.get(login)
        if held is not None and held[1] - time.monotonic() > RENEW_BEFORE_S:
            return held[0]
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        form = {
            "grant_type": "password",
            "client_id": login.client_id,
            "client_secret": login.client_secret.read_text(encoding="utf-8").strip(),
            "username": login.username,
            "password": login.password.read_text(encoding="utf-8").strip(),
            "scope": login.scope,
        }
        try:
            answer = httpx.post(login.token_url, data=form, verify=verify, timeout=30)
        except httpx.HTTPError as exc:
            raise LoginFailedError(f"{login.token_url}: {exc}") from None
        if answer.status_code != 200:
            raise LoginFailedError(f"{login.username} at {login.token_url}: {answer.status_code} {answer.text[:200]}")
        body = answer.json()
        token, lifetime = body.get("access_token"), body.get("expires_in", 60)
        if not isinstance(token, str):
            raise LoginFailedError(f"{login.token_url} answered no access_token")
        _TOKENS[login] = (token, time.monotonic() + float(lifetime))
        return token
