"""Before a run, whether every target can be reached as the targets file says: TLS, tokens, certificates.

A wrong CA file, an expired token or a missing key would otherwise make every step of every scenario an
error with the same cause. Each node gets at most one problem, named with what to fix, and nothing is sent
beyond a few reads.
"""

from __future__ import annotations

import ssl

import httpx

from conformance.contract import FHIR_JSON
from conformance.logins import LoginFailedError, access_token
from conformance.targets import NodeTarget, Targets

#: Token names the suite knows how to try, and where (a read that needs any authenticated caller).
_TRUSTCENTRE_TOKEN = "trustcentre"  # noqa: S105 -- a credential's name in the targets file, not a secret


def preflight(targets: Targets, *, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None) -> list[str]:
    """One problem per node that cannot be used as the targets file describes it; empty when all can."""
    problems = []
    for node in targets.nodes.values():
        problem = _node_problem(node, timeout_s, transport)
        if problem is not None:
            problems.append(f"node {node.site}: {problem}")
    return problems


def _node_problem(node: NodeTarget, timeout_s: float, transport: httpx.BaseTransport | None) -> str | None:
    try:
        context = ssl.create_default_context(cafile=str(node.ca_file) if node.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot use ca_file {node.ca_file}: {exc}"
    for kind, certificate in node.client_certificates.items():
        try:
            ssl.create_default_context().load_cert_chain(certificate.cert, certificate.key)
        except (OSError, ssl.SSLError) as exc:
            return f"client certificate {kind!r} ({certificate.cert}): {exc}"
    with httpx.Client(verify=context if transport is None else True, timeout=timeout_s, transport=transport) as client:
        probe = f"{node.fhir_url}/metadata" if "fhir" in node.capabilities else node.public_url
        problem = _answers(client, probe, None)
        if problem is not None:
            return problem
        for name in node.tokens:
            url = (
                f"{node.trustcentre_url}/AuditEvent?_count=1"
                if name == _TRUSTCENTRE_TOKEN
                else f"{node.fhir_url}/Patient?_count=1"
            )
            try:
                token = node.token(name)
            except OSError as exc:
                return f"token {name!r}: cannot read {node.tokens[name]}: {exc}"
            problem = _answers(client, url, token)
            if problem is not None:
                return f"token {name!r}: {problem}"
    return _login_problem(node)


def _login_problem(node: NodeTarget) -> str | None:
    """None if the suite can sign in with each of the node's logins, else why not."""
    for name, login in node.logins.items():
        try:
            access_token(login, node.ca_file)
        except (OSError, LoginFailedError) as exc:
            return f"login {name!r}: cannot sign in ({exc}); check its token_url, client and password files"
    return None


def _answers(client: httpx.Client, url: str, token: str | None) -> str | None:
    """None if `url` answers (any status but 401 with a token), else why not, with what to check."""
    headers = {"Accept": FHIR_JSON, **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        answer = client.get(url, headers=headers)
    except httpx.ConnectError as exc:
        reason = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
            return f"{url}: TLS: the node's certificate is not trusted ({reason}); check `ca_file`"
        return f"{url}: cannot connect ({reason}); check the URL and that the node is up"
    except httpx.HTTPError as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    if token is not None and answer.status_code == 401:
        return f"{url} refuses it (401): the token is wrong or expired; check the file it is read from"
    return None
