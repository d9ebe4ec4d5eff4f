"""The allow list is read from the Bundle infra writes, and a malformed one is refused naming the entry."""

from __future__ import annotations

import copy

import pytest

from connector.allowlist import answering, permitted
from connector.tasks import Process
from infra.allow_list import AllowedNode, allow_list
from servicekit.allowlist import AllowListError, NodeRole, parse_allow_list

NODES = [
    AllowedNode("dic", "dic", "dic.hubnode.test", 9443, "a" * 128),
    AllowedNode("research", "research", "research.hubnode.test", 9443, "b" * 128),
]


def test_the_allow_list_infra_writes_is_read_into_peers_found_by_thumbprint_and_site() -> None:
    peers = parse_allow_list(allow_list(NODES))
    dic = peers.by_thumbprint("A" * 128)
    assert dic is not None
    assert (dic.site, dic.role, dic.address, dic.host) == (
        "dic",
        NodeRole.DIC,
        "https://dic.hubnode.test:9443/fhir",
        "dic.hubnode.test",
    )
    assert peers.by_site("research") == peers.by_thumbprint("b" * 128)
    assert peers.by_site("nowhere") is None
    assert [p.site for p in answering(peers, Process.FEASIBILITY, NodeRole.RESEARCH, "research")] == ["dic"]


def test_the_role_table_says_who_may_start_what_where() -> None:
    assert permitted(NodeRole.DIC, Process.DATA_SEND, NodeRole.RESEARCH)
    assert not permitted(NodeRole.DIC, Process.DATA_SEND, NodeRole.PRACTICE)
    assert not permitted(NodeRole.RESEARCH, Process.CARE_SUMMARY, NodeRole.DIC)
    assert permitted(NodeRole.TTP, Process.PING, NodeRole.RESEARCH)


def broken(index: int, key: str, value: object) -> dict:
    bundle = copy.deepcopy(allow_list(NODES))
    bundle["entry"][index]["resource"][key] = value
    return bundle


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        ({"resourceType": "Parameters"}, "must be a FHIR Bundle"),
        (broken(0, "resourceType", "Patient"), r"Bundle.entry\[0\]: expected an Organization or Endpoint"),
        (broken(0, "extension", []), r"Bundle.entry\[0\] \(Organization 'dic'\): needs one .*thumbprint"),
        (broken(0, "type", []), r"Organization 'dic'\): needs exactly one type"),
        (broken(0, "identifier", []), r"Bundle.entry\[0\]: needs exactly one identifier"),
        (broken(0, "endpoint", []), r"Organization 'dic'\): Organization.endpoint must reference exactly one"),
        (broken(1, "address", "http://plain"), r"Bundle.entry\[1\] \(Endpoint of 'dic'\): address must be an https"),
    ],
)
def test_a_malformed_allow_list_is_refused_naming_the_entry(bundle: dict, message: str) -> None:
    with pytest.raises(AllowListError, match=message):
        parse_allow_list(bundle)


def test_two_organisations_with_one_thumbprint_are_refused() -> None:
    twins = [NODES[0], AllowedNode("practice", "practice", "p.hubnode.test", 9443, "a" * 128)]
    with pytest.raises(AllowListError, match="same thumbprint twice"):
        parse_allow_list(allow_list(twins))
