"""What the local cluster runs, as data: its folders, each process's command line, and the files they read.

Pure functions of the state folder, the binaries' folders and the Service range, so that the command
lines and configuration files are tested without starting anything (infra/cluster.py starts them).
The recipe is shared/notes/cluster-and-pulumi-engine.md: everything on 127.0.0.1, the node named
`localhost`, its own containerd instance, a bridge CNI network and kube-proxy in nftables mode.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from infra.cluster_pki import ADMIN, CONTROLLER_MANAGER, KUBELET, NODE_NAME, PROXY, SCHEDULER, Client

#: Not 6443, so that a real cluster's API on this host and ours do not collide; nothing in the project uses it.
API_PORT = 16443
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
KUBELET_HEALTHZ_PORT = 10248
PROXY_METRICS_PORT = 10249
PROXY_HEALTHZ_PORT = 10256
POD_RANGE = "10.244.0.0/24"
#: At most 15 characters (an interface name); names the cluster's bridge, so `down` knows what to delete.
BRIDGE = "hubnode-k8s0"
CNI_NETWORK = "hubnode-cluster"
#: The comment on our FORWARD rules: Docker's FORWARD policy is DROP, which drops pod traffic on the bridge.
FORWARD_COMMENT = "hubnode-cluster"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CNI_BIN_DIR = Path("/usr/lib/cni")
#: The tables kube-proxy's nftables mode makes (family, name).
KUBE_PROXY_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))


@dataclass(frozen=True)
class Layout:
    """The cluster's state folder (`<project>/.hubnode/kube/`) and what is where inside it."""

    root: Path
    pki: Path
    logs: Path
    run: Path
    etcd_data: Path
    containerd: Path
    containerd_socket: Path
    cni_conf_dir: Path
    #: host-local's record of the pod addresses it handed out (its `dataDir`).
    ipam_dir: Path
    kubelet_root: Path
    #: The admin's kubeconfig (group system:masters): for kubectl and Pulumi's kubernetes provider.
    kubeconfig: Path
    #: Image reference -> the Docker image id imported under it into the cluster's containerd.
    images_record: Path

    @classmethod
    def at(cls, root: Path) -> Layout:
        """The layout of the state folder `root`."""
        return cls(
            root=root,
            pki=root / "pki",
            logs=root / "logs",
            run=root / "run",
            etcd_data=root / "etcd",
            containerd=root / "containerd",
            containerd_socket=root / "containerd" / "containerd.sock",
            cni_conf_dir=root / "cni" / "net.d",
            ipam_dir=root / "cni" / "ipam",
            kubelet_root=root / "kubelet",
            images_record=root / "images.json",
            kubeconfig=root / "kubeconfig",
        )

    def component_kubeconfig(self, client: Client) -> Path:
        """The kubeconfig a component (controller-manager, scheduler, kubelet, kube-proxy) runs with."""
        return self.root / f"{client.stem}.kubeconfig"

    def log(self, process: str) -> Path:
        """Where a process's output goes."""
        return self.logs / f"{process}.log"

    def pid_file(self, process: str) -> Path:
        """Where a running process's PID is kept."""
        return self.run / f"{process}.pid"

    def purgeable(self) -> tuple[Path, ...]:
        """What `down --purge` deletes besides the runtime leftovers: the API's data and the image store."""
        return (self.etcd_data, self.containerd / "root", self.containerd / "state", self.kubelet_root)


def layout_for(project: Path) -> Layout:
    """The cluster's state folder of a project: `.hubnode/kube/` (`.hubnode/cluster/` is the `cluster` stack's)."""
    return Layout.at(project / ".hubnode" / "kube")


def imported_images(layout: Layout) -> dict[str, str]:
    """Image reference -> the id of the image the cluster holds under it (`hubnode cluster up` imported it)."""
    if not layout.images_record.is_file():
        return {}
    record: dict[str, str] = json.loads(layout.images_record.read_text())
    return record


@dataclass(frozen=True)
class Process:
    """One long-running process of the cluster, started in this order and stopped in the reverse."""

    name: str
    argv: tuple[str, ...]


def processes(layout: Layout, kube_bin: Path, service_range: str) -> tuple[Process, ...]:
    """The cluster's processes with their command lines, in start order."""
    pki = layout.pki
    etcd_url = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer_url = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    return (
        Process(
            "etcd",
            (
                "etcd",
                "--name=hubnode",
                f"--data-dir={layout.etcd_data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=hubnode={peer_url}",
            ),
        ),
        Process(
            "kube-apiserver",
            (
                str(kube_bin / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={API_PORT}",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-cluster-ip-range={service_range}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                "--kubelet-preferred-address-types=Hostname",
            ),
        ),
        Process(
            "kube-controller-manager",
            (
                str(kube_bin / "kube-controller-manager"),
                *_kubeconfig_flags(layout.component_kubeconfig(CONTROLLER_MANAGER)),
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={service_range}",
            ),
        ),
        Process(
            "kube-scheduler",
            (
                str(kube_bin / "kube-scheduler"),
                *_kubeconfig_flags(layout.component_kubeconfig(SCHEDULER)),
                "--bind-address=127.0.0.1",
                "--leader-elect=false",
            ),
        ),
        Process("containerd", ("containerd", f"--config={layout.containerd / 'config.toml'}")),
        Process(
            "kubelet",
            (
                str(kube_bin / "kubelet"),
                f"--config={layout.root / 'kubelet-config.yaml'}",
                f"--kubeconfig={layout.component_kubeconfig(KUBELET)}",
                f"--hostname-override={NODE_NAME}",
                f"--root-dir={layout.kubelet_root}",
            ),
        ),
        Process(
            "kube-proxy",
            (
                str(kube_bin / "kube-proxy"),
                f"--kubeconfig={layout.component_kubeconfig(PROXY)}",
                "--proxy-mode=nftables",
                f"--hostname-override={NODE_NAME}",
                f"--cluster-cidr={POD_RANGE}",
                f"--metrics-bind-address=127.0.0.1:{PROXY_METRICS_PORT}",
                f"--healthz-bind-address=127.0.0.1:{PROXY_HEALTHZ_PORT}",
                # No conntrack sysctls: this host's root may not write them, and a single node needs none.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
            ),
        ),
    )


def _kubeconfig_flags(path: Path) -> tuple[str, ...]:
    return (f"--kubeconfig={path}", f"--authentication-kubeconfig={path}", f"--authorization-kubeconfig={path}")


def kubeconfig(layout: Layout, client: Client) -> str:
    """A kubeconfig for `client` against the local API, naming the PKI folder's files."""
    pki = layout.pki
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "hubnode",
                "cluster": {"server": f"https://127.0.0.1:{API_PORT}", "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": client.user,
                "user": {
                    "client-certificate": str(pki / f"{client.stem}.crt"),
                    "client-key": str(pki / f"{client.stem}.key"),
                },
            }
        ],
        "contexts": [{"name": "hubnode", "context": {"cluster": "hubnode", "user": client.user}}],
        "current-context": "hubnode",
    }
    return yaml.safe_dump(document, sort_keys=False)


def kubeconfigs(layout: Layout) -> dict[Path, str]:
    """The admin's kubeconfig and one per component."""
    files = {layout.kubeconfig: kubeconfig(layout, ADMIN)}
    for client in (CONTROLLER_MANAGER, SCHEDULER, PROXY, KUBELET):
        files[layout.component_kubeconfig(client)] = kubeconfig(layout, client)
    return files


def containerd_config(layout: Layout) -> str:
    """Containerd's own instance: its own root, state and socket, and the CRI plugin set up for this host.

    `restrict_oom_score_adj`: this host's root lacks CAP_SYS_RESOURCE, so the sandbox's oom_score_adj
    of -998 is refused and every pod sandbox fails to start without it.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        (
            "version = 2",
            f'root = "{layout.containerd / "root"}"',
            f'state = "{layout.containerd / "state"}"',
            "",
            "[grpc]",
            f'  address = "{layout.containerd_socket}"',
            "",
            "[ttrpc]",
            f'  address = "{layout.containerd_socket}.ttrpc"',
            "",
            f"[{cri}]",
            f'  sandbox_image = "{PAUSE_IMAGE}"',
            "  restrict_oom_score_adj = true",
            "",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            "",
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            "",
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            "",
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{layout.cni_conf_dir}"',
            "",
        )
    )


def cni_conflist(layout: Layout) -> str:
    """The pod network: a bridge with host-local addresses from the pod range, and hostPort mapping."""
    document = {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_RANGE}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def kubelet_config(layout: Layout) -> str:
    """The kubelet's configuration: loopback only, cgroupfs on this cgroup v1 host, no swap check, images kept."""
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "readOnlyPort": 0,
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        # Images are imported, never pulled: garbage-collecting one would lose it for good.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"nodefs.available": "1%", "imagefs.available": "1%", "memory.available": "100Mi"},
    }
    return yaml.safe_dump(document, sort_keys=False)


def config_files(layout: Layout) -> dict[Path, str]:
    """Every configuration file the processes read (the PKI aside), by path."""
    return {
        **kubeconfigs(layout),
        layout.containerd / "config.toml": containerd_config(layout),
        layout.cni_conf_dir / "10-hubnode.conflist": cni_conflist(layout),
        layout.root / "kubelet-config.yaml": kubelet_config(layout),
    }


def forward_rules() -> tuple[tuple[str, ...], ...]:
    """The FORWARD rules (iptables arguments after the chain) that let pod traffic past Docker's DROP policy."""
    comment = ("-m", "comment", "--comment", FORWARD_COMMENT, "-j", "ACCEPT")
    return (("-d", POD_RANGE, *comment), ("-s", POD_RANGE, *comment))


def containerd_name(reference: str) -> str:
    """The name containerd lists an imported Docker image by: Docker's short names are spelt out in full."""
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return reference
    return f"docker.io/{reference}" if rest else f"docker.io/library/{reference}"


def mounts_under(mountinfo: str, root: Path) -> list[Path]:
    """The mount points at or below `root` in /proc/self/mountinfo's text, deepest first (the order to unmount)."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point == str(root) or point.startswith(prefix):
                points.append(Path(point))
    return sorted(set(points), key=lambda p: (-len(p.parts), str(p)), reverse=False)
