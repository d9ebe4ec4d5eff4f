"""`hubnode deploy`: the stack's Pulumi program run by a real Pulumi engine, as site IT's `pulumi up` would.

The engine is the Pulumi CLI built from Go modules (`infra.toolchain`), driven through the Automation API
with the program inline (`infra.program.declare_stack` in this process: no language host is needed). The
state lives in a local file backend under `.hubnode/pulumi/`, encrypted with a passphrase kept in a file
beside the stack's other secrets; the only provider is pulumi-kubernetes, installed from the binary the
toolchain built (plugin downloads are off: this machine reaches no plugin server). Docker stacks stay with
`hubnode up`: pulumi-docker's provider cannot be built from the registries here.

Each stack gets a work folder of its own (`.hubnode/pulumi/<stack>/`), so the committed stack file is
never rewritten: its `config:` is copied in on every run, and the stack's secrets (database password,
tokens) are made once as Pulumi secrets there and kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import HubnodeError
from infra.files import create_private, write_atomically
from infra.kube_manifests import local_volume_path
from infra.plan import NodePlan, owner_of
from infra.progress import Progress
from infra.spec import NAMESPACE, SECRET_KEYS, SECRET_SOURCES, StackSpec
from infra.stackfile import stack_config_map, stack_file
from infra.state import StackState
from infra.targets_file import CONNECTOR_TOKENS, TRUSTCENTRE_TOKENS
from infra.toolchain import PULUMI, PULUMI_KUBERNETES, binary, ensure_tools
from infra.toolchain import PULUMI_KUBERNETES_VERSION as PROVIDER_VERSION

PROVIDER = "kubernetes"
#: The Pulumi project every stack of a hubnode project belongs to (its name in Pulumi.yaml).
PULUMI_PROJECT = "hubnode"
PASSPHRASE_FILE = "pulumi-passphrase"  # noqa: S105 -- a file name
#: The secret files kept on the host after `up`: the tokens the suite (targets file) reads.
OPERATOR_TOKENS = frozenset({*CONNECTOR_TOKENS, *TRUSTCENTRE_TOKENS})


@dataclass(frozen=True)
class PulumiPlaces:
    """Where one project's Pulumi engine keeps its state, its plugins and each stack's work folder."""

    project_dir: Path

    @property
    def root(self) -> Path:
        """`.hubnode/pulumi/`."""
        return self.project_dir / ".hubnode" / "pulumi"

    @property
    def backend(self) -> str:
        """The file backend's URL (every stack of the project in one folder, as `pulumi login file://`)."""
        return (self.root / "state").as_uri()

    @property
    def home(self) -> Path:
        """`PULUMI_HOME`: the engine's plugins and settings, apart from any of the user's own."""
        return self.root / "home"

    def state_files(self, stack: str) -> list[Path]:
        """The file backend's record of what the stack deployed (`<stack>.json`, `.bak`, `.attrs`) and its locks."""
        locks = self.root / "state" / ".pulumi" / "locks" / "organization" / PULUMI_PROJECT / stack
        return sorted([*self._records.glob(f"{stack}.json*"), *locks.glob("*.json")])

    def deployed_stacks(self) -> list[str]:
        """The stacks the backend holds a record of."""
        return sorted(path.name.removesuffix(".json") for path in self._records.glob("*.json"))

    @property
    def _records(self) -> Path:
        return self.root / "state" / ".pulumi" / "stacks" / PULUMI_PROJECT

    def work_dir(self, stack: str) -> Path:
        """The stack's workspace: its Pulumi.yaml and Pulumi.<stack>.yaml (with the encrypted secrets)."""
        return self.root / stack

    def passphrase_file(self, stack: str) -> Path:
        """The passphrase that encrypts the stack's secrets and state, kept with the stack's other secrets."""
        return self.project_dir / ".hubnode" / stack / PASSPHRASE_FILE


def forget_own_cluster_stacks(places: PulumiPlaces) -> list[str]:
    """Drop the record of every stack deployed on the project's own cluster, whose data was purged: their names.

    Their resources went with the cluster's etcd; a record still listing them would make the next deploy
    update namespaces that no longer exist; a lock left by a deploy that was stopped goes too. The stacks'
    secrets stay (the volumes' databases were made with them), and so do stacks on a cluster their file
    names (`kubernetes:kubeconfig`).
    """
    forgotten = []
    for stack in places.deployed_stacks():
        if not stack_file(places.project_dir, stack).is_file():
            continue
        if "kubernetes:kubeconfig" in stack_config_map(places.project_dir, stack):
            continue
        for path in places.state_files(stack):
            path.unlink()
        forgotten.append(stack)
    return forgotten


def ensure_passphrase(path: Path) -> Path:
    """Make the passphrase once (owner-only) and keep it: without it the stack's state cannot be read."""
    if not path.is_file():
        create_private(path, secrets.token_urlsafe(32).encode(), 0o600)
    return path


def engine_env(places: PulumiPlaces, stack: str, kubeconfig: Path | None) -> dict[str, str]:
    """What the engine (and the provider it starts) needs in its environment, and nothing that reaches out."""
    env = {
        "PULUMI_HOME": str(places.home),
        "PULUMI_CONFIG_PASSPHRASE_FILE": str(places.passphrase_file(stack)),
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_SKIP_CONFIRMATIONS": "true",
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def plain_config(config: Mapping[str, Any]) -> dict[str, str]:
    """The stack file's keys as the engine stores them: text, structured values as JSON (`infra.pulumi_config`)."""
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in config.items()
        if not (isinstance(value, dict) and "secure" in value)
    }


def missing_secrets(present: set[str]) -> list[str]:
    """The stack's secret keys not yet set (`hubnode:dbPassword`, ...): each is made once, at random."""
    return [f"{NAMESPACE}:{key}" for key in SECRET_KEYS if f"{NAMESPACE}:{key}" not in present]


def host_volumes(plans: tuple[NodePlan, ...], host_path: str) -> dict[Path, int]:
    """Each claim's folder on the cluster's node -> the uid of the service that writes it.

    A hostPath volume is not made over to the pod's user (fsGroup does not reach it), so the folder is
    made beforehand with the owner the plan gives the service, as the images' own volumes are.
    """
    owners: dict[Path, int] = {}
    for plan in plans:
        for service in plan.services:
            for mount in service.volumes:
                owners[Path(local_volume_path(host_path, mount.volume))] = service.uid
    return owners


def make_host_volumes(owners: Mapping[Path, int]) -> None:
    """Make each folder (owner-only) for its user; a folder already there keeps its data and gets its owner back."""
    for folder, uid in owners.items():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chown(folder, uid, uid)
        folder.chmod(0o700)


@dataclass(frozen=True)
class Deployed:
    """What a run leaves: the stack's plain outputs, and the values of its `hubnode:` secrets by key."""

    outputs: dict[str, Any]
    secrets: dict[str, str]


def keep_tokens(state: StackState, plans: tuple[NodePlan, ...], secrets: Mapping[str, str]) -> list[Path]:
    """Copy the tokens the suite and site IT call the nodes with into the files `hubnode up` keeps (owner-only).

    On Kubernetes the Pulumi secret is the source; the file beside the stack is rewritten from it on every
    `up`, so `hubnode check` (through the targets file) and an operator's own calls find it where they do on
    Docker. Only these tokens: database passwords and the like stay inside the stack's encrypted state.
    """
    kept = []
    for plan in plans:
        files = [secret for service in plan.services for secret in service.secrets]
        names = [name for secret in files for name in (secret.derived.sources if secret.derived else (secret.name,))]
        own = {owner_of(plan.site, name) for name in names}
        for name in sorted(name for site, name in own if site == plan.site and name in OPERATOR_TOKENS):
            path = state.secrets_dir(plan.site) / name
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomically(path, secrets[SECRET_SOURCES[name]].encode(), 0o600)
            kept.append(path)
    return kept


@dataclass(frozen=True)
class Engine:
    """The Pulumi CLI and the kubernetes provider the toolchain built."""

    cli: Path
    provider: Path

    @classmethod
    def built(cls, progress: Progress) -> Engine:
        """The toolchain's binaries, built first if its cache has none (about 10 minutes cold)."""
        bins = ensure_tools((PULUMI, PULUMI_KUBERNETES), progress)
        return cls(binary(bins, PULUMI, "pulumi"), binary(bins, PULUMI_KUBERNETES, "pulumi-resource-kubernetes"))

    def install_provider(self, env: Mapping[str, str]) -> None:
        """Put the built provider into the engine's plugin folder once (the engine looks nowhere else)."""
        installed = Path(env["PULUMI_HOME"]) / "plugins" / f"resource-{PROVIDER}-v{PROVIDER_VERSION}"
        if installed.is_dir():
            return
        command = [str(self.cli), "plugin", "install", "resource", PROVIDER, PROVIDER_VERSION, "--file"]
        result = subprocess.run(
            [*command, str(self.provider)], env={**os.environ, **env}, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise HubnodeError(
                f"the Pulumi engine did not take the kubernetes provider {self.provider}: {result.stderr.strip()}",
                fix="rebuild the toolchain: hubnode cluster toolchain",
            )


@contextlib.contextmanager
def working_in(folder: Path) -> Iterator[None]:
    """Run the inline program from the project folder, where it finds `.hubnode/<stack>/` and the files keys name."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@dataclass(frozen=True)
class Deployment:
    """One stack on Kubernetes, as the engine is to run it.

    `config` is the stack file's `config:` map; `kubeconfig` the cluster's (None: the provider's own
    choice, the stack's `kubernetes:kubeconfig` or `KUBECONFIG`).
    """

    places: PulumiPlaces
    spec: StackSpec
    plans: tuple[NodePlan, ...]
    config: Mapping[str, Any]
    engine: Engine
    kubeconfig: Path | None

    def run(self, action: str, say: Callable[[str], None]) -> Deployed:
        """Run `action` (`up`, `preview` or `destroy`); the stack's outputs and secrets after it.

        A stack that is not on Kubernetes is refused before anything runs.
        """
        from pulumi import automation as auto  # noqa: PLC0415 -- the Automation API is only needed here

        from infra.program import declare_stack  # noqa: PLC0415 -- imports both providers' SDKs

        spec, places = self.spec, self.places
        if spec.platform != "kubernetes":
            raise HubnodeError(
                f"stack {spec.stack} is on {spec.platform}; hubnode deploy runs stacks on Kubernetes",
                fix=f"bring it up with: hubnode up --stack {spec.stack} (or set hubnode:platform: kubernetes)",
            )
        ensure_passphrase(places.passphrase_file(spec.stack))
        env = engine_env(places, spec.stack, self.kubeconfig)
        for folder in (places.home, places.root / "state", places.work_dir(spec.stack)):
            folder.mkdir(parents=True, exist_ok=True)
        self.engine.install_provider(env)
        host_path = spec.kubernetes.resolved(places.project_dir).host_path
        if host_path is not None and action == "up":
            make_host_volumes(host_volumes(self.plans, host_path))
        options = auto.LocalWorkspaceOptions(
            work_dir=str(places.work_dir(spec.stack)),
            pulumi_home=str(places.home),
            env_vars=env,
            project_settings=auto.ProjectSettings(
                name=PULUMI_PROJECT, runtime="python", backend=auto.ProjectBackend(url=places.backend)
            ),
            secrets_provider="passphrase",
            pulumi_command=auto.PulumiCommand(root=str(self.engine.cli.parent.parent), skip_version_check=True),
        )
        with working_in(places.project_dir):
            stack = auto.create_or_select_stack(
                spec.stack, project_name=PULUMI_PROJECT, program=declare_stack, opts=options
            )
            stack.set_all_config({key: auto.ConfigValue(value) for key, value in plain_config(self.config).items()})
            for key in missing_secrets(set(stack.get_all_config())):
                stack.set_config(key, auto.ConfigValue(secrets.token_urlsafe(24), secret=True))
            if action == "preview":
                stack.preview(on_output=say, diff=False)
            elif action == "destroy":
                stack.destroy(on_output=say, show_secrets=False)
            else:
                stack.up(on_output=say, show_secrets=False)
            outputs = {key: output.value for key, output in stack.outputs().items() if not output.secret}
            held = {key.removeprefix(f"{NAMESPACE}:"): v.value for key, v in stack.get_all_config().items() if v.secret}
            return Deployed(outputs, held)
