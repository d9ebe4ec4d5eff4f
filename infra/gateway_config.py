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
#: Where the image (infra/images/gateway/Dockerfile) lets its user write the pid and buffer files.
STATE_DIR = "/var/lib/gateway"
#: What a node without a connector answers a refused peer (the connector answers it otherwise).
REFUSAL = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "security", "diagnostics": "no valid client certificate"}],
}
NOT_FOUND = {
    "resourceType": "OperationOutcome",
    "issue": [
        {"severity": "error", "code": "not-found", "diagnostics": "this gateway serves /fhir, /ttp-fhir and /health"}
    ],
}
#: Names, paths and sizes go into the configuration as they are: nothing that could end a directive.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/-]+$")

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
    #: The node's portal, under `/portal/` of the public door.
    portal: Upstream | None = None

    def __post_init__(self) -> None:
        if self.connector is None and self.trustcentre is None:
            raise ValueError("a gateway needs a connector or a trust centre behind it")
        for field in fields(self):
            value = getattr(self, field.name)
            for text in (value.host,) if isinstance(value, Upstream) else (value,) if isinstance(value, str) else ():
                if not _SAFE_VALUE.match(text):
                    raise ValueError(f"gateway {field.name} {text!r}: only letters, digits and ._:/- are allowed")

    @property
    def refusal_outcome(self) -> str:
        """The OperationOutcome a node without a connector answers refused peers with."""
        return json.dumps(REFUSAL, separators=(",", ":"))

    @property
    def not_found_outcome(self) -> str:
        """The OperationOutcome for a path the gateway routes nowhere (callers expect FHIR, not nginx's HTML)."""
        return json.dumps(NOT_FOUND, separators=(",", ":"))


def render(config: GatewayConfig) -> str:
    """The complete `nginx.conf` for this gateway."""
    return _TEMPLATES.get_template("gateway-nginx.conf.j2").render(c=config)
