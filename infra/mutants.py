"""Faulty nodes on purpose: each mutant breaks one requirement, to prove the conformance suite notices.

A local stack (`hubnode:environment: local`) may name one mutant (`hubnode:mutant`, or `hubnode up
--mutant NAME`); a site stack refuses the key. A mutant is either a patch or a configuration:
- a patch runs the service from a mutant image: its production image plus a start-up hook
  (`infra/images/mutant/hubnode_mutant.py`) that replaces one function when `HUBNODE_MUTANT` names
  it. Production images never contain the hook; the patch lives only in the mutant image.
- a configuration mutant is the production image with a setting taken away (a variable unset, a
  line of the gateway's nginx.conf changed): what a careless operator could do.
`./dev mutants` (infra/mutation.py) brings each in turn up and runs the scenarios of its requirement.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from infra.errors import HubnodeError

if TYPE_CHECKING:
    from infra.plan import ConfigFile, NodePlan, ServicePlan

#: The environment variable the mutant image's hook reads.
MUTANT_VARIABLE = "HUBNODE_MUTANT"
#: The recipe (infra/images/mutant/) that adds the hook to a service image.
MUTANT_RECIPE = "mutant"


@dataclass(frozen=True)
class Mutant:
    """A faulty variant of the node: what it breaks, and how it is made."""

    name: str
    requirement: str
    breaks: str
    #: Services that run the mutant image with the hook switched to this mutant.
    patched: tuple[str, ...] = ()
    #: Component -> environment variables taken away.
    unset: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: (old, new) replacements in the gateway's nginx.conf; each must change something.
    gateway: tuple[tuple[str, str], ...] = ()


MUTANTS: Mapping[str, Mutant] = {
    mutant.name: mutant
    for mutant in (
        Mutant(
            "feasibility-small-counts",
            "HUB-PROC-04",
            "reports feasibility counts of 1 to 4 exactly",
            patched=("connector",),
        ),
        Mutant(
            "feasibility-exact-counts",
            "HUB-SEC-05",
            "hides counts below 5 but reports larger ones exactly, so two counts subtract to a small one",
            patched=("connector",),
        ),
        Mutant(
            "research-without-consent",
            "HUB-INV-03",
            "sends a patient's data without asking the trust centre for consent",
            patched=("connector",),
        ),
        Mutant(
            "name-in-extract",
            "HUB-INV-01",
            "leaves the patient's name in a research extract",
            patched=("connector",),
        ),
        Mutant(
            "impostor-accepted",
            "HUB-TRUST-04",
            "accepts a federation certificate by the site it names, without its thumbprint on the allow list",
            patched=("connector", "trustcentre"),
        ),
        Mutant(
            "ndjson-skips-bad-lines",
            "HUB-FHIR-12",
            "stores the good lines of an NDJSON import and drops the broken ones",
            patched=("connector",),
        ),
        Mutant(
            "stores-off-profile",
            "HUB-FHIR-13",
            "stores resources that break the profiles they declare without a word",
            patched=("connector",),
        ),
        Mutant(
            "ignores-idempotency-key",
            "HUB-TRN-06",
            "starts a process anew when it is started again with the same idempotency key",
            patched=("connector",),
        ),
        Mutant(
            "public-identity-headers",
            "HUB-TRN-05",
            "the gateway passes a caller's identity headers on from the public door",
            gateway=(
                ('X-Hubnode-Client-Verify "";', "X-Hubnode-Client-Verify $http_x_hubnode_client_verify;"),
                ('X-Hubnode-Client-Cert "";', "X-Hubnode-Client-Cert $http_x_hubnode_client_cert;"),
                ('X-Hubnode-Client-Subject "";', "X-Hubnode-Client-Subject $http_x_hubnode_client_subject;"),
            ),
        ),
        Mutant(
            "merge-persons",
            "HUB-SEC-01",
            "lets a node link identifiers of another site's systems to a person",
            patched=("trustcentre",),
        ),
        Mutant(
            "overwrite-foreign-record",
            "HUB-SEC-02",
            "honours any origin identifier a peer sends, so a peer overwrites the node's own records",
            patched=("connector",),
        ),
        Mutant(
            "pseudonymise-any-domain",
            "HUB-SEC-03",
            "lets a node pseudonymise in every domain, a research project's too",
            patched=("trustcentre",),
        ),
        Mutant(
            "free-text-purpose",
            "HUB-SEC-04",
            "records the purpose a caller names, whatever it is",
            patched=("trustcentre",),
        ),
        Mutant(
            "self-call",
            "HUB-TRUST-08",
            "accepts its own certificate at its own peer door",
            patched=("connector", "trustcentre"),
        ),
        Mutant(
            "unaudited-read",
            "HUB-SEC-06",
            "audits a read without the patients it returned",
            patched=("connector",),
        ),
        Mutant(
            "cacheable-answers",
            "HUB-TRN-07",
            "answers without Cache-Control: no-store",
            patched=("connector",),
        ),
        Mutant(
            "host-links",
            "HUB-TRN-08",
            "has no public URL configured, so Bundle links follow the Host header a caller sends",
            unset={"connector": ("CN_PUBLIC_URL",)},
        ),
        Mutant(
            "gives-up-at-once",
            "HUB-PROC-14",
            "never tries a process to an unreachable peer again by itself: someone must notice and `$retry`",
            patched=("connector",),
        ),
        Mutant(
            "revoked-accepted",
            "HUB-TRUST-07",
            "is given no revocation list, so a revoked certificate still opens the peer door",
            unset={"connector": ("CN_CRL_FILE",), "trustcentre": ("TC_CRL_FILE",)},
            gateway=(("ssl_crl ", "# no revocation list: ssl_crl "),),
        ),
    )
}


def mutated(plans: tuple[NodePlan, ...], mutant: Mutant) -> tuple[NodePlan, ...]:
    """The plans with `mutant` switched on in every node that runs an affected service."""
    return tuple(
        dataclasses.replace(plan, services=tuple(_service(service, mutant) for service in plan.services))
        for plan in plans
    )


def _service(service: ServicePlan, mutant: Mutant) -> ServicePlan:
    component = service.component
    if component in mutant.patched:
        build = service.image.build
        if build is None:
            raise HubnodeError(
                f"mutant {mutant.name}: {component} runs a pulled image; a patch goes only into a local build",
                fix="set hubnode:images.kind to local in the stack that runs mutants",
            )
        production = service.image
        name, _, tag = production.reference.rpartition(":")
        hooked = dataclasses.replace(build, recipe=MUTANT_RECIPE, base_image=production.reference, base=production)
        image = dataclasses.replace(production, reference=f"{name}-mutant:{tag}", build=hooked)
        service = dataclasses.replace(service, image=image, env={**service.env, MUTANT_VARIABLE: mutant.name})
    if component in mutant.unset:
        service = dataclasses.replace(
            service, env={k: v for k, v in service.env.items() if k not in mutant.unset[component]}
        )
    if component == "gateway" and mutant.gateway:
        service = dataclasses.replace(service, files=tuple(_edited(file, mutant) for file in service.files))
    return service


def _edited(file: ConfigFile, mutant: Mutant) -> ConfigFile:
    """The gateway's nginx.conf (its one file) with the mutant's replacements made.

    The edited text is the file now: it is no longer what its configuration renders (`rendered_from`).
    """
    content = file.content
    for old, new in mutant.gateway:
        if old not in content:
            raise HubnodeError(
                f"mutant {mutant.name}: the gateway configuration has no {old!r} to change",
                fix="the gateway template changed: update the mutant in infra/mutants.py",
            )
        content = content.replace(old, new)
    return dataclasses.replace(file, content=content, rendered_from=None)
