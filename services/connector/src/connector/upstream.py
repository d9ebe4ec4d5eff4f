"""How the connector's calls to other services (HAPI, the trust centre) fail, in two kinds only.

`UpstreamRefused`: the service answered 4xx, so the request (ultimately the connector's caller's
input) was at fault; it carries the service's OperationOutcome. `UpstreamUnavailable`: unreachable,
5xx or nonsense, so nothing can be said about the input. The API answers the first with a 4xx and
the second with 503 and `Retry-After` (try again shortly); neither becomes a stack trace.
`UpstreamUnanswered` is the unavailable kind whose request went out and got no answer (the service
died or timed out meanwhile): it may have been carried out, so the API says 504, not "refused".
"""

from __future__ import annotations

from typing import Any

import httpx

#: Failures before the request reached the service: it did nothing.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class UpstreamUnavailable(Exception):  # noqa: N818 -- reads as the state it reports
    """The service could not be reached, failed (5xx) or answered something that is not FHIR JSON."""


class UpstreamUnanswered(UpstreamUnavailable):
    """The request was sent and no answer came: whether the service carried it out is unknown."""


class UpstreamRefused(Exception):  # noqa: N818 -- reads as the state it reports
    """The service refused the request (4xx); `outcome` is its OperationOutcome (or a stand-in)."""

    def __init__(self, service: str, status: int, outcome: dict[str, Any]) -> None:
        """Keep the service's status and OperationOutcome for the answer to the connector's caller."""
        super().__init__(f"{service} answered {status}: {diagnostics(outcome)}")
        self.service = service
        self.status = status
        self.outcome = outcome


async def send(client: httpx.AsyncClient, service: str, method: str, url: str, **kwargs: Any) -> httpx.Response:  # noqa: ANN401
    """One request; failures become UpstreamUnavailable naming `service` (UpstreamUnanswered once it went out)."""
    try:
        return await client.request(method, url, **kwargs)
    except NOT_SENT as exc:
        base = str(client.base_url).rstrip("/")
        raise UpstreamUnavailable(f"{service} at {base} unreachable: {exc or type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        base = str(client.base_url).rstrip("/")
        raise UpstreamUnanswered(
            f"{service} at {base} gave no answer ({exc or type(exc).__name__}); whether it carried the request out"
            " is unknown: sending the same again is safe"
        ) from exc


def checked(response: httpx.Response, service: str) -> dict[str, Any]:
    """The JSON resource of a 2xx answer; UpstreamRefused for 4xx, UpstreamUnavailable for the rest."""
    status = response.status_code
    if status >= 500:
        raise UpstreamUnavailable(f"{service} answered {status}: {response.text[:500]}")
    try:
        resource = response.json()
    except ValueError:
        resource = None
    if 400 <= status < 500:
        if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
            resource = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "processing", "diagnostics": response.text[:2000]}],
            }
        raise UpstreamRefused(service, status, resource)
    if not isinstance(resource, dict):
        raise UpstreamUnavailable(f"{service} answered {status} with something that is not a JSON resource")
    return resource


def diagnostics(outcome: dict[str, Any]) -> str:
    """The diagnostics of an OperationOutcome's issues, joined."""
    issues = outcome.get("issue")
    texts = [str(i.get("diagnostics", "")) for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []
    return "; ".join(t for t in texts if t) or "no diagnostics"
