"""Launch node plans on this host with testcontainers: the developers' and CI's `pulumi up`.

Translates each `ServicePlan` 1:1 into a container (image, env, ports on 127.0.0.1, volumes,
secret files, network aliases, labels, health check, user, confinement), starts them in dependency
order and waits for each to pass the plan's own health check. Each container carries the hash of what
it was started with, so `up` again replaces only the containers whose plan, image or files changed.
Everything it creates carries the stack label, so `down` finds and removes it all, even after a
crash or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import httpx
from docker.models.containers import Container
from docker.types import Mount
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network

from infra.errors import HubnodeError
from infra.federation_files import FederationFiles
from infra.plan import (
    DROPPED_CAPABILITIES,
    FEDERATION_FILES,
    LABEL_PREFIX,
    RESTART_POLICY,
    ConfigFile,
    NodePlan,
    SecretFile,
    ServicePlan,
    owner_of,
)
from infra.progress import Progress

# The reaper container would have to be pulled from a registry this host cannot reach; `down`
# and the stack labels do its job.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

STACK_LABEL = f"{LABEL_PREFIX}.stack"
#: The hash of what a container was started with: `up` keeps a running container whose hash is unchanged.
CONFIG_LABEL = f"{LABEL_PREFIX}.config-hash"
HEALTH_POLL_S = 0.25
WAITING_NOTE_EVERY_S = 15.0
#: How often a starting service's log is looked at for progress.
LOG_LOOK_EVERY_S = 5.0
#: A service past its health budget whose log advanced this recently is still starting: wait on.
PROGRESS_GRACE_S = 60.0
#: However its log advances, a service gets at most this many times its health budget.
BUDGET_STRETCH = 3
#: JVMs (HAPI, Keycloak) that start at once, per two cores: more only slows each of them down.
SLOW_STARTS_PER_TWO_CORES = 1
LOG_TAIL_LINES = 25
STOP_TIMEOUT_S = 30
#: How long a published endpoint may take to answer once its container is healthy: HAPI builds its
#: CapabilityStatement on the first `/metadata`, which takes seconds while other JVMs start beside it.
ENDPOINT_BUDGET_S = 90.0
_NANOSECONDS = 1_000_000_000


@dataclass(frozen=True)
class Change:
    """What `up` does to one container: `keep`, `replace`, `start` or `remove` it, and why."""

    site: str
    component: str
    action: str
    reason: str


@dataclass(frozen=True)
class Removed:
    """What `down` removed."""

    containers: int
    networks: int
    volumes: int


def secret_file(state_dir: Path, site: str, secret: SecretFile | str) -> Path:
    """The host file holding one node's secret, made once and then kept.

    Random; given by the site (`provided`: refused when missing); or derived from other secrets by
    the plan's rule (the trust centre's callers file holds the hash of the admin token, which stays
    beside it for the site's tools and tests); derived files are made anew each time, so they follow
    the plan. Kept so a restarted database still accepts the password it was initialised with.
    Folder and file are owner-only; containers get their own copies (`mounted_copy`).
    """
    site, name = owner_of(site, secret if isinstance(secret, str) else secret.name)
    derived = None if isinstance(secret, str) else secret.derived
    folder = state_dir / "secrets" / site
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    path = folder / name
    if not isinstance(secret, str) and secret.provided and not path.is_file():
        raise HubnodeError(
            f"{site}: {path} is missing; it holds a credential the site gives (its own trust centre's token)",
            fix=f"write the token into {path} (owner-only: chmod 600), then run again",
        )
    if derived is not None:
        content = derived.render(
            {source: secret_file(state_dir, site, source).read_text() for source in derived.sources}
        )
        path.unlink(missing_ok=True)
    elif path.is_file():
        return path
    else:
        content = secrets.token_urlsafe(32)
    path.write_text(content)
    path.chmod(0o600)
    return path


def config_file(state_dir: Path, site: str, component: str, file: ConfigFile) -> Path:
    """The host copy of a plan's config file, rewritten when the plan changed it."""
    path = state_dir / "files" / site / component / file.path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != file.content:
        path.unlink(missing_ok=True)
        path.write_text(file.content)
        path.chmod(0o444)
    return path


class LocalLauncher:
    """Starts, inspects and removes the containers of node plans on one Docker engine.

    `federation_files` supplies the certificates, keys and allow list of a federation stack;
    `trust` is the CA file that the gateways' certificates are checked against when probing them.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        progress: Progress,
        state_dir: Path,
        federation_files: FederationFiles | None = None,
        trust: Path | None = None,
    ) -> None:
        self._client = client
        self._progress = progress
        self._state_dir = state_dir
        self._federation_files = federation_files
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(trust)) if trust else True
        self._slow_starts = threading.BoundedSemaphore(max(1, SLOW_STARTS_PER_TWO_CORES * (os.cpu_count() or 2) // 2))

    def up(self, plans: Iterable[NodePlan]) -> None:
        """Bring every node to its plan (nodes side by side); on any failure (or Ctrl-C) remove the stack.

        A container whose configuration (image, settings, files) is what the plan says and that is
        running is kept as it is, so running `up` again restarts only what changed; containers the
        plans no longer name are removed.
        """
        plans = tuple(plans)
        stacks = {plan.stack for plan in plans}
        existing = self._containers(stacks)
        wanted = {service.container_name for plan in plans for service in plan.services}
        left = [container for name, container in existing.items() if name not in wanted]
        for container in left:
            _remove(container)
        if left:
            self._progress.note(f"removed {len(left)} container(s) that the stack no longer names")
        for plan in plans:
            _check_ports_free(plan, held_by_us={name for name in existing if name in wanted})
        try:
            for stack, network in sorted({(plan.stack, plan.peers_network) for plan in plans if plan.peers_network}):
                if not self._client.networks.list(names=[network]):
                    self._client.networks.create(network, labels={STACK_LABEL: stack})
            with ThreadPoolExecutor(max_workers=len(plans) or 1) as pool:
                for started in [pool.submit(self._start_node, plan, existing) for plan in plans]:
                    started.result()
            for plan in plans:
                self._check_endpoints(plan)
        except BaseException:
            for stack in stacks:
                self.down(stack)
            raise

    def changes(self, plans: Iterable[NodePlan]) -> list[Change]:
        """What `up` would do to each container (`--dry-run`): keep, replace, start or remove it.

        Starts and stops nothing; the host copies of files are brought up to date as `up` would, since
        the decision compares them with what the running container was given.
        """
        plans = tuple(plans)
        existing = self._containers({plan.stack for plan in plans})
        found = []
        for plan in plans:
            for service in plan.services:
                action, reason = self._change(plan, service, existing.pop(service.container_name, None))
                found.append(Change(plan.site, service.component, action, reason))
        for name, container in existing.items():
            site = container.labels.get(f"{LABEL_PREFIX}.site", "?")
            found.append(Change(site, name, "remove", "the stack no longer names it"))
        return found

    def down(self, stack: str, *, remove_volumes: bool = False) -> Removed:
        """Remove every container and network (and, if asked, volume) labelled with `stack`."""
        selector = _of(stack)
        containers = self._client.containers.list(all=True, filters=selector)
        # Newest first, so dependents stop before what they depend on.
        for container in sorted(containers, key=lambda c: str(c.attrs["Created"]), reverse=True):
            _remove(container)
        networks = self._client.networks.list(filters=selector)
        for network in networks:
            network.remove()
        volumes = self._client.volumes.list(filters=selector) if remove_volumes else []
        for volume in volumes:
            volume.remove(force=True)
        return Removed(len(containers), len(networks), len(volumes))

    def node_containers(self, plan: NodePlan) -> list[Container]:
        """The node's containers, running or not, found by its labels (stack and site)."""
        labels = [f"{STACK_LABEL}={plan.stack}", f"{LABEL_PREFIX}.site={plan.site}"]
        return list(self._client.containers.list(all=True, filters={"label": labels}))

    @contextlib.contextmanager
    def stopped(self, plan: NodePlan) -> Iterator[None]:
        """The node's running containers stopped for the block, then started again and waited for until healthy.

        A cold backup's window: dependents stop first (the reverse of the plan's start order), and the
        containers start again in the plan's order also when the block fails, each waited for as `up` does.
        """
        order = {service.container_name: index for index, service in enumerate(plan.services)}
        running = sorted(
            (c for c in self.node_containers(plan) if c.status == "running"),
            key=lambda c: order.get(str(c.name), len(order)),
        )
        for container in reversed(running):
            container.stop(timeout=STOP_TIMEOUT_S)
        try:
            yield
        finally:
            services = {service.container_name: service for service in plan.services}
            for container in running:
                container.start()
                if (service := services.get(str(container.name))) is not None:
                    self._wait_healthy(plan, service, container)
            if running:
                self._check_endpoints(plan)

    def status(self, plans: Iterable[NodePlan]) -> list[dict[str, Any]]:
        """Each node's endpoints, its containers' state and health, and whether its endpoints answer."""
        report = []
        for plan in plans:
            services = {service.component: self._service_status(service) for service in plan.services}
            report.append(node_report(plan, services, self._verify))
        return report

    def _service_status(self, service: ServicePlan) -> dict[str, str]:
        """State from Docker; health from running the plan's check now (Docker's own lags by an interval)."""
        try:
            container = self._client.containers.get(service.container_name)
        except docker.errors.NotFound:
            return {"container": service.container_name, "state": "absent", "health": "absent"}
        if container.status != "running":
            return {"container": service.container_name, "state": container.status, "health": "unhealthy"}
        health = "healthy" if _passes_health_check(container, service) else "unhealthy"
        return {"container": service.container_name, "state": container.status, "health": health}

    def _start_node(self, plan: NodePlan, existing: Mapping[str, Container]) -> None:
        network = Network(docker_network_kw={"labels": dict(plan.labels)})
        network.name = plan.network
        if not self._client.networks.list(names=[plan.network]):
            network.create()
        for volume in plan.volumes:
            self._client.volumes.create(volume, labels=dict(plan.labels))
        for service in plan.services:
            mounts = self._file_mounts(plan, service)
            digest = self._config_hash(service, mounts)
            container = existing.get(service.container_name)
            if container is not None and container.status == "running" and container.labels.get(CONFIG_LABEL) == digest:
                self._progress.note(f"{plan.site}: {service.component} unchanged, kept running")
                self._wait_healthy(plan, service, container)
                continue
            if container is not None:
                self._progress.note(f"{plan.site}: replacing {service.component} (its configuration changed)")
                _remove(container)
            with self._slow_starts if service.slow_start else contextlib.nullcontext():
                self._progress.note(f"{plan.site}: starting {service.component} ({service.image.reference})")
                self._wait_healthy(plan, service, self._start_service(plan, service, network, mounts, digest))

    def _change(self, plan: NodePlan, service: ServicePlan, container: Container | None) -> tuple[str, str]:
        if container is None:
            return "start", "not running"
        if container.status != "running":
            return "replace", f"it is {container.status}"
        if container.labels.get(CONFIG_LABEL) != self._config_hash(service, self._file_mounts(plan, service)):
            return "replace", "its image, settings or files changed"
        return "keep", "unchanged"

    def _containers(self, stacks: Iterable[str]) -> dict[str, Container]:
        """The containers of `stacks` by name, running or not."""
        return {str(c.name): c for stack in stacks for c in self._client.containers.list(all=True, filters=_of(stack))}

    def _config_hash(self, service: ServicePlan, mounts: Mapping[str, str]) -> str:
        """What decides a container: the plan of its service, the image it runs, the files it is given."""
        digest = hashlib.sha256(repr(service).encode())
        with contextlib.suppress(docker.errors.ImageNotFound):  # starting it then fails with the reason
            digest.update(str(self._client.images.get(service.image.reference).id).encode())
        for host_path, container_path in sorted(mounts.items(), key=lambda item: item[1]):
            digest.update(container_path.encode())
            digest.update(hashlib.sha256(Path(host_path).read_bytes()).digest())
        return digest.hexdigest()

    def _start_service(
        self, plan: NodePlan, service: ServicePlan, network: Network, mounts: Mapping[str, str], digest: str
    ) -> Container:
        container = container_for(service, network, mounts, {CONFIG_LABEL: digest})
        try:
            container.start()
        except docker.errors.ImageNotFound as exc:
            raise HubnodeError(
                f"image {service.image.reference} for {plan.site}/{service.component} is not on this host: {exc}",
                fix="run `hubnode images` (local builds) or make the registry reachable",
            ) from exc
        except docker.errors.APIError as exc:
            raise HubnodeError(
                f"Docker refused to start {service.container_name}: {exc.explanation or exc}",
                fix="see the message above; `hubnode down` removes what is left",
            ) from exc
        wrapped: Container = container.get_wrapped_container()
        for attachment in service.networks:
            self._client.networks.get(attachment.network).connect(wrapped, aliases=list(attachment.aliases))
        return wrapped

    def _file_mounts(self, plan: NodePlan, service: ServicePlan) -> dict[str, str]:
        """Secret and config files of a service: host copy -> path in the container."""
        mounts = {
            str(self._mounted_copy(plan, service, secret.name, self._secret_file(plan, secret))): secret.path
            for secret in service.secrets
        }
        for file in service.files:
            mounts[str(config_file(self._state_dir, plan.site, service.component, file))] = file.path
        return mounts

    def _mounted_copy(self, plan: NodePlan, service: ServicePlan, name: str, source: Path) -> Path:
        """A copy of a secret file for one container, readable by the container's user alone (0400, its uid).

        Each container gets its own copy because two containers of a node may run as different users
        (PostgreSQL and HAPI both read the database password). Changing the owner needs root; without it,
        the copy stays readable by every user (as the note says), which is all a non-root Docker user can do.
        """
        folder = self._state_dir / "mounts" / plan.site / service.component
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / name
        content = source.read_bytes()
        if path.is_file() and path.read_bytes() == content and path.stat().st_uid == service.uid:
            return path  # a running container may be reading it
        path.unlink(missing_ok=True)
        path.write_bytes(content)
        try:
            os.chown(path, service.uid, service.uid)
        except PermissionError:
            path.chmod(0o444)
            self._progress.note(f"{plan.site}/{service.component}: not root, so {name} is readable by every user")
        else:
            path.chmod(0o400)
        return path

    def _secret_file(self, plan: NodePlan, secret: SecretFile) -> Path:
        if secret.name not in FEDERATION_FILES:
            return secret_file(self._state_dir, plan.site, secret)
        if self._federation_files is None:
            raise HubnodeError(
                f"{plan.site}/{secret.name}: a federation node needs its PKI files, and none were given",
                fix="bring federation stacks up with `hubnode up`, which issues them",
            )
        return self._federation_files(plan.site, secret.name)

    def _check_endpoints(self, plan: NodePlan) -> None:
        """Every published endpoint answers from this host (each within ENDPOINT_BUDGET_S)."""
        for name, url in plan.probes.items():
            deadline = time.monotonic() + ENDPOINT_BUDGET_S
            while not answers(url, self._verify, timeout=max(1.0, min(15.0, deadline - time.monotonic()))):
                if time.monotonic() >= deadline:
                    raise HubnodeError(
                        f"{plan.site}: {name} is healthy inside its container but {url} does not answer"
                        f" within {ENDPOINT_BUDGET_S:.0f} s",
                        fix="check that nothing on this host intercepts 127.0.0.1 traffic (proxy settings: NO_PROXY)",
                    )
                self._progress.note(f"{plan.site}: waiting for {url} to answer")
                time.sleep(1.0)

    def _wait_healthy(self, plan: NodePlan, service: ServicePlan, container: Container) -> None:
        """Wait until the plan's own health check passes, the container dies or it stops getting anywhere.

        A healthy container gets the plan's restart policy (RESTART_POLICY), as `pulumi up` gives it.

        Where the service has a probe URL on this host, that is polled first and the health check
        run once it answers: each `docker exec` costs CPU that a starting JVM on two cores misses.
        Past its budget a service whose log still advances is still starting (a JVM on a busy machine),
        so it gets up to `BUDGET_STRETCH` times the budget while its log moves.
        """
        budget = service.health.budget_s
        started = last_note = last_look = advanced = time.monotonic()
        looked = int(time.time())
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs["State"].get("ExitCode")
                raise _service_failed(plan, service, container, f"exited with code {code}")
            ready = service.probe_url is None or answers(service.probe_url, self._verify, timeout=2.0)
            if ready and _passes_health_check(container, service):
                # Only now: a service that dies while starting fails the bring-up with its own exit code;
                # one that dies later (the kernel's OOM killer, a crash) Docker starts again.
                # (types-docker lists only "always" and "on-failure"; the Engine API takes "unless-stopped" too)
                container.update(restart_policy={"Name": RESTART_POLICY})  # type: ignore[arg-type]
                self._progress.note(f"{plan.site}: {service.component} is healthy")
                return
            now = time.monotonic()
            if now - last_look > LOG_LOOK_EVERY_S:
                if container.logs(since=looked, tail=1):
                    advanced = now
                looked, last_look = int(time.time()), now
            if now - last_note > WAITING_NOTE_EVERY_S:
                past = "" if now - started <= budget else f" (past its {budget} s budget, but its log advances)"
                self._progress.note(f"{plan.site}: waiting for {service.component} to pass its health check{past}")
                last_note = now
            if now - started > budget and (
                now - advanced > PROGRESS_GRACE_S or now - started > budget * BUDGET_STRETCH
            ):
                stalled = f"not healthy within {now - started:.0f} s; its log last advanced {now - advanced:.0f} s ago"
                raise _service_failed(plan, service, container, stalled)
            time.sleep(HEALTH_POLL_S)


def container_for(
    service: ServicePlan, network: Network, file_mounts: Mapping[str, str], labels: Mapping[str, str] | None = None
) -> DockerContainer:
    """The testcontainers container for a service plan: a 1:1 translation, plus the launcher's own `labels`."""
    container = DockerContainer(service.image.reference)
    container.with_name(service.container_name)
    container.with_envs(**service.env)
    for port in service.ports:
        # testcontainers types host ports as int; docker-py also takes (ip, port) to bind one address.
        container.ports[f"{port.container_port}/tcp"] = (port.host_ip, port.host_port)  # type: ignore[assignment]
    for volume in service.volumes:
        container.with_volume_mapping(volume.volume, volume.path, "rw")
    for host_path, container_path in file_mounts.items():
        container.with_volume_mapping(host_path, container_path, "ro")
    container.with_network(network)
    container.with_network_aliases(*service.network_aliases)
    health, hardening = service.health, service.hardening
    container.with_kwargs(
        labels={**service.labels, **(labels or {})},
        user=service.user,
        healthcheck={
            "test": list(health.test),
            "interval": health.interval_s * _NANOSECONDS,
            "timeout": health.timeout_s * _NANOSECONDS,
            "retries": health.retries,
            "start_period": health.start_period_s * _NANOSECONDS,
        },
        cap_drop=list(DROPPED_CAPABILITIES),
        cap_add=list(hardening.capabilities),
        security_opt=list(hardening.security_options),
        read_only=hardening.read_only_root,
        # As mounts rather than docker-py's `tmpfs`, which testcontainers (4.15) sets itself.
        mounts=[Mount(t.path, None, "tmpfs", tmpfs_size=t.size_bytes) for t in hardening.tmpfs],
        mem_limit=f"{hardening.memory_mib}m",
        # Swap as large as the memory limit means none: without it Docker allows as much swap again.
        memswap_limit=f"{hardening.memory_mib}m",
        pids_limit=hardening.pids,
    )
    return container


def _passes_health_check(container: Container, service: ServicePlan) -> bool:
    """Run the plan's health check inside the container, as Docker would."""
    test = service.health.test
    command = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else list(test[1:])
    try:
        return bool(container.exec_run(command, user=service.user).exit_code == 0)
    except docker.errors.APIError:
        return False  # it stopped since we looked; the caller's next look says why


def _service_failed(plan: NodePlan, service: ServicePlan, container: Container, why: str) -> HubnodeError:
    logs = container.logs(tail=LOG_TAIL_LINES).decode(errors="replace").rstrip()
    return HubnodeError(
        f"{plan.site}/{service.component} ({service.container_name}) {why}; its last log lines:\n{logs}",
        fix=(
            "read the log lines above; the stack's containers were removed and its data volumes kept, so fix "
            "the cause and run `hubnode up` again (`hubnode down --volumes` first to start from empty)"
        ),
    )


def _check_ports_free(plan: NodePlan, held_by_us: set[str]) -> None:
    """Every port the plan publishes is free, or held by one of the stack's own containers (`held_by_us`)."""
    for service in plan.services:
        if service.container_name in held_by_us:
            continue
        for port in service.ports:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # SO_REUSEADDR: connections in TIME_WAIT (a node just taken down) do not count as in use.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((port.host_ip, port.host_port))
                except OSError:
                    raise HubnodeError(
                        f"port {port.host_port} on {port.host_ip} (hubnode:ports.{service.component} of "
                        f"site {plan.site}) is already in use by another program",
                        fix=f"stop that program, or set another hubnode:ports.{service.component} in the stack file",
                    ) from None


def _of(stack: str) -> dict[str, str | list[str] | bool]:
    """The Docker filter for what belongs to a stack."""
    return {"label": f"{STACK_LABEL}={stack}"}


def _remove(container: Container) -> None:
    """Stop gracefully (databases flush; H2 delays its writes), then remove; volumes stay."""
    if container.status == "running":
        container.stop(timeout=STOP_TIMEOUT_S)
    container.remove(force=True, v=False)


def node_report(plan: NodePlan, services: dict[str, dict[str, str]], verify: ssl.SSLContext | bool) -> dict[str, Any]:
    """One node in `hubnode status`, on any platform: up when every service is healthy and its endpoints answer."""
    answering = all(answers(url, verify) for url in plan.probes.values())
    if answering and all(s["health"] == "healthy" for s in services.values()):
        health = "up"
    elif any(s["state"] == "running" for s in services.values()):
        health = "degraded"
    else:
        health = "down"
    return {
        "site": plan.site,
        "role": plan.role,
        "health": health,
        "endpoints": dict(plan.endpoints),
        "services": services,
    }


def answers(url: str, verify: ssl.SSLContext | bool, timeout: float = 10.0) -> bool:
    """Whether `url` answers 200 now (TLS checked against `verify`)."""
    try:
        # FHIR servers answer FHIR JSON; Keycloak's discovery document only `application/json` (406 otherwise).
        accept = "application/fhir+json, application/json;q=0.9"
        response = httpx.get(url, timeout=timeout, verify=verify, headers={"Accept": accept})
    except httpx.HTTPError:
        return False
    return response.status_code == 200
