"""`hubnode cluster up|down|status`: a single-node Kubernetes on this host, started and removed whole.

Each process runs detached with a PID file under `<project>/.hubnode/kube/run/` and a log under
`logs/`; `up` starts only what is not running and is safe to repeat; `down` stops by PID and removes
what the cluster put on the host outside its folder (bridge, nftables tables, FORWARD rules, mounts),
so that `leftovers()` is empty afterwards. Needs root (networking, mounts, containerd).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import docker.errors

from infra.bootstrap import docker_client
from infra.cluster_files import (
    API_PORT,
    BRIDGE,
    CNI_NETWORK,
    ETCD_CLIENT_PORT,
    KUBE_PROXY_TABLES,
    KUBELET_HEALTHZ_PORT,
    PAUSE_IMAGE,
    Layout,
    Process,
    config_files,
    containerd_name,
    forward_rules,
    imported_images,
    layout_for,
    mounts_under,
    processes,
)
from infra.cluster_pki import ADMIN, NODE_NAME, issue_all
from infra.errors import HubnodeError
from infra.files import write_atomically
from infra.progress import Progress
from infra.spec import DEFAULT_SERVICE_RANGE
from infra.toolchain import CLUSTER_TOOLS, KUBERNETES, PAUSE, ensure_packages, ensure_tools

START_BUDGET_S = 120
NODE_READY_BUDGET_S = 180
STOP_GRACE_S = 10
PODS_GONE_BUDGET_S = 60
#: The programs a cluster runs (containerd's shims besides its processes): only these are ever stopped by name.
CLUSTER_PROGRAMS = frozenset(
    {
        "etcd",
        "containerd",
        "containerd-shim-runc-v2",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    }
)
#: Where the CNI library caches what each plugin call returned (it creates the folder on first use).
CNI_CACHE = Path("/var/lib/cni")
#: Where the kubelet (cgroupfs driver) puts pods in each cgroup v1 hierarchy.
KUBEPODS_CGROUPS = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Cluster:
    """The cluster of one project folder, with the binaries it runs."""

    layout: Layout
    kube_bin: Path
    service_range: str = DEFAULT_SERVICE_RANGE

    @property
    def processes(self) -> tuple[Process, ...]:
        """The processes in start order."""
        return processes(self.layout, self.kube_bin, self.service_range)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Kubectl as the cluster's admin."""
        command = [str(self.kube_bin / "kubectl"), f"--kubeconfig={self.layout.kubeconfig}", *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise HubnodeError(
                f"kubectl {' '.join(args)} failed: {result.stderr.strip()}",
                fix=f"look at {self.layout.log('kube-apiserver')}; `hubnode cluster status` shows what runs",
            )
        return result

    def ctr_command(self, *args: str) -> list[str]:
        """A ctr command line against the cluster's own containerd, in the namespace the kubelet uses."""
        return ["ctr", f"--address={self.layout.containerd_socket}", "--namespace=k8s.io", *args]

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ctr (see `ctr_command`); its output as text."""
        return subprocess.run(self.ctr_command(*args), capture_output=True, text=True, check=False)


def existing(project: Path) -> Cluster:
    """The project's cluster as `up` last started it (its binaries from the cache, not rebuilt)."""
    layout = layout_for(project)
    return Cluster(layout, _recorded_bin(layout))


def up(project: Path, images: Sequence[str], progress: Progress) -> Cluster:
    """Start whatever of the cluster is not running, import the images, and wait for the node to be Ready."""
    _require_root("start the cluster")
    with progress.step("Debian packages of the cluster"):
        ensure_packages(progress)
    bins = ensure_tools(CLUSTER_TOOLS, progress)
    cluster = Cluster(layout_for(project), bins[KUBERNETES.name])
    layout = cluster.layout
    with progress.step("configuration and certificates"):
        _write_files(layout, cluster.service_range, progress)
        _recorded_bin_file(layout).write_text(str(cluster.kube_bin))
    with progress.step("host networking (FORWARD rules for the pod range)"):
        _add_forward_rules()
    for process in cluster.processes:
        with progress.step(f"start {process.name}"):
            if running_pid(layout, process) is not None:
                progress.note("already running")
            else:
                _start(layout, process)
            _wait_healthy(cluster, process)
    with progress.step("images"):
        _ensure_pause_image(cluster, bins[PAUSE.name], progress)
        import_images(cluster, images, progress)
    with progress.step(f"node {NODE_NAME} Ready"):
        _wait_node_ready(cluster, progress)
    progress.note(f"kubeconfig: {layout.kubeconfig}")
    return cluster


def down(project: Path, progress: Progress, *, purge: bool = False) -> None:
    """Stop every process by its PID and remove what the cluster left on the host; `purge` also deletes its data."""
    _require_root("stop the cluster")
    cluster = existing(project)
    layout = cluster.layout
    by_name = {process.name: process for process in cluster.processes}
    with progress.step("stop the pods"):
        _stop_processes(layout, [by_name["kube-controller-manager"], by_name["kube-scheduler"]], progress)
        _delete_pods(cluster, progress)
    with progress.step("stop the processes"):
        _stop_processes(layout, [by_name["kube-proxy"], by_name["kubelet"]], progress)
        _remove_tasks(cluster, progress)
        _stop_processes(layout, [by_name["containerd"], by_name["kube-apiserver"], by_name["etcd"]], progress)
        _kill_shims(layout, progress)
    with progress.step("host leftovers"):
        _clean_host(layout, progress)
        if purge:
            for path in layout.purgeable():
                _remove_tree(path)
            progress.note("deleted etcd's data, containerd's content and the kubelet's folder")
    left = leftovers(layout)
    if left:
        raise HubnodeError(
            "the cluster left behind: " + "; ".join(left),
            fix="remove these by hand (see `hubnode cluster status`), then run `hubnode cluster down` again",
        )


def status(project: Path) -> dict[str, object]:
    """What runs and answers: each process, the API's readyz, the node's Ready condition, the images present."""
    cluster = existing(project)
    layout = cluster.layout
    running = {p.name: running_pid(layout, p) for p in cluster.processes}
    api_ready = _api_ready(layout)
    node_ready = api_ready and _node_ready(cluster)
    images = _images_present(cluster) if running["containerd"] is not None else []
    return {
        "processes": {name: {"running": pid is not None, "pid": pid} for name, pid in running.items()},
        "apiserver": {"url": f"https://127.0.0.1:{API_PORT}", "ready": api_ready},
        "node": {"name": NODE_NAME, "ready": node_ready},
        "images": images,
        "kubeconfig": str(layout.kubeconfig),
        "leftovers": leftovers(layout) if not any(running.values()) else [],
    }


def leftovers(layout: Layout) -> list[str]:
    """What of the cluster is still on the host: processes, the bridge, nft tables, FORWARD rules, mounts."""
    found = [f"process {pid} ({' '.join(argv[:2])})" for pid, argv in _our_processes(layout)]
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    for family, table in KUBE_PROXY_TABLES:
        if _quiet(["nft", "list", "table", family, table]):
            found.append(f"nft table {family} {table}")
    found.extend(
        f"iptables FORWARD rule {' '.join(rule[:2])}"
        for rule in forward_rules()
        if _quiet(["iptables", "-C", "FORWARD", *rule])
    )
    found.extend(f"mount {point}" for point in mounts_under(_mountinfo(), layout.root))
    if layout.ipam_dir.exists():
        found.append(f"host-local IPAM folder {layout.ipam_dir}")
    found.extend(f"CNI result {path}" for path in _cni_results())
    return found


def import_images(cluster: Cluster, references: Iterable[str], progress: Progress) -> None:
    """Copy Docker's images into the cluster's containerd (`docker save | ctr images import`), skipping those there."""
    imported = imported_images(cluster.layout)
    present = set(_images_present(cluster))
    client = docker_client()
    for reference in references:
        try:
            image = client.images.get(reference)
        except docker.errors.ImageNotFound:
            raise HubnodeError(
                f"Docker has no image {reference}", fix="build the stack's images first: `hubnode images --stack S`"
            ) from None
        if containerd_name(reference) in present and imported.get(reference) == image.id:
            progress.note(f"{reference} already imported")
            continue
        progress.note(f"importing {reference} ({image.short_id})")
        command = cluster.ctr_command("images", "import", "-")
        with subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=0
        ) as ctr:
            assert ctr.stdin is not None  # noqa: S101 (stdin=PIPE)
            try:
                for chunk in image.save(named=reference):
                    ctr.stdin.write(chunk)
            except BrokenPipeError:
                pass  # ctr stopped reading: its exit code and stderr say why
            finally:
                ctr.stdin.close()
            errors = ctr.stderr.read().decode(errors="replace") if ctr.stderr else ""
        if ctr.returncode != 0:
            raise HubnodeError(
                f"importing {reference} into the cluster failed: {errors.strip()}",
                fix=f"containerd's log is {cluster.layout.log('containerd')}; `hubnode cluster status` shows what runs",
            )
        imported[reference] = str(image.id)
        write_atomically(cluster.layout.images_record, json.dumps(imported, indent=2).encode(), 0o644)


def _write_files(layout: Layout, service_range: str, progress: Progress) -> None:
    for folder in (layout.root, layout.logs, layout.run, layout.cni_conf_dir, layout.containerd):
        folder.mkdir(parents=True, exist_ok=True)
    if not (layout.pki / "ca.crt").is_file():
        layout.pki.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, content in issue_all(service_range, datetime.now(UTC)).items():
            write_atomically(layout.pki / name, content, 0o600 if name.endswith(".key") else 0o644)
        progress.note(f"issued the cluster's CA and certificates in {layout.pki}")
    for path, text in config_files(layout).items():
        write_atomically(path, text.encode(), 0o600 if path.suffix == ".kubeconfig" else 0o644)
    layout.kubeconfig.chmod(0o600)


def _recorded_bin_file(layout: Layout) -> Path:
    return layout.run / "kube-bin"


def _recorded_bin(layout: Layout) -> Path:
    """The Kubernetes binaries `up` ran with (so `down` and `status` need no build); a dummy before the first `up`."""
    record = _recorded_bin_file(layout)
    return Path(record.read_text().strip()) if record.is_file() else layout.root / "no-binaries"


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise HubnodeError(
            f"only root can {what} (it sets up networking, mounts and a container runtime)",
            fix="run it with sudo, or as root",
        )


def _start(layout: Layout, process: Process) -> None:
    """Start `process` detached (own session, output to its log) and record its PID once it runs the program."""
    log = layout.log(process.name)
    with log.open("ab") as out:
        child = subprocess.Popen(process.argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    layout.pid_file(process.name).write_text(f"{child.pid}\n")
    # /proc/PID/cmdline can still be empty right after exec; wait until it names the program, or the child exits.
    deadline = time.monotonic() + 5
    while running_pid(layout, process) is None and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def running_pid(layout: Layout, process: Process) -> int | None:
    """The PID of `process` if its PID file names a live process running that program, else None."""
    try:
        pid = int(layout.pid_file(process.name).read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError):
        return None
    return pid if argv[0].decode() == process.argv[0] and state != "Z" else None


def _wait_healthy(cluster: Cluster, process: Process) -> None:
    layout = cluster.layout
    checks: dict[str, Callable[[], bool]] = {
        "etcd": lambda: _http_ok(f"http://127.0.0.1:{ETCD_CLIENT_PORT}/health"),
        "kube-apiserver": lambda: _api_ready(layout),
        "containerd": lambda: cluster.ctr("version").returncode == 0,
        "kubelet": lambda: _http_ok(f"http://127.0.0.1:{KUBELET_HEALTHZ_PORT}/healthz"),
    }
    check = checks.get(process.name, lambda: True)
    deadline = time.monotonic() + START_BUDGET_S
    while True:
        if running_pid(layout, process) is None:
            raise HubnodeError(
                f"{process.name} exited; its log ends:\n{_tail(layout.log(process.name))}",
                fix=f"read {layout.log(process.name)}; `hubnode cluster down` removes the rest",
            )
        if check():
            return
        if time.monotonic() > deadline:
            raise HubnodeError(
                f"{process.name} runs but did not answer within {START_BUDGET_S} s",
                fix=f"read {layout.log(process.name)}; `hubnode cluster down` removes the rest",
            )
        time.sleep(0.5)


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as answer:  # noqa: S310 (our loopback URLs)
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _api_ready(layout: Layout) -> bool:
    pki = layout.pki
    if not (pki / "ca.crt").is_file():
        return False
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / f"{ADMIN.stem}.crt"), str(pki / f"{ADMIN.stem}.key"))
    return _http_ok(f"https://127.0.0.1:{API_PORT}/readyz", context)


def _node_ready(cluster: Cluster) -> bool:
    if not (cluster.kube_bin / "kubectl").is_file():
        return False
    jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
    result = cluster.kubectl("get", "node", NODE_NAME, "-o", f"jsonpath={jsonpath}", check=False)
    return result.returncode == 0 and result.stdout.strip() == "True"


def _wait_node_ready(cluster: Cluster, progress: Progress) -> None:
    """Wait for the node's Ready condition and for the default service account (pods are refused without it)."""
    deadline = time.monotonic() + NODE_READY_BUDGET_S
    while not (_node_ready(cluster) and _default_service_account(cluster)):
        if time.monotonic() > deadline:
            raise HubnodeError(
                f"node {NODE_NAME} is not Ready (or no default service account) after {NODE_READY_BUDGET_S} s",
                fix=f"`kubectl --kubeconfig {cluster.layout.kubeconfig} describe node {NODE_NAME}` says why; "
                f"read {cluster.layout.log('kubelet')} and {cluster.layout.log('kube-controller-manager')}",
            )
        time.sleep(1)
    progress.note(f"node {NODE_NAME} is Ready")


def _default_service_account(cluster: Cluster) -> bool:
    return cluster.kubectl("get", "serviceaccount", "default", "--namespace=default", check=False).returncode == 0


def _ensure_pause_image(cluster: Cluster, pause_bin: Path, progress: Progress) -> None:
    """Build the sandbox image from our pause program (FROM scratch) in Docker; `import_images` copies it over."""
    with tempfile.TemporaryDirectory(prefix="hubnode-pause-") as context:
        shutil.copy(pause_bin / "pause", Path(context) / "pause")
        (Path(context) / "Dockerfile").write_text('FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n')
        docker_client().images.build(path=context, tag=PAUSE_IMAGE, rm=True)
    import_images(cluster, [PAUSE_IMAGE], progress)


def _images_present(cluster: Cluster) -> list[str]:
    result = cluster.ctr("images", "ls", "-q")
    return sorted(line for line in result.stdout.splitlines() if line and not line.startswith("sha256:"))


def _delete_pods(cluster: Cluster, progress: Progress) -> None:
    """Delete every pod while the kubelet runs, so it tears each sandbox's network down (CNI DEL) itself."""
    layout = cluster.layout
    by_name = {p.name: p for p in cluster.processes}
    if running_pid(layout, by_name["kubelet"]) is None or not _api_ready(layout):
        return
    cluster.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=0", "--force", "--wait=false")
    deadline = time.monotonic() + PODS_GONE_BUDGET_S
    while _running_tasks(cluster):
        if time.monotonic() > deadline:
            progress.note(f"pods still running after {PODS_GONE_BUDGET_S} s: removing them through containerd")
            return
        time.sleep(1)
    progress.note("no pod runs")


def _running_tasks(cluster: Cluster) -> list[str]:
    result = cluster.ctr("tasks", "ls")
    return [line.split()[0] for line in result.stdout.splitlines()[1:] if line.split()[-1:] == ["RUNNING"]]


def _remove_tasks(cluster: Cluster, progress: Progress) -> None:
    """Kill what containerd still runs (the kubelet is gone), with each sandbox's network namespace and CNI results."""
    if running_pid(cluster.layout, next(p for p in cluster.processes if p.name == "containerd")) is None:
        return
    tasks = [line.split()[0] for line in cluster.ctr("tasks", "ls").stdout.splitlines()[1:] if line.split()]
    for task in tasks:
        netns = _netns_of(cluster, task)
        cluster.ctr("tasks", "delete", "--force", task)
        if netns is not None and netns.exists():
            _quiet(["umount", str(netns)])
            netns.unlink(missing_ok=True)
        for result in (CNI_CACHE / "results").glob(f"*-{task}-*"):
            result.unlink()  # the CNI DEL that would have removed it never ran
    if tasks:
        progress.note(f"removed {len(tasks)} container(s) left running")


def _netns_of(cluster: Cluster, container: str) -> Path | None:
    result = cluster.ctr("containers", "info", container)
    try:
        namespaces = json.loads(result.stdout)["Spec"]["linux"]["namespaces"]
    except (ValueError, KeyError, TypeError):
        return None
    paths = [n.get("path") for n in namespaces if n.get("type") == "network" and n.get("path")]
    return Path(paths[0]) if paths and paths[0].startswith("/var/run/netns/") else None


def _stop_processes(layout: Layout, chosen: Sequence[Process], progress: Progress) -> None:
    for process in chosen:
        pid = running_pid(layout, process)
        if pid is not None:
            _terminate(pid)
            progress.note(f"stopped {process.name} (pid {pid})")
        layout.pid_file(process.name).unlink(missing_ok=True)


def _terminate(pid: int) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE_S."""
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.2)
        else:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, FileNotFoundError):
        return


def _our_processes(layout: Layout) -> list[tuple[int, list[str]]]:
    """Live processes whose command line names the cluster's folder: its own and containerd's shims."""
    marker = str(layout.root)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        if argv and Path(argv[0]).name in CLUSTER_PROGRAMS and any(marker in arg for arg in argv):
            found.append((int(entry.name), argv))
    return found


def _kill_shims(layout: Layout, progress: Progress) -> None:
    for pid, argv in _our_processes(layout):
        _terminate(pid)
        progress.note(f"stopped leftover {Path(argv[0]).name} (pid {pid})")


def _clean_host(layout: Layout, progress: Progress) -> None:
    for point in mounts_under(_mountinfo(), layout.root):
        _quiet(["umount", "--lazy", str(point)])
        progress.note(f"unmounted {point}")
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _quiet(["ip", "link", "delete", BRIDGE])
        progress.note(f"deleted bridge {BRIDGE}")
    for family, table in KUBE_PROXY_TABLES:
        if _quiet(["nft", "delete", "table", family, table]):
            progress.note(f"deleted nft table {family} {table}")
    for rule in forward_rules():
        while _quiet(["iptables", "-D", "FORWARD", *rule]):
            progress.note(f"deleted FORWARD rule {' '.join(rule[:2])}")
    _remove_tree(layout.ipam_dir)
    for path in _cni_results():
        path.unlink()
    for folder in (CNI_CACHE / "results", CNI_CACHE):
        _quiet(["rmdir", str(folder)])  # only if empty: another CNI user's results stay
    _remove_empty_cgroups()


def _cni_results() -> list[Path]:
    """The CNI library's cached results for our network (one per pod it set up and did not tear down)."""
    return sorted((CNI_CACHE / "results").glob(f"{CNI_NETWORK}-*"))


def _remove_empty_cgroups() -> None:
    """The kubelet's `kubepods` cgroups, deepest first; a cgroup still holding a process stays (rmdir fails)."""
    for hierarchy in KUBEPODS_CGROUPS.glob("*/kubepods"):
        for folder in sorted(hierarchy.rglob("*"), key=lambda p: -len(p.parts)):
            if folder.is_dir():
                _quiet(["rmdir", str(folder)])
        _quiet(["rmdir", str(hierarchy)])


def _add_forward_rules() -> None:
    for rule in forward_rules():
        if not _quiet(["iptables", "-C", "FORWARD", *rule]):
            subprocess.run(["iptables", "-I", "FORWARD", "1", *rule], check=True, capture_output=True)


def _remove_tree(path: Path) -> None:
    if path.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _quiet(command: list[str]) -> bool:
    """Run a host tool, true if it succeeded (false if it is not installed); its output is not needed."""
    try:
        return subprocess.run(command, capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


def _mountinfo() -> str:
    return Path("/proc/self/mountinfo").read_text()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
