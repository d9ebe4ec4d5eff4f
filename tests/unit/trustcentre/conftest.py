"""An in-process trust centre on a fresh SQLite file, with one token per role set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from servicekit.auth import Authenticator, Caller, token_hash
from trustcentre.app import create_app
from trustcentre.auth import Role
from trustcentre.settings import Settings

SECRET = b"k" * 32
DOMAINS = {"study": {"prefix": "S", "length": 10}, "clinic": {}}
PROJECTS = {"study": "study"}
SOURCE = "https://hubnode.org/fhir/sid/source"
#: Patient numbers of the sites the tests use (the process tests' clinic, the linkage tests' hospital).
SITE_SYSTEMS = {"dic": ("https://clinic.example/pid", "https://ukl.example/mrn"), "practice": ()}
CONNECTOR_ROLES = frozenset({Role.LINKAGE, Role.CONSENT_CHECK, Role.PSEUDONYMIZE, Role.LEDGER})


def connector(site: str, domains: frozenset[str] = frozenset({"study"})) -> Caller:
    """A node's connector as the trust centre knows it: speaking for `site`, its own systems, its domains."""
    systems = frozenset({f"{SOURCE}/{site}", *SITE_SYSTEMS.get(site, ())})
    return Caller(f"{site}-connector", CONNECTOR_ROLES, site, systems, domains)


CALLERS = {
    "admin": Caller("admin", frozenset(Role)),
    # a site's own tool that pseudonymises (not a node: not scoped to a site's persons)
    "pseudonymizer": Caller("pseudonymizer", frozenset({Role.PSEUDONYMIZE}), domains=frozenset({"study", "clinic"})),
    "connector": connector("dic"),
    "dic-connector": connector("dic"),
    "practice-connector": connector("practice", frozenset()),  # a practice sends no research data
    "gp-connector": connector("gp"),  # another node sending for the study
    "nobody": Caller("nobody", frozenset()),
    # a node's caller given every role by mistake: still speaks only for its own site
    "node-admin": Caller("node-admin", frozenset(Role), "dic", frozenset({f"{SOURCE}/dic"})),
    # a node's portal: enrolment, and consents and audit of the persons it names by its own person ids
    "portal": Caller(
        "portal",
        frozenset({Role.ENROLMENT, Role.CONSENT_READ, Role.CONSENT_WRITE, Role.CONSENT_CHECK, Role.AUDIT_READ}),
        "dic",
        frozenset({f"{SOURCE}/dic", *SITE_SYSTEMS["dic"]}),
        frozenset(),
    ),
    "practice-portal": Caller("practice-portal", frozenset({Role.ENROLMENT, Role.CONSENT_READ}), "practice"),
    # a research node's connector: it may only redeem a ticket for a patient's ledger
    "research-connector": Caller("research-connector", frozenset({Role.LEDGER}), "research"),
}
#: The federation's research nodes, as the allow list would name them.
RESEARCH_SITES = ("research",)


def call(client: TestClient, who: str, operation: str, *parts: dict[str, Any]) -> Any:
    """POST a Parameters of `parts` to `/ttp-fhir/fhir/<operation>` as `who`."""
    body = {"resourceType": "Parameters", "parameter": list(parts)}
    return client.post(f"/ttp-fhir/fhir/{operation}", json=body, headers=headers(who))


def identifier(name: str, system: str, value: str) -> dict[str, Any]:
    """A parameter `name` carrying the Identifier `system|value`."""
    return {"name": name, "valueIdentifier": {"system": system, "value": value}}


def headers(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer token-of-{who}", "Content-Type": "application/fhir+json"}


def settings(database_url: str) -> Settings:
    callers = {token_hash(f"token-of-{name}"): caller for name, caller in CALLERS.items()}
    return Settings(
        database_url=database_url,
        secret=SECRET,
        authenticator=Authenticator(callers, {}),
        domains=DOMAINS,
        projects=PROJECTS,
        research_sites=RESEARCH_SITES,
        max_batch=1000,
        max_body_bytes=512 * 1024,
    )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trustcentre.db'}"


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(settings(database_url)), raise_server_exceptions=False) as test_client:
        yield test_client
