"""The local cluster's command lines, configuration files and certificates, checked without starting anything."""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra import cluster_pki
from infra.cluster import Cluster
from infra.cluster_files import (
    API_PORT,
    BRIDGE,
    POD_RANGE,
    Layout,
    config_files,
    containerd_config,
    containerd_name,
    forward_rules,
    imported_images,
    kubelet_config,
    layout_for,
    mounts_under,
    processes,
)
from infra.cluster_pki import API_NAMES, CLIENTS, KUBELET, NODE_NAME, issue_all
from infra.spec import DEFAULT_SERVICE_RANGE
from tests.conftest import PROJECT_DIR

LAYOUT = Layout.at(Path("/p/.hubnode/cluster"))
BIN = Path("/cache/kubernetes-abc/bin")
NOW = datetime(2026, 12, 6, tzinfo=UTC)


def _flags(name: str) -> dict[str, str]:
    process = next(p for p in processes(LAYOUT, BIN, DEFAULT_SERVICE_RANGE) if p.name == name)
    return dict(arg[2:].split("=", 1) for arg in process.argv[1:] if "=" in arg)


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    return issue_all(DEFAULT_SERVICE_RANGE, NOW)


def test_the_cluster_takes_the_service_range_the_stacks_assume() -> None:
    assert Cluster(LAYOUT, BIN).service_range == DEFAULT_SERVICE_RANGE
    assert _flags("kube-apiserver")["service-cluster-ip-range"] == DEFAULT_SERVICE_RANGE
    assert _flags("kube-controller-manager")["service-cluster-ip-range"] == DEFAULT_SERVICE_RANGE


def test_the_pod_and_service_ranges_do_not_overlap() -> None:
    assert not ipaddress.IPv4Network(POD_RANGE).overlaps(ipaddress.IPv4Network(DEFAULT_SERVICE_RANGE))


def test_the_api_port_is_no_port_the_project_uses() -> None:
    """The gateway, services and stacks publish ports in the stack files and the plan; the API must not take one."""
    used = set()
    for path in [*PROJECT_DIR.glob("Pulumi.*.yaml"), *(PROJECT_DIR / "infra").glob("*.py")]:
        if path.name.startswith("cluster"):
            continue
        used.update(int(n) for n in re.findall(r"\b(\d{4,5})\b", path.read_text()))
    assert API_PORT not in used
    assert API_PORT != 6443  # a real cluster's default on the same host


def test_every_process_listens_on_loopback_only() -> None:
    assert _flags("kube-apiserver")["bind-address"] == "127.0.0.1"
    assert _flags("kube-controller-manager")["bind-address"] == "127.0.0.1"
    assert _flags("kube-scheduler")["bind-address"] == "127.0.0.1"
    assert all("127.0.0.1" in url for url in _flags("etcd")["listen-client-urls"].split(","))
    assert _flags("kube-proxy")["healthz-bind-address"].startswith("127.0.0.1:")
    assert yaml.safe_load(kubelet_config(LAYOUT))["address"] == "127.0.0.1"


def test_the_processes_start_in_dependency_order() -> None:
    names = [p.name for p in processes(LAYOUT, BIN, DEFAULT_SERVICE_RANGE)]
    assert names.index("etcd") < names.index("kube-apiserver") < names.index("kube-controller-manager")
    assert names.index("containerd") < names.index("kubelet")
    assert names[-1] == "kube-proxy"


def test_the_kubelet_and_kube_proxy_name_the_node_localhost() -> None:
    assert NODE_NAME == "localhost"
    assert _flags("kubelet")["hostname-override"] == NODE_NAME
    assert _flags("kube-proxy")["hostname-override"] == NODE_NAME
    assert _flags("kube-proxy")["proxy-mode"] == "nftables"
    assert _flags("kube-apiserver")["kubelet-preferred-address-types"] == "Hostname"


def test_the_kubelet_talks_to_the_containerd_instance_it_configures() -> None:
    containerd = tomllib.loads(containerd_config(LAYOUT))
    kubelet = yaml.safe_load(kubelet_config(LAYOUT))
    assert kubelet["containerRuntimeEndpoint"] == f"unix://{containerd['grpc']['address']}"
    cri = containerd["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["cni"]["conf_dir"] == str(LAYOUT.cni_conf_dir)
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is (kubelet["cgroupDriver"] == "systemd")
    assert Path(containerd["root"]).is_relative_to(LAYOUT.root)
    assert Path(containerd["state"]).is_relative_to(LAYOUT.root)
    assert len(str(LAYOUT.containerd_socket)) < 108  # a unix socket path's limit


def test_the_pod_network_is_the_bridge_down_removes() -> None:
    conflist = json.loads(config_files(LAYOUT)[LAYOUT.cni_conf_dir / "10-hubnode.conflist"])
    bridge = conflist["plugins"][0]
    assert bridge["bridge"] == BRIDGE
    assert len(BRIDGE) <= 15  # an interface name's limit
    assert bridge["ipam"]["ranges"] == [[{"subnet": POD_RANGE}]]
    assert bridge["ipam"]["dataDir"] == str(LAYOUT.ipam_dir)
    assert _flags("kube-proxy")["cluster-cidr"] == POD_RANGE


def test_the_forward_rules_accept_the_pod_range_both_ways() -> None:
    rules = forward_rules()
    assert {rule[:2] for rule in rules} == {("-d", POD_RANGE), ("-s", POD_RANGE)}
    assert all(rule[-2:] == ("-j", "ACCEPT") for rule in rules)


def test_every_kubeconfig_names_certificates_the_pki_issues(pki: dict[str, bytes]) -> None:
    for path, text in config_files(LAYOUT).items():
        if path.suffix != ".kubeconfig" and path != LAYOUT.kubeconfig:
            continue
        document = yaml.safe_load(text)
        assert document["clusters"][0]["cluster"]["server"] == f"https://127.0.0.1:{API_PORT}"
        user = document["users"][0]["user"]
        for key in ("client-certificate", "client-key"):
            assert Path(user[key]).parent == LAYOUT.pki
            assert Path(user[key]).name in pki, f"{path} names {user[key]}, which is not issued"


def test_the_component_flags_name_files_the_pki_issues(pki: dict[str, bytes]) -> None:
    for process in processes(LAYOUT, BIN, DEFAULT_SERVICE_RANGE):
        for arg in process.argv[1:]:
            value = arg.partition("=")[2]
            if value.startswith(str(LAYOUT.pki)):
                assert Path(value).name in pki, f"{process.name}: {arg}"


def _certificate(pki: dict[str, bytes], stem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki[f"{stem}.crt"])


def test_each_client_carries_the_user_and_groups_rbac_binds(pki: dict[str, bytes]) -> None:
    for client in CLIENTS:
        subject = _certificate(pki, client.stem).subject
        assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == client.user
        groups = tuple(a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))
        assert groups == client.groups
    assert KUBELET.user == f"system:node:{NODE_NAME}"


def test_the_api_certificate_names_loopback_and_the_first_service_address(pki: dict[str, bytes]) -> None:
    api = _certificate(pki, "apiserver")
    names = {str(n.value) for n in api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value}
    assert names == {*API_NAMES, "10.96.0.1"}
    usages = api.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_every_certificate_is_signed_by_the_cluster_ca(pki: dict[str, bytes]) -> None:
    ca = _certificate(pki, "ca")
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    for stem in ("apiserver", *(c.stem for c in CLIENTS)):
        certificate = _certificate(pki, stem)
        certificate.verify_directly_issued_by(ca)
        assert certificate.not_valid_before_utc <= NOW < certificate.not_valid_after_utc


def test_the_api_service_address_is_the_first_of_the_range() -> None:
    assert cluster_pki.api_service_ip("10.96.0.0/24") == "10.96.0.1"
    assert cluster_pki.api_service_ip("10.100.8.0/22") == "10.100.8.1"


MOUNTINFO = """\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:50 / /p/.hubnode/cluster/kubelet/pods/a/volumes/kubernetes.io~projected/tok rw - tmpfs tmpfs rw
91 22 0:51 / /p/.hubnode/cluster/containerd/state/io.containerd.runtime.v2.task/k8s.io/x/rootfs rw - overlay o rw
92 22 0:52 / /p/.hubnode/cluster2/other rw - tmpfs tmpfs rw
93 22 0:53 / /p/.hubnode/cluster/kubelet/pods/a rw - tmpfs tmpfs rw
94 22 0:54 / /p/.hubnode/cluster/with\\040space rw - tmpfs tmpfs rw
"""


def test_mounts_under_the_state_folder_are_found_deepest_first() -> None:
    found = mounts_under(MOUNTINFO, LAYOUT.root)
    assert Path("/p/.hubnode/cluster2/other") not in found
    assert Path("/p/.hubnode/cluster/with space") in found
    assert len(found) == 4
    assert found.index(Path("/p/.hubnode/cluster/kubelet/pods/a")) > found.index(
        Path("/p/.hubnode/cluster/kubelet/pods/a/volumes/kubernetes.io~projected/tok")
    )


def test_purge_deletes_data_but_keeps_the_certificates_and_logs() -> None:
    purged = LAYOUT.purgeable()
    assert LAYOUT.etcd_data in purged
    assert all(path.is_relative_to(LAYOUT.root) for path in purged)
    assert LAYOUT.pki not in purged
    assert LAYOUT.logs not in purged


@pytest.mark.parametrize(
    ("reference", "listed"),
    [
        ("hubnode/gateway:0.1.0", "docker.io/hubnode/gateway:0.1.0"),
        ("postgres:17", "docker.io/library/postgres:17"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("localhost:5000/hubnode/hapi:1", "localhost:5000/hubnode/hapi:1"),
        ("localhost/x:1", "localhost/x:1"),
    ],
)
def test_an_image_is_looked_up_by_the_name_containerd_lists(reference: str, listed: str) -> None:
    assert containerd_name(reference) == listed


def test_the_images_the_cluster_holds_are_read_from_the_import_record(tmp_path: Path) -> None:
    layout = layout_for(tmp_path)
    assert imported_images(layout) == {}, "no cluster started here: no record"
    layout.images_record.parent.mkdir(parents=True)
    layout.images_record.write_text('{"hubnode/connector:0.1.0": "sha256:abc"}')
    assert imported_images(layout) == {"hubnode/connector:0.1.0": "sha256:abc"}
    assert layout.images_record == tmp_path / ".hubnode" / "kube" / "images.json"
