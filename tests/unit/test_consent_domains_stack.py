"""`hubnode:consentDomains`: validated in the stack, written for the trust centre, read by it unchanged."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from fixtures.consent_domains import CONSENT_DOMAINS
from infra.plan import ServicePlan, plan_stack
from infra.spec import SpecError, parse_stack

TC_SECRET = "s" * 32


def trustcentre(**config: object) -> ServicePlan:
    stack = {
        "hubnode:site": "dev",
        "hubnode:components": ["trustcentre"],
        **{f"hubnode:{k}": v for k, v in config.items()},
    }
    [plan] = plan_stack(parse_stack("dev", stack))
    return next(s for s in plan.services if s.component == "trustcentre")


def problems_of(consent_domains: object) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_stack("dev", {"hubnode:site": "dev", "hubnode:consentDomains": consent_domains})
    return [str(p) for p in caught.value.problems]


def declared() -> list[dict[str, Any]]:
    """The local federation's declaration as a stack file carries it."""
    return list(copy.deepcopy(CONSENT_DOMAINS["domains"]))


def test_without_consent_domains_the_trust_centre_keeps_its_built_in_mii_broad_consent() -> None:
    service = trustcentre()
    assert "TC_CONSENT_DOMAINS_FILE" not in service.env
    assert [f.path for f in service.files] == ["/etc/trustcentre/domains.json", "/etc/trustcentre/projects.json"]


def test_declared_consent_domains_reach_the_trust_centre_as_it_reads_them(tmp_path: Path) -> None:
    from trustcentre.consent_templates import registry_from_config  # noqa: PLC0415 -- the service is a separate package
    from trustcentre.settings import Settings  # noqa: PLC0415

    service = trustcentre(consentDomains=declared())
    [written] = [f for f in service.files if f.path == service.env["TC_CONSENT_DOMAINS_FILE"]]
    (tmp_path / "consent-domains.json").write_text(written.content)
    (tmp_path / "secret").write_text(TC_SECRET)
    (tmp_path / "callers.json").write_text('{"callers": []}')
    environ = {
        "TC_SECRET_FILE": str(tmp_path / "secret"),
        "TC_CALLERS_FILE": str(tmp_path / "callers.json"),
        "TC_CONSENT_DOMAINS_FILE": str(tmp_path / "consent-domains.json"),
    }
    assert Settings.from_environment(environ).consent_domains == registry_from_config(CONSENT_DOMAINS)


def test_a_bad_consent_domains_file_stops_the_trust_centre_naming_the_file_and_key(tmp_path: Path) -> None:
    from servicekit.config import ConfigError  # noqa: PLC0415
    from trustcentre.settings import Settings  # noqa: PLC0415

    (tmp_path / "consent-domains.json").write_text('{"domains": [{"name": "MII", "policies": [{"name": 7}]}]}')
    (tmp_path / "secret").write_text(TC_SECRET)
    (tmp_path / "callers.json").write_text('{"callers": []}')
    path = tmp_path / "consent-domains.json"
    environ = {
        "TC_SECRET_FILE": str(tmp_path / "secret"),
        "TC_CALLERS_FILE": str(tmp_path / "callers.json"),
        "TC_CONSENT_DOMAINS_FILE": str(path),
    }
    with pytest.raises(ConfigError, match=rf"TC_CONSENT_DOMAINS_FILE={path}: domains\[0\]\.policies\[0\]\.name"):
        Settings.from_environment(environ)


def test_consent_domains_live_with_the_federations_trust_centre_only() -> None:
    spec = parse_stack(
        "dev", {"hubnode:site": "dev", "hubnode:components": ["fhir"], "hubnode:consentDomains": declared()}
    )
    assert spec.trust_centre is None
    assert spec.nodes[0].consent_domains == ()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (
            {"name": "MII"},
            "hubnode:consentDomains = {'name': 'MII'}: a list of consent domains, e.g. [{name: MII, ...}]",
        ),
        (
            [{"policies": [{"name": "p"}]}],
            "hubnode:consentDomains[0] = {'policies': [{'name': 'p'}]}: a mapping with a name",
        ),
        ([{"name": "MII", "policies": []}], "hubnode:consentDomains[0].policies = []: a non-empty list"),
        (
            [{"name": "MII", "policies": [{"name": "p", "colour": "red"}]}],
            "hubnode:consentDomains[0].policies[0].colour = 'red': unknown key; known: name, version, codings",
        ),
        (
            [
                {
                    "name": "MII",
                    "policies": [{"name": "p"}],
                    "templates": [
                        {"name": "t", "version": "1", "type": "maybe", "modules": [{"name": "m", "policies": ["p"]}]}
                    ],
                }
            ],
            "hubnode:consentDomains[0].templates[0].type = 'maybe': choose one of consent, opt-out",
        ),
        (
            [
                {
                    "name": "MII",
                    "policies": [{"name": "p"}],
                    "templates": [{"name": "t", "modules": [{"name": "m", "policies": ["q", {"x": 1}]}]}],
                }
            ],
            (
                "hubnode:consentDomains[0].templates[0].modules[0].policies = ['q', {'x': 1}]: "
                "a list of this domain's policies: ['p']"
            ),
        ),
        (
            [{"name": "MII", "policies": [{"name": "p"}]}, {"name": "MII", "policies": [{"name": "p"}]}],
            "hubnode:consentDomains = ['MII', 'MII']: each consent domain name at most once",
        ),
    ],
)
def test_a_bad_consent_domain_is_named_by_its_key(value: object, problem: str) -> None:
    assert problems_of(value) == [problem]
