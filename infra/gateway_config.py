"""The gateway's nginx configuration, rendered from a small description of the node.

Pure (the template is read from the package). The behaviour is the contract of docs/federation.md,
"Gateway": TLS on both doors, mutual TLS against the federation CA on the peer door, refused
handshakes answered by the connector's `/peer/refused`, identity headers always set by the gateway
and never passed on from the client. The plan renders it into a `ConfigFile`, so the local launcher
and `pulumi up` mount the very same text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields

import jinja2

#: Docker's DNS server on user-defined networks: how the gateway finds its node's containers by name.
DOCKER_DNS = "127.0.0.11"
#: Where nginx writes its pid file and temp folders: /tmp, a tmpfs under the plan (the root is read-only).
STATE_DIR = "/tmp"  # noqa: S108 -- the container's own


def _outcome(code: str, diagnostics: str) -> dict[str, object]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
    }


#: What a node without a connector answers a refused peer (the connector answers it otherwise).
REFUSAL = _outcome("security", "no valid client certificate")
NOT_FOUND = _outcome("not-found", "this gateway serves /fhir, /ttp-fhir and /health")
#: Names, paths and sizes go into the configuration as they are: nothing that could end a directive.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/-]+$")
#: Header values go in double quotes: nothing that could end the quotes or name a variable.
_QUOTED_VALUE = re.compile(r"^[A-Za-z0-9 ;:'/.*+-]+$")
_QUOTED_FIELDS = frozenset({"content_security_policy"})

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("infra", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # noqa: S701 -- renders nginx configuration, not HTML; values are checked instead
)


@dataclass(frozen=True)
class Upstream:
    """A service behind the gateway, by its name on the node's network."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """The base URL nginx proxies to."""
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class GatewayConfig:
    """What the gateway of one node needs to know: where its services and files are.

    `connector` answers `/fhir`, `/health` and refused peers; a node without one (a `ttp` node)
    has its `/health` answered by the trust centre and refusals by the gateway itself. `idp`, the
    node's Keycloak, answers `/idp/` on the public door, and `portal` `/portal/`.
    `secret_include` is the file defining `$<secret_variable>` as the gateway secret.
    """

    connector: Upstream | None
    trustcentre: Upstream | None
    certificate_file: str
    key_file: str
    ca_file: str
    secret_include: str
    secret_variable: str
    public_port: int
    peer_port: int
    health_port: int
    #: The federation's revocation list: a revoked certificate is refused at the handshake.
    crl_file: str | None = None
    resolver: str = DOCKER_DNS
    state_dir: str = STATE_DIR
    #: Largest request body: ingest bundles and `$import` files are big, anything beyond is refused (413).
    max_body_size: str = "64m"
    #: Processes answer when they have run to the end, feasibility after asking every peer.
    upstream_timeout_s: int = 300
    idp: Upstream | None = None
    #: Slow clients (security review L1). The TLS handshake and the whole request header must arrive within
    #: `header_timeout_s`, so a client sending a byte a second is cut off; a body may pause no longer than
    #: `body_timeout_s` between two reads, and the service behind bounds its total time (408).
    header_timeout_s: int = 10
    body_timeout_s: int = 10
    #: How long a client reading an answer may keep the gateway waiting between two writes.
    send_timeout_s: int = 30
    #: How long an idle connection is kept open for the client's next request.
    keepalive_timeout_s: int = 30
    #: A request line or header field longer than `header_buffer_size` gets one of `large_header_buffers`
    #: buffers of `large_header_buffer_size`; one longer still is refused (400, a request line 414).
    header_buffer_size: str = "1k"
    large_header_buffers: int = 4
    large_header_buffer_size: str = "8k"
    #: Requests one client address may have in progress at once, on all doors together; beyond: 429.
    connections_per_client: int = 32
    #: How long browsers keep to https for the node's host (Strict-Transport-Security, public door).
    hsts_max_age_s: int = 31_536_000
    #: The public door's Content-Security-Policy: the API answers JSON, which loads and frames nothing.
    #: The identity provider and the portal send their own policies from their locations (see the template).
    content_security_policy: str = "default-src 'none'; frame-ancestors 'none'"
    #: The node's portal, under `/portal/` of the public door (it sets its own Content-Security-Policy).
    portal: Upstream | None = None
    #: How long a client is told to wait (Retry-After) when the service behind does not answer: restarting.
    retry_after_s: int = 10

    def __post_init__(self) -> None:
        if self.connector is None and self.trustcentre is None:
            raise ValueError("a gateway needs a connector or a trust centre behind it")
        for field in fields(self):
            value = getattr(self, field.name)
            quoted = field.name in _QUOTED_FIELDS
            for text in (value.host,) if isinstance(value, Upstream) else (value,) if isinstance(value, str) else ():
                if not (_QUOTED_VALUE if quoted else _SAFE_VALUE).match(text):
                    allowed = "letters, digits, spaces and ;:'/.*+-" if quoted else "letters, digits and ._:/-"
                    raise ValueError(f"gateway {field.name} {text!r}: only {allowed} are allowed")

    @property
    def refusal_outcome(self) -> str:
        """The OperationOutcome a node without a connector answers refused peers with."""
        return json.dumps(REFUSAL, separators=(",", ":"))

    @property
    def not_found_outcome(self) -> str:
        """The OperationOutcome for a path the gateway routes nowhere (callers expect FHIR, not nginx's HTML)."""
        return json.dumps(NOT_FOUND, separators=(",", ":"))

    @property
    def refusals(self) -> dict[int, tuple[int, str]]:
        """The gateway's refusals of a request past a limit: nginx's status -> (status answered, OperationOutcome).

        494 is nginx's name for a header field too large; clients get a 400. 502 is nginx's when the service
        behind refuses or drops the connection (it is restarting): clients get a 503 with `Retry-After`, as
        the connector answers while its HAPI restarts.
        """
        header = self.large_header_buffer_size
        limits = {
            413: (413, "too-costly", f"the request body is larger than the gateway allows ({self.max_body_size})"),
            414: (414, "too-costly", f"the request line is longer than the gateway allows ({header})"),
            494: (400, "too-costly", f"a request header is longer than the gateway allows ({header})"),
            429: (429, "throttled", f"more than {self.connections_per_client} requests in progress from this address"),
            502: (
                503,
                "transient",
                f"the service behind the gateway is not answering; send again in {self.retry_after_s} s",
            ),
        }
        return {
            status: (answered, json.dumps(_outcome(code, diagnostics), separators=(",", ":")))
            for status, (answered, code, diagnostics) in limits.items()
        }

    @property
    def upstream_timeout_outcome(self) -> str:
        """The answer to nginx's 504 when a connection was made but no answer came within `upstream_timeout_s`.

        The request may have been carried out, so the client is told the outcome is unknown. A 504 whose
        connection was never made (a stopped container's address still cached) reached nothing: it gets the
        502's transient 503 (the template tells the two apart by `$upstream_connect_time`).
        """
        diagnostics = (
            f"the service behind the gateway did not answer within {self.upstream_timeout_s} s; "
            "whether the request was carried out is unknown"
        )
        return json.dumps(_outcome("timeout", diagnostics), separators=(",", ":"))


def render(config: GatewayConfig) -> str:
    """The complete `nginx.conf` for this gateway."""
    return _TEMPLATES.get_template("gateway-nginx.conf.j2").render(c=config)
