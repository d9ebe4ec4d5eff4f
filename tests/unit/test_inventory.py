"""`hubnode inventory` against a fake gateway (httpx MockTransport), and `hubnode compare` of two inventories."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra import inventory
from infra.cli import main
from infra.compare import EMPTY
from infra.errors import HubnodeError
from infra.inventory import Access, canonical, node_access, take
from infra.progress import Progress
from infra.state import StackState

GATEWAY = "https://127.0.0.1:8443"
PUBLIC = "https://dic.hubnode.test"  # the public URL the node's links name
TOKENS = {"cn-admin-token": "cn-secret", "tc-admin-token": "tc-secret"}


def patient(number: int, version: str = "1") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{number:03d}",
        "meta": {"versionId": version, "lastUpdated": f"2026-12-0{version}T10:00:00Z", "source": "#dic"},
        "gender": "female",
    }


def store(name: str, count: int, digest: str) -> dict[str, Any]:
    parts = [
        {"name": "name", "valueString": name},
        {"name": "count", "valueInteger": count},
        {"name": "digest", "valueString": digest},
    ]
    return {"name": "store", "part": parts}


class FakeGateway:
    """A node's door: the connector's trail and reads, the trust centre's inventory; pages of `page_size`."""

    def __init__(self, patients: list[dict[str, Any]], page_size: int = 2) -> None:
        self.patients, self.page_size = patients, page_size
        self.asked: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url, path = request.url, request.url.path
        self.asked.append(f"{path}?{url.query.decode()}" if url.query else path)
        wanted = TOKENS["tc-admin-token"] if path.startswith("/ttp-fhir") else TOKENS["cn-admin-token"]
        if request.headers.get("Authorization") != f"Bearer {wanted}" or url.host != "127.0.0.1":
            return httpx.Response(401, json={"resourceType": "OperationOutcome", "issue": [{"diagnostics": "who?"}]})
        if path == "/fhir/AuditEvent/$inventory":
            return self.parameters(store("audit", 7, "a" * 64))
        if path == "/ttp-fhir/fhir/$inventory":
            return self.parameters(store("pseudonyms/study", 2, "b" * 64), store("audit", 3, "c" * 64))
        held = self.patients if path in ("/fhir/Patient", "/fhir") else []  # /fhir: the pages after the first
        if url.params.get("_summary") == "count":
            return httpx.Response(200, json={"resourceType": "Bundle", "type": "searchset", "total": len(held)})
        offset = int(url.params.get("_getpagesoffset", "0"))
        page = held[offset : offset + self.page_size]
        links = []
        if offset + self.page_size < len(held):
            links.append(
                {"relation": "next", "url": f"{PUBLIC}/fhir?_getpages=x&_getpagesoffset={offset + self.page_size}"}
            )
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": [{"resource": r} for r in page],
        }
        return httpx.Response(200, json=bundle)

    def parameters(self, *parts: dict[str, Any]) -> httpx.Response:
        return httpx.Response(200, json={"resourceType": "Parameters", "parameter": list(parts)})


def access(trustcentre: bool = True) -> Access:
    return Access("dic", GATEWAY, TOKENS["cn-admin-token"], TOKENS["tc-admin-token"] if trustcentre else None, None)


def inventory_of(gateway: FakeGateway, trustcentre: bool = True) -> dict[str, Any]:
    with httpx.Client(transport=httpx.MockTransport(gateway)) as client:
        return take(access(trustcentre), client, Progress(io.StringIO()), "bk")


def expected_digest(resources: list[dict[str, Any]]) -> str:
    ordered = sorted(resources, key=lambda r: r["id"])
    return hashlib.sha256(b"".join(canonical(r) + b"\n" for r in ordered)).hexdigest()


def test_the_inventory_holds_the_trails_the_trust_centres_stores_and_each_type_held() -> None:
    patients = [patient(n) for n in (3, 1, 2, 5, 4)]
    gateway = FakeGateway(patients)
    found = inventory_of(gateway)
    assert found["format"] == 1
    assert (found["stack"], found["site"]) == ("bk", "dic")
    assert found["stores"] == {
        "connector/audit": {"count": 7, "digest": "a" * 64},
        "fhir/Patient": {"count": 5, "digest": expected_digest(patients)},
        "trustcentre/audit": {"count": 3, "digest": "c" * 64},
        "trustcentre/pseudonyms/study": {"count": 2, "digest": "b" * 64},
    }
    assert gateway.asked[:2] == ["/fhir/AuditEvent/$inventory", "/ttp-fhir/fhir/$inventory"], "trails first"
    assert len(gateway.asked) == 2 + len(inventory.RESOURCE_TYPES) + 3  # three pages of Patients
    assert "/fhir?_getpages=x&_getpagesoffset=4" in gateway.asked, "next links are asked at the gateway"


def test_the_digest_does_not_depend_on_paging_order_or_versions_but_on_content() -> None:
    patients = [patient(n) for n in range(1, 8)]
    first = inventory_of(FakeGateway(patients, page_size=3))["stores"]["fhir/Patient"]
    again = inventory_of(FakeGateway(list(reversed([patient(n, "2") for n in range(1, 8)])), page_size=5))
    assert again["stores"]["fhir/Patient"] == first
    changed = [*patients[:-1], {**patients[-1], "gender": "male"}]
    assert inventory_of(FakeGateway(changed))["stores"]["fhir/Patient"]["digest"] != first["digest"]


def test_a_node_without_a_trust_centre_has_no_trust_centre_stores() -> None:
    gateway = FakeGateway([])
    found = inventory_of(gateway, trustcentre=False)
    assert list(found["stores"]) == ["connector/audit"]
    assert "/ttp-fhir/fhir/$inventory" not in gateway.asked


def test_a_refusal_or_no_answer_is_one_error_naming_the_request() -> None:
    refused = r"GET https://127.0.0.1:8443/fhir/AuditEvent/\$inventory: 401 who\?"
    with (
        pytest.raises(HubnodeError, match=refused),
        httpx.Client(transport=httpx.MockTransport(FakeGateway([]))) as client,
    ):
        take(Access("dic", GATEWAY, "wrong", None, None), client, Progress(io.StringIO()), "bk")

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        pytest.raises(HubnodeError, match="no answer") as error,
        httpx.Client(transport=httpx.MockTransport(unreachable)) as client,
    ):
        take(access(), client, Progress(io.StringIO()), "bk")
    assert "hubnode status" in str(error.value)


def project(tmp_path: Path, tokens: dict[str, str] = TOKENS) -> StackState:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
    (tmp_path / "Pulumi.bk.yaml").write_text("config:\n  hubnode:site: dic\n")
    state = StackState(tmp_path, "bk")
    state.secrets_dir("dic").mkdir(parents=True)
    for name, token in tokens.items():
        (state.secrets_dir("dic") / name).write_text(token + "\n")
    nodes = [{"site": "dic", "role": "dic", "endpoints": {"gateway": GATEWAY}}]
    state.endpoints_file.write_text(json.dumps({"stack": "bk", "nodes": nodes}))
    return state


def test_the_node_is_reached_with_the_stacks_endpoints_and_admin_tokens(tmp_path: Path) -> None:
    assert node_access(project(tmp_path), None) == access()
    assert node_access(project(tmp_path / "no-tc", {"cn-admin-token": "cn-secret"}), "dic").trustcentre_token is None
    with pytest.raises(HubnodeError, match=r"has no connector.*an inventory goes to its connector"):
        node_access(project(tmp_path / "no-cn", {}), "dic")


@pytest.fixture
def fake_node(monkeypatch: pytest.MonkeyPatch) -> FakeGateway:
    gateway = FakeGateway([patient(1), patient(2)])
    monkeypatch.setattr(Access, "client", lambda _self: httpx.Client(transport=httpx.MockTransport(gateway)))
    return gateway


def test_inventory_writes_the_file_and_compare_finds_it_identical_to_the_node_now(
    tmp_path: Path, fake_node: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path)
    out = tmp_path / "before.json"
    assert main(["--project-dir", str(tmp_path), "inventory", "--stack", "bk", "--output", str(out)]) == 0
    assert f"inventory of dic (4 stores) written to {out}" in capsys.readouterr().out
    assert json.loads(out.read_text())["stores"]["fhir/Patient"]["count"] == 2
    assert main(["--project-dir", str(tmp_path), "compare", "--stack", "bk", "--against", str(out)]) == 0
    assert "identical: 4 stores of dic of bk" in capsys.readouterr().out
    fake_node.patients.append(patient(3))
    assert main(["--project-dir", str(tmp_path), "compare", "--stack", "bk", "--against", str(out), "--json"]) == 1
    compared = json.loads(capsys.readouterr().out)
    assert compared["identical"] is False
    [difference] = compared["differences"]
    assert (difference["store"], difference["differs_in"]) == ("fhir/Patient", "count")
    assert (difference["a"]["count"], difference["b"]["count"]) == (2, 3)


def inventory_file(folder: Path, name: str, stores: dict[str, Any]) -> Path:
    path = folder / name
    found = {"format": 1, "stack": "bk", "site": "dic", "taken": "2026-12-05T10:00:00+00:00", "stores": stores}
    path.write_text(json.dumps(found))
    return path


def test_compare_prints_the_stores_that_differ_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = inventory_file(
        tmp_path,
        "a.json",
        {
            "fhir/Patient": {"count": 2, "digest": "1" * 64},
            "fhir/Observation": {"count": 5, "digest": "2" * 64},
            "trustcentre/links": {"count": 1, "digest": "3" * 64},
        },
    )
    second = inventory_file(
        tmp_path,
        "b.json",
        {
            "fhir/Patient": {"count": 2, "digest": "9" * 64},
            "trustcentre/links": {"count": 1, "digest": "3" * 64},
            "trustcentre/consents/MII": {"count": 0, "digest": EMPTY},
        },
    )
    assert main(["compare", str(first), str(second)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["store", "A", "B", "differs", "in"]
    assert [line.split() for line in lines[3:5]] == [
        ["fhir/Observation", "5", "0", "count"],
        ["fhir/Patient", "2", "2", "content"],
    ]
    assert lines[5] == "2 of 4 stores differ"
    assert main(["compare", str(first), str(first)]) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no inventory"),
        ("{", "is not an inventory: Expecting"),
        ('{"format": 2, "stores": {}}', "is not an inventory of format 1"),
        ('{"format": 1, "stores": {"fhir/Patient": {"count": "2"}}}', "store 'fhir/Patient' has no count and digest"),
    ],
)
def test_compare_names_a_file_that_is_no_inventory_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    good = inventory_file(tmp_path, "good.json", {})
    assert main(["compare", str(good), str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hubnode: error: {message}" if content is None else f"hubnode: error: {path}")
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args", [["compare"], ["compare", "a.json"], ["compare", "a.json", "b.json", "--against", "c"]]
)
def test_compare_needs_two_files_or_against(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert "compare takes two inventory files, or --against FILE" in capsys.readouterr().err


def test_an_unwritable_output_is_one_error(
    tmp_path: Path, fake_node: FakeGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    project(tmp_path)
    missing = tmp_path / "no-such-folder" / "x.json"
    assert main(["--project-dir", str(tmp_path), "inventory", "--stack", "bk", "--output", str(missing)]) == 2
    assert f"hubnode: error: --output {missing}: No such file or directory" in capsys.readouterr().err
