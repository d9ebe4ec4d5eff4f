"""The suite's own copy of the wire names agrees with the published contract and with the services.

The suite must not import the services (it would certify their bugs), so it states the contract itself;
these tests are where a name renamed in a service, in the suite or in docs/federation.md is caught.
"""

from __future__ import annotations

import random
import re

import pytest

from conformance import contract
from connector import pseudonymise, tasks
from connector.processes import CONSENT_POLICIES, POLICY_OID
from fixtures import kvnr as suite_kvnr
from servicekit import identity
from servicekit import kvnr as service_kvnr
from tests.conftest import PROJECT_DIR

FEDERATION_DOC = (PROJECT_DIR / "docs" / "federation.md").read_text(encoding="utf-8")
NAMES = {
    name: value
    for name, value in vars(contract).items()
    if name.isupper() and isinstance(value, str) and re.match(r"(https?:|urn:|application/)", value)
}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_system_and_media_type_of_the_suite_is_in_the_published_contract(name: str) -> None:
    assert NAMES[name] in FEDERATION_DOC


@pytest.mark.parametrize("header", contract.IDENTITY_HEADERS)
def test_the_identity_headers_are_those_the_contract_documents(header: str) -> None:
    assert f"`{header}`" in FEDERATION_DOC


def test_the_connector_speaks_the_names_the_suite_expects() -> None:
    assert (tasks.PROCESS_BASE, tasks.PROCESS_VERSION) == (contract.PROCESS_BASE, contract.PROCESS_VERSION)
    assert (tasks.INPUT_SYSTEM, tasks.OUTPUT_SYSTEM) == (contract.INPUT_SYSTEM, contract.OUTPUT_SYSTEM)
    assert tasks.IDEMPOTENCY_SYSTEM == contract.IDEMPOTENCY_SYSTEM
    assert tasks.ORGANIZATION_SYSTEM == contract.ORGANIZATION_SYSTEM
    assert tasks.BUNDLE_CONTENT_TYPE == contract.BUNDLE_CONTENT_TYPE
    assert pseudonymise.PSEUDONYM_SYSTEM_BASE == contract.PSEUDONYM_SYSTEM_BASE
    assert {p.value: p.canonical for p in tasks.Process} == {p.value: p.canonical for p in contract.Process}
    assert identity.GATEWAY_SECRET_HEADER.lower() == contract.IDENTITY_HEADERS[0].lower()
    assert {p.value: code.removeprefix(f"{POLICY_OID}.") for p, code in CONSENT_POLICIES.items()} == {
        p.value: code for p, code in contract.PROCESS_CONSENT.items()
    }


def test_the_suites_kvnr_check_digit_agrees_with_the_services_on_every_letter() -> None:
    draw = random.Random(4711)  # noqa: S311 -- test data, not a secret
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        for _ in range(40):
            digits = f"{draw.randrange(10**8):08d}"
            assert suite_kvnr.make_kvnr(letter, digits) == service_kvnr.make_kvnr(letter, digits)
