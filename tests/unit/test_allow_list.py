from __future__ import annotations

import json
from datetime import UTC, datetime

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.organization import Organization

from infra import pki
from infra.allow_list import THUMBPRINT_EXTENSION, AllowedNode, allow_list, allow_list_json

NOW = datetime(2026, 3, 1, tzinfo=UTC)
DIC = AllowedNode("dic", "dic", "dic.hubnode.test", 9443, "a" * 128)
PRACTICE = AllowedNode("practice", "practice", "practice.hubnode.test", 19443, "b" * 128)


def test_the_bundle_is_valid_fhir_with_one_organization_and_endpoint_per_node() -> None:
    bundle = Bundle.model_validate_json(allow_list_json([PRACTICE, DIC]))
    assert bundle.type == "collection"
    resources = [entry.resource for entry in bundle.entry or []]
    assert [type(r).__name__ for r in resources] == ["Organization", "Endpoint", "Organization", "Endpoint"]
    organization, endpoint = resources[2], resources[3]
    assert isinstance(organization, Organization)
    assert isinstance(endpoint, Endpoint)
    assert [(i.system, i.value) for i in organization.identifier or []] == [
        ("http://dsf.dev/sid/organization-identifier", "practice")
    ]
    [role] = organization.type or []
    assert [(c.system, c.code) for c in role.coding or []] == [
        ("https://hubnode.org/fhir/CodeSystem/node-role", "practice")
    ]
    [extension] = organization.extension or []
    assert (extension.url, extension.valueString) == (THUMBPRINT_EXTENSION, "b" * 128)
    assert endpoint.address == "https://practice.hubnode.test:19443/fhir"
    assert [(i.system, i.value) for i in endpoint.identifier or []] == [
        ("http://dsf.dev/sid/endpoint-identifier", "practice.hubnode.test")
    ]


def test_organization_and_endpoint_refer_to_each_other_inside_the_bundle() -> None:
    entries = allow_list([DIC])["entry"]
    organization, endpoint = (entry["resource"] for entry in entries)
    assert organization["endpoint"] == [{"reference": entries[1]["fullUrl"]}]
    assert endpoint["managingOrganization"] == {"reference": entries[0]["fullUrl"]}
    assert entries[0]["fullUrl"] == f"urn:uuid:{organization['id']}"


def test_unchanged_nodes_give_the_same_bytes_in_any_order() -> None:
    text = allow_list_json([DIC, PRACTICE])
    assert allow_list_json([PRACTICE, DIC]) == text
    assert text.endswith("}\n")
    json.loads(text)


def test_ids_are_stable_per_node_and_distinct() -> None:
    ids = {entry["resource"]["id"] for entry in allow_list([DIC, PRACTICE])["entry"]}
    assert len(ids) == 4
    only_dic = {entry["resource"]["id"] for entry in allow_list([DIC])["entry"]}
    assert only_dic <= ids  # adding a node does not renumber the others


def test_a_changed_thumbprint_changes_only_that_nodes_extension() -> None:
    ca = pki.issue_ca("digihub", NOW)
    node = pki.issue_node(ca, "dic", ["dic.hubnode.test"], NOW)
    renewed = AllowedNode("dic", "dic", "dic.hubnode.test", 9443, pki.thumbprint(node.certificate))
    before, after = allow_list([DIC, PRACTICE]), allow_list([renewed, PRACTICE])
    assert before["entry"][1:] == after["entry"][1:]
    assert after["entry"][0]["resource"]["extension"][0]["valueString"] == pki.thumbprint(node.certificate)
