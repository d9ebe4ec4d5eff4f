"""`hubnode`: bring a stack's nodes up on this host, show their state, take them down.

Each command is a short pipeline of named steps (load spec -> plan -> engine -> images -> start ->
write endpoints), so its output says where time went and where something failed. Failures are
`HubnodeError`s: one message with its fix, a non-zero exit, nothing left running.
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from conformance import check
from fixtures.volume import write_volume
from infra import cluster, kube_status, pki_store
from infra.backup import (
    Host,
    archive_about,
    backup_node,
    ensure_key,
    install_key,
    last_backups,
    load_key,
    record,
    restore_node,
)
from infra.bootstrap import (
    docker_client,
    ensure_base_image,
    ensure_browser,
    ensure_build_tools,
    ensure_docker_engine,
)
from infra.chunks import Limits
from infra.cluster_files import layout_for
from infra.compare import as_json, differences, read_inventory, table
from infra.deploy import Deployment, Engine, PulumiPlaces, forget_own_cluster_stacks, keep_tokens
from infra.errors import HubnodeError, UsageError
from infra.federation_files import FederationFiles, prepare_federation_files
from infra.files import write_atomically
from infra.idp_realm import user_secret
from infra.imagebuild import build_images, images_to_build
from infra.inventory import node_access, take
from infra.kube_manifests import render_yaml, stack_manifests
from infra.load import Options, job_for, load, node_door
from infra.load_state import first_refusals
from infra.local import LocalLauncher, secret_file
from infra.mutants import MUTANTS
from infra.pki_store import CA
from infra.plan import NodePlan, plan_stack
from infra.progress import Progress
from infra.retention import Retention, prune
from infra.schedule import backup_due
from infra.smoke import example_bundle, read_bundle, smoke, smoke_trustcentre
from infra.spec import BackupPolicy, StackSpec, with_mutant
from infra.stackfile import load_stack, stack_config_map
from infra.state import StackState
from infra.targets_file import Controls, docker_controls, kubernetes_controls, write_targets
from infra.timer_units import UNIT_DIR, for_checkout, install, remove, run_checked, systemd_runs_host
from infra.toolchain import ALL_TOOLS, ensure_packages, ensure_tools

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: Refused lines `hubnode load` prints when it ends; the report holds them all.
REFUSALS_SHOWN = 5


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hubnode` console script."""
    args = _parser().parse_args(argv)
    progress = Progress(quiet=getattr(args, "json", False))
    try:
        result: int = args.command(args, progress)
    except UsageError as error:
        print(f"hubnode: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except HubnodeError as error:
        print(f"hubnode: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("hubnode: interrupted; what was started has been removed", file=sys.stderr)
        return EXIT_INTERRUPTED
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hubnode", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=None,
        help="folder with Pulumi.yaml and the stack files (default: the nearest one above the current folder)",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:  # noqa: ANN401
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(command=handler)
        return sub

    command("bootstrap", _bootstrap, "make sure a Docker engine answers and the offline base image exists")
    for name, handler, help_text in (
        ("images", _images, "build the images a stack needs (only what changed)"),
        ("up", _up, "build what is missing, start the stack's nodes, wait until healthy, print endpoints"),
        ("status", _status, "show each node's endpoints and health (exit 1 unless every node is up)"),
        ("smoke", _smoke, "store a bundle in each node's FHIR server, read its patient back, pseudonymise it"),
        ("down", _down, "remove the stack's containers and networks (data volumes stay unless --volumes)"),
        ("backup", _backup, "stop each node briefly, write an encrypted archive of its data and files, start it again"),
        ("restore", _restore, "put a node back from its archive into an empty stack (then: hubnode up)"),
        ("schedule", _schedule, "print, install or remove the systemd timer of the stack's hubnode:backup.schedule"),
    ):
        sub = command(name, handler, help_text)
        sub.add_argument("--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml (default: dev)")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="print machine-readable JSON")
        if name == "up":
            sub.add_argument(
                "--dry-run",
                action="store_true",
                help="print what would be kept, replaced, started or removed, and change nothing",
            )
        if name in ("images", "up"):
            sub.add_argument(
                "--mutant",
                choices=sorted(MUTANTS),
                metavar="NAME",
                help="switch on a faulty variant that the conformance suite must fail (local stacks only;"
                " see infra/mutants.py and ./dev mutants)",
            )
        if name == "smoke":
            sub.add_argument("--bundle", type=Path, help="FHIR transaction bundle (default: a small example)")
        if name == "down":
            sub.add_argument(
                "--volumes",
                action="store_true",
                help="also delete the stack's data volumes and secrets (the backup key stays)",
            )
        if name in ("backup", "restore"):
            _backup_options(sub, name)
        if name == "schedule":
            _schedule_options(sub)
    check.add_options(
        command("check", _check, "replay the scenarios against a stack's nodes or a targets file; write the reports")
    )
    _generate_options(
        command("generate", _generate, "write synthetic MII-shaped patients as NDJSON (the same bytes for a seed)")
    )
    _load_options(
        command(
            "load", _bulk_load, "load NDJSON files into a node through its connector: resumable, bad lines reported"
        )
    )
    _inventory_options(
        command("inventory", _inventory, "count and digest what a node holds, read through its gateway (JSON)")
    )
    _inventory_options(
        command("compare", _compare, "compare two inventories, or a node now with one; exit 1 when they differ")
    )
    _cluster_options(
        command("cluster", None, "a single-node Kubernetes on this host, from the pinned sources under toolchain/")
    )
    _render_options(
        command("render", _render, "write each node's Kubernetes manifests as YAML, to review or kubectl apply")
    )
    _deploy_options(
        command("deploy", _deploy, "run the stack's Pulumi program with a real Pulumi engine (stacks on Kubernetes)")
    )
    return parser


def _cluster_options(sub: argparse.ArgumentParser) -> None:
    actions = sub.add_subparsers(required=True, metavar="ACTION")

    def action(name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:  # noqa: ANN401
        parser = actions.add_parser(name, help=help_text, description=help_text)
        parser.set_defaults(command=handler)
        return parser

    action(
        "toolchain", _cluster_toolchain, "build the cluster's and Pulumi's programs into the cache; print their folders"
    )
    action(
        "up", _cluster_up, "start the single-node cluster (idempotent), import the images, wait until its node is Ready"
    ).add_argument("--stack", help="also import the images this stack's nodes run (build them with `hubnode images`)")
    action("down", _cluster_down, "stop the cluster and remove what it put on the host").add_argument(
        "--purge", action="store_true", help="also delete its etcd data and containerd's images"
    )
    action("status", _cluster_status, "each process, the API's readiness, the node, the images").add_argument(
        "--json", action="store_true", help="print machine-readable JSON"
    )


def _cluster_toolchain(_args: argparse.Namespace, progress: Progress) -> int:
    with progress.step("Debian packages of the cluster"):
        ensure_packages(progress)
    for bin_dir in ensure_tools(ALL_TOOLS, progress).values():
        print(bin_dir)
    return 0


def _cluster_up(args: argparse.Namespace, progress: Progress) -> int:
    images: list[str] = []
    if args.stack:
        with progress.step("Docker engine"):
            ensure_docker_engine(progress)
        images = _image_references(_plans(args, progress))
    else:
        ensure_docker_engine(progress)
    cluster.up(project_dir(args), images, progress)
    return 0


def _image_references(plans: Sequence[NodePlan]) -> list[str]:
    """Every image the stack's services run, each once."""
    return sorted({service.image.reference for plan in plans for service in plan.services})


def _cluster_down(args: argparse.Namespace, progress: Progress) -> int:
    project = project_dir(args)
    cluster.down(project, progress, purge=args.purge)
    if args.purge:
        for stack in forget_own_cluster_stacks(PulumiPlaces(project)):
            print(
                f"stack {stack}: its deployment went with the cluster's data; hubnode deploy --stack {stack} redoes it"
            )
    return 0


def _cluster_status(args: argparse.Namespace, _progress: Progress) -> int:
    found = cluster.status(project_dir(args))
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        _print_cluster_status(found)
    processes: dict[str, dict[str, Any]] = found["processes"]  # type: ignore[assignment]
    healthy = all(p["running"] for p in processes.values()) and found["node"]["ready"]  # type: ignore[index]
    return 0 if healthy else EXIT_FAILED


def _print_cluster_status(found: dict[str, Any]) -> None:
    for name, process in found["processes"].items():
        print(f"{name:24} {'up (pid ' + str(process['pid']) + ')' if process['running'] else 'down'}")
    api = found["apiserver"]
    print(f"{'apiserver /readyz':24} {'ready' if api['ready'] else 'not ready'}  {api['url']}")
    print(f"{'node ' + found['node']['name']:24} {'Ready' if found['node']['ready'] else 'not Ready'}")
    print(f"{'images':24} {', '.join(found['images']) or 'none'}")
    print(f"{'kubeconfig':24} {found['kubeconfig']}")
    for item in found["leftovers"]:
        print(f"left behind: {item}")


def _deploy_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--stack", default="cluster", help="stack name: reads Pulumi.<stack>.yaml (default: cluster)")
    action = sub.add_mutually_exclusive_group()
    action.add_argument("--preview", action="store_true", help="show what would change, change nothing")
    action.add_argument("--destroy", action="store_true", help="remove what the stack declared (volumes stay)")


def _deploy(args: argparse.Namespace, progress: Progress) -> int:
    """`pulumi up` (or preview, or destroy) of a stack on Kubernetes, through the Automation API.

    The cluster is the one the stack names (`kubernetes:kubeconfig`), else the one `hubnode cluster up`
    started in this project.
    """
    spec, plans = _load(args, progress)
    project = project_dir(args)
    config = stack_config_map(project, args.stack)
    kubeconfig = None if "kubernetes:kubeconfig" in config else layout_for(project).kubeconfig
    action = "destroy" if args.destroy else "preview" if args.preview else "up"
    with progress.step("the Pulumi engine and its kubernetes provider"):
        engine = Engine.built(progress)
    if kubeconfig is not None and action == "up":  # images rebuilt since `cluster up` go in, and roll their pods
        with progress.step("the stack's images in the cluster"):
            cluster.import_images(_existing_cluster(project), _image_references(plans), progress)
    deployment = Deployment(PulumiPlaces(project), spec, plans, config, engine, kubeconfig)
    with progress.step(f"pulumi {action} of stack {args.stack}"):
        deployed = deployment.run(action, lambda line: print(line, flush=True))
    if action == "up":
        own_cluster = kubeconfig is not None
        if own_cluster:  # on a cluster the stack names, its operators watch the rollout with their own tools
            with progress.step("every node ready and answering"):
                kube_status.wait_until_up(plans, _kubectl(project), _verify(args), progress)
        keep_tokens(_state(args), plans, deployed.secrets)
        path = _write_endpoints(args, plans)
        controls = _cluster_controls(project) if own_cluster else _no_controls
        targets_file = write_targets(_state(args), spec, plans, datetime.now(UTC), controls)
        print(f"stack {args.stack} is deployed; endpoints written to {path}")
        print(f"conformance targets: {targets_file} (hubnode check --stack {args.stack})")
    elif action == "destroy":
        print(f"stack {args.stack} is removed; its namespaces and volumes stay (data is kept)")
    for key, value in sorted(deployed.outputs.items()):
        print(f"  {key}: {json.dumps(value)}")
    return 0


def _existing_cluster(project: Path) -> cluster.Cluster:
    """The cluster `hubnode cluster up` started in the project, or a clear error saying how to start one."""
    found = cluster.existing(project)
    if not (found.kube_bin / "kubectl").is_file():
        raise HubnodeError(
            f"no cluster has been started in {project}",
            fix="start it: hubnode cluster up --stack <stack>, then hubnode deploy --stack <stack>",
        )
    return found


def _kubectl(project: Path) -> kube_status.Kubectl:
    """The toolchain's kubectl on the cluster `hubnode cluster up` started in the project."""
    found = _existing_cluster(project)
    return lambda *args: found.kubectl(*args).stdout


def _verify(args: argparse.Namespace) -> ssl.SSLContext | bool:
    """TLS checked against the stack's federation CA where it has one, else the system's."""
    ca = _state(args).pki_dir / "ca.crt"
    return ssl.create_default_context(cafile=str(ca)) if ca.is_file() else True


def _cluster_controls(project: Path) -> Controls:
    """Gateway controls for the suite: its Deployment scaled on the project's cluster."""
    found = cluster.existing(project)
    return kubernetes_controls(found.kube_bin / "kubectl", found.layout.kubeconfig)


def _no_controls(_plan: NodePlan) -> None:
    """No node's gateway can be taken down (the suite's `control` steps are not applicable)."""


def _render_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml (default: dev)")
    sub.add_argument("--site", help="only this node (default: every node of the stack)")
    sub.add_argument("--output", type=Path, help="folder for <site>.yaml (default: .hubnode/<stack>/kubernetes)")


def _render(args: argparse.Namespace, progress: Progress) -> int:
    """Every node is addressed (its Services' ClusterIPs) with the whole stack, then the chosen ones written.

    Storage class, volume size and Service range are the stack's `hubnode:kubernetes`, as for `pulumi up`.
    """
    spec, plans = _load(args, progress)
    manifests = stack_manifests(plans, spec.kubernetes.resolved(project_dir(args)))
    folder = Path(args.output) if args.output is not None else state_dir(args) / "kubernetes"
    folder.mkdir(parents=True, exist_ok=True)
    for plan in _chosen(plans, args.site, args.stack):
        path = folder / f"{plan.site}.yaml"
        path.write_text(render_yaml(plan.site, manifests[plan.site]), encoding="utf-8")
        print(f"{plan.site}: {len(manifests[plan.site])} manifests in {path}")
    return 0


def _inventory_options(sub: argparse.ArgumentParser) -> None:
    """The options of `inventory` and `compare`."""
    sub.add_argument("--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml (default: dev)")
    sub.add_argument("--site", help="the node (default: the stack's only node)")
    if sub.get_default("command") is _inventory:
        sub.add_argument("--output", type=Path, metavar="FILE", help="write the inventory there (default: print it)")
        return
    sub.add_argument("--against", type=Path, metavar="FILE", help="compare the node now (--stack, --site) with FILE")
    sub.add_argument("--json", action="store_true", help="print machine-readable JSON")
    sub.add_argument("inventories", type=Path, nargs="*", metavar="INVENTORY", help="two files `inventory` wrote")


def _load_options(sub: argparse.ArgumentParser) -> None:
    defaults = Options()
    sub.add_argument("--stack", default="dev", help="stack name: reads Pulumi.<stack>.yaml (default: dev)")
    sub.add_argument("--site", help="the node to load into (default: the stack's only node)")
    sub.add_argument(
        "--chunk",
        type=positive,
        default=defaults.limits.resources,
        metavar="N",
        help=f"resources per request, a bundle line counting its entries (default {defaults.limits.resources};"
        f" also at most {defaults.limits.bytes // 1024 // 1024} MiB)",
    )
    sub.add_argument(
        "--parallel", type=positive, default=defaults.parallel, metavar="K", help="requests in flight (default 4)"
    )
    sub.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="where refused lines go, one JSON object a line: file, line, message"
        " (default: .hubnode/<stack>/loads/<key>.report.jsonl)",
    )
    sub.add_argument(
        "--all-or-nothing",
        action="store_true",
        help="stop at the first refused request instead of sending its good lines again (each request stays"
        " all-or-nothing; what earlier requests stored stays)",
    )
    sub.add_argument("--restart", action="store_true", help="start over instead of continuing an interrupted load")
    sub.add_argument("files", type=Path, nargs="+", metavar="FILE", help="NDJSON files (.ndjson, .ndjson.gz), in order")


def positive(text: str) -> int:
    """An argument that must be a whole number above 0 (argparse says which and exits 2 otherwise)."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return number


def _generate_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--patients", type=positive, required=True, metavar="N", help="how many patients")
    sub.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes (default 0)")
    sub.add_argument("--site", default="dic", help="the site the patients' ids and identifiers name (default dic)")
    sub.add_argument("--bundles", action="store_true", help="one transaction Bundle per patient and line")
    sub.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="the NDJSON file to write (.gz: gzip-compressed)"
    )


def _backup_options(sub: argparse.ArgumentParser, name: str) -> None:
    """The options of `backup` and `restore`."""
    sub.add_argument("--site", help="the node to back up or restore (default: every node / the archive's)")
    if name == "backup":
        sub.add_argument(
            "--output",
            type=Path,
            metavar="DIR",
            help="folder for the archives (default: hubnode:backup.output, else .hubnode/backups/<stack>/)",
        )
        sub.add_argument(
            "--keep",
            type=positive,
            metavar="N",
            help="afterwards keep only the node's newest N archives there (default: hubnode:backup.keep/keepDays)",
        )
    else:
        sub.add_argument(
            "--key", type=Path, metavar="FILE", help="the backup key (default: .hubnode/<stack>/backup-key)"
        )
        sub.add_argument("archive", type=Path, metavar="ARCHIVE", help="a .hnb file `hubnode backup` wrote")


def _schedule_options(sub: argparse.ArgumentParser) -> None:
    what = sub.add_mutually_exclusive_group()
    what.add_argument("--print", action="store_true", help="show the service and timer (the default)")
    what.add_argument("--install", action="store_true", help="write them, and start the timer where systemd runs")
    what.add_argument("--remove", action="store_true", help="stop the timer and delete both units")
    sub.add_argument(
        "--unit-dir", type=Path, default=UNIT_DIR, metavar="DIR", help=f"where the units go (default {UNIT_DIR})"
    )


def _generate(args: argparse.Namespace, progress: Progress) -> int:
    """`hubnode generate`: a volume of journeys (fixtures/volume.py), e.g. to try `hubnode load` on."""
    out = Path(args.out)
    if not out.parent.is_dir():
        raise HubnodeError(f"--out {out}: no folder {out.parent}", fix="create the folder or name a file in one")
    every = max(1, args.patients // 10)

    def written(done: int) -> None:
        if done % every == 0:
            progress.note(f"{done} of {args.patients} patients written")

    with progress.step(f"generate {args.patients} patients (seed {args.seed}) into {out}"):
        volume = write_volume(out, args.patients, args.seed, site=args.site, bundles=args.bundles, written=written)
    print(
        f"wrote {volume.patients} patients, {volume.resources} resources in {volume.lines} lines to {out}"
        f" ({out.stat().st_size / 1024 / 1024:.1f} MiB)"
    )
    return 0


def _bulk_load(args: argparse.Namespace, progress: Progress) -> int:
    """`hubnode load` (infra/load.py): 0 when every line is stored, 1 when some were refused (see the report)."""
    state = _state(args)
    door = node_door(state, args.site)
    job = job_for(state, door, args.files, args.report)
    options = Options(Limits(args.chunk, Options().limits.bytes), args.parallel, args.all_or_nothing, args.restart)
    try:
        with progress.step(f"load {len(job.files)} file(s) into {door.site} of stack {args.stack}"):
            result = load(door, job, options, progress)
    except KeyboardInterrupt:
        print(
            "hubnode: interrupted; rerun the same command to continue where the load stopped (nothing is stored twice)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    print(
        f"loaded {result.lines} lines ({result.resources} resources) into {door.site} in {result.seconds:.1f} s"
        f" ({result.resources_per_s:.0f} resources/s)"
    )
    if result.refused:
        print(f"{result.refused} line(s) refused, each with its reason, in {result.report}; the first:")
        for refusal in first_refusals(result.report, REFUSALS_SHOWN):
            print(f"  {refusal}")
        return EXIT_FAILED
    return 0


def _inventory(args: argparse.Namespace, progress: Progress) -> int:
    """`hubnode inventory` (infra/inventory.py): printed, or written to `--output`."""
    found = _take_inventory(args, progress)
    text = json.dumps(found, indent=2) + "\n"
    if args.output is None:
        print(text, end="")
        return 0
    try:
        write_atomically(Path(args.output), text.encode(), 0o644)
    except OSError as error:
        raise UsageError(
            f"--output {args.output}: {error.strerror}", fix="name a file in a folder you may write"
        ) from None
    print(f"inventory of {found['site']} ({len(found['stores'])} stores) written to {args.output}")
    return 0


def _take_inventory(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    access = node_access(_state(args), args.site)
    with progress.step(f"inventory of {access.site} of stack {args.stack}"), access.client() as client:
        return take(access, client, progress, args.stack)


def _compare(args: argparse.Namespace, progress: Progress) -> int:
    """`hubnode compare A B` or `--against A` (the node now as B): 0 when identical, 1 when not."""
    if args.against is not None and not args.inventories:
        first = read_inventory(Path(args.against))
        second = _take_inventory(args, progress)
    elif args.against is None and len(args.inventories) == 2:
        first, second = (read_inventory(Path(path)) for path in args.inventories)
    else:
        raise UsageError(
            "compare takes two inventory files, or --against FILE (and --stack, --site for the node now)",
            fix="e.g. hubnode compare before.json after.json",
        )
    found = differences(first, second)
    print(json.dumps(as_json(first, second, found), indent=2) if args.json else table(first, second, found))
    return EXIT_FAILED if found else 0


def _check(args: argparse.Namespace, _progress: Progress) -> int:
    """The suite on a targets file: given, or the one `hubnode up` wrote for the stack."""
    if args.targets is None:
        stack = args.stack or check.DEFAULT_STACK
        args.targets = StackState(project_dir(args), stack).targets_file
        if not args.targets.is_file():
            raise HubnodeError(
                f"stack {stack} has no targets file {args.targets}",
                fix=f"run: hubnode up --stack {stack} (a stack on Kubernetes: hubnode deploy --stack {stack})",
            )
    return check.run(args)


def project_dir(args: argparse.Namespace) -> Path:
    """The folder holding Pulumi.yaml: given, or the nearest at or above the current folder."""
    if args.project_dir is not None:
        return Path(str(args.project_dir)).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    raise HubnodeError(
        f"no Pulumi.yaml in {here} or any folder above it",
        fix="run hubnode inside the project, or pass --project-dir",
    )


def _state(args: argparse.Namespace) -> StackState:
    """The stack's local state (endpoints, generated secrets, PKI, targets file)."""
    return StackState(project_dir(args), str(args.stack))


def state_dir(args: argparse.Namespace) -> Path:
    """Where a stack's local state lives: `.hubnode/<stack>/`."""
    return _state(args).folder


def _load(args: argparse.Namespace, progress: Progress) -> tuple[StackSpec, tuple[NodePlan, ...]]:
    with progress.step(f"load stack {args.stack}"):
        spec = load_stack(project_dir(args), args.stack)
        if getattr(args, "mutant", None):
            spec = with_mutant(spec, args.mutant)
            progress.note(f"mutant {spec.mutant} switched on: the nodes are faulty on purpose")
        plans = plan_stack(spec)
        for plan in plans:
            progress.note(f"{plan.site} ({plan.role}): {', '.join(s.component for s in plan.services)}")
    return spec, plans


def _plans(args: argparse.Namespace, progress: Progress) -> tuple[NodePlan, ...]:
    return _load(args, progress)[1]


def _launcher(
    args: argparse.Namespace, progress: Progress, client: docker.DockerClient, files: FederationFiles | None = None
) -> LocalLauncher:
    """A launcher that checks the gateways' certificates against the stack's federation CA, if it has one."""
    ca = _state(args).pki_dir / "ca.crt"
    return LocalLauncher(client, progress, state_dir(args), files, ca if ca.is_file() else None)


def _bootstrap(_args: argparse.Namespace, progress: Progress) -> int:
    with progress.step("Docker engine"):
        client = ensure_docker_engine(progress)
    with progress.step("offline base image"):
        ensure_base_image(client, progress)
    with progress.step("build tools (Maven, JDK)"):
        ensure_build_tools(progress)
    with progress.step("browser for the portal's tests (Chromium)"):
        ensure_browser(progress)
    return 0


def _images(args: argparse.Namespace, progress: Progress) -> int:
    _build(_plans(args, progress), progress)
    return 0


def _build(plans: tuple[NodePlan, ...], progress: Progress) -> docker.DockerClient:
    """Make sure an engine answers and every image the plans build is there; returns the engine."""
    with progress.step("Docker engine"):
        client = ensure_docker_engine(progress)
    builds = images_to_build(plans)
    if builds:
        with progress.step("offline base image"):
            for base in {image.build.base_image for image in builds if image.build.base is None}:
                ensure_base_image(client, progress, base)
        with progress.step("images"):
            build_images(client, plans, progress)
    return client


def _up(args: argparse.Namespace, progress: Progress) -> int:
    spec, plans = _load(args, progress)
    if args.dry_run:
        return _dry_run(args, spec, plans, progress)
    client = _build(plans, progress)
    files = None
    if spec.federation is not None:
        with progress.step("federation certificates and allow list"):
            files = prepare_federation_files(spec, state_dir(args), progress)
    with progress.step("start nodes and wait until healthy"):
        _launcher(args, progress, client, files).up(plans)
    endpoints_file = _write_endpoints(args, plans)
    targets_file = write_targets(_state(args), spec, plans, datetime.now(UTC), docker_controls)
    print(f"stack {args.stack} is up; endpoints written to {endpoints_file}")
    print(f"conformance targets: {targets_file} (hubnode check --stack {args.stack})")
    for plan in plans:
        for name, url in plan.endpoints.items():
            print(f"  {plan.site:<16} {name:<12} {url}")
    _print_sign_ins(_state(args), spec)
    print(f"stop it with: hubnode down --stack {args.stack}")
    return 0


def _print_sign_ins(state: StackState, spec: StackSpec) -> None:
    """The demo users of a local stack and where their passwords are (never the passwords themselves)."""
    users = [(node.site, user) for node in spec.nodes for user in node.users]
    if users:
        print("demo users (sign in at the portal; each password is in the file named):")
    for site, user in users:
        print(
            f"  {site:<16} {user.role:<12} {user.username:<16} {state.secrets_dir(site) / user_secret(user.username)}"
        )


def _dry_run(args: argparse.Namespace, spec: StackSpec, plans: tuple[NodePlan, ...], progress: Progress) -> int:
    """`up --dry-run`: each container's fate; images not built yet count as a change for what runs them."""
    client = ensure_docker_engine(progress)
    missing = [image.reference for image in images_to_build(plans) if not _image_present(client, image.reference)]
    if missing:
        print(f"images to build first: {', '.join(missing)}")
    files = prepare_federation_files(spec, state_dir(args), progress) if spec.federation is not None else None
    changes = _launcher(args, progress, client, files).changes(plans)
    for change in changes:
        print(f"  {change.site:<16} {change.component:<12} {change.action:<8} {change.reason}")
    touched = sum(change.action != "keep" for change in changes)
    print(f"{touched} of {len(changes)} container(s) would change; nothing was changed")
    return 0


def _image_present(client: docker.DockerClient, reference: str) -> bool:
    try:
        client.images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


def _write_endpoints(args: argparse.Namespace, plans: tuple[NodePlan, ...]) -> Path:
    path = _state(args).endpoints_file
    path.parent.mkdir(parents=True, exist_ok=True)
    nodes = [{"site": p.site, "role": p.role, "endpoints": dict(p.endpoints)} for p in plans]
    path.write_text(json.dumps({"stack": args.stack, "nodes": nodes}, indent=2) + "\n")
    return path


def _status(args: argparse.Namespace, progress: Progress) -> int:
    spec, plans = _load(args, progress)
    schedule = spec.backup.schedule if spec.backup else None
    if spec.platform == "kubernetes":
        nodes = kube_status.status(plans, _kubectl(project_dir(args)), _verify(args))
    else:
        nodes = _launcher(args, progress, docker_client()).status(plans)
    certificates = {
        found.item: found
        for found in pki_store.validity(_state(args).pki_dir, [CA, *(p.site for p in plans)], datetime.now(UTC))
    }
    backups = last_backups(_state(args))
    for node in nodes:
        if held := certificates.get(node["site"]):
            node["certificate"] = {**asdict(held), "valid_until": held.valid_until.isoformat()}
        node["last_backup"] = backups.get(node["site"])
        if schedule is not None:
            last = node["last_backup"]["created"] if node["last_backup"] else None
            node["backup_schedule"] = backup_due(schedule, last, datetime.now().astimezone())
    if args.json:
        print(json.dumps({"stack": args.stack, "nodes": nodes}, indent=2))
    else:
        _print_status(nodes, certificates)
    return 0 if all(node["health"] == "up" for node in nodes) else EXIT_FAILED


def _print_status(nodes: list[dict[str, Any]], certificates: dict[str, pki_store.Validity]) -> None:
    for node in nodes:
        print(f"{node['site']:<16} {node['role']:<10} {node['health']}")
        for name, url in node["endpoints"].items():
            print(f"    {name:<12} {url}")
        for component, service in node["services"].items():
            where = service.get("container") or f"{service['workload']} ({service['replicas']} ready)"
            print(f"    {component:<12} {service['state']:<10} {service['health']:<10} {where}")
        if held := certificates.get(node["site"]):
            print(f"    {'certificate':<12} {_validity_line(held)}")
        if node["last_backup"]:
            print(f"    last backup  {node['last_backup']['created']}  {node['last_backup']['archive']}")
        if due := node.get("backup_schedule"):
            print(f"    {'backups':<12} {_due_line(due)}")
    if held := certificates.get(CA):
        print(f"federation CA    {_validity_line(held)}")


def _due_line(due: dict[str, Any]) -> str:
    line = f"scheduled {due['schedule']} ({due['on_calendar']})"
    if due["due"] is None:
        return f"{line}; no backup yet"
    if due["overdue"]:
        return f"{line}; OVERDUE: no backup since the run due {due['due']}"
    return f"{line}; next due {due['due']}"


def _validity_line(held: pki_store.Validity) -> str:
    line = f"valid until {held.valid_until:%Y-%m-%d} ({held.days_left} days left)"
    return f"{line}; {held.renew}: the next `hubnode up` renews it" if held.renew else line


def _smoke(args: argparse.Namespace, progress: Progress) -> int:
    spec = load_stack(project_dir(args), args.stack)
    bundle = read_bundle(args.bundle) if args.bundle else example_bundle()
    for node, plan in zip(spec.nodes, plan_stack(spec), strict=True):
        patient = ""
        if "fhir" in plan.endpoints:
            with progress.step(f"smoke test {plan.site}: FHIR"):
                result = smoke(plan.endpoints["fhir"], bundle)
            patient = result.patient_reference
            print(
                f"{plan.site}: stored {result.resources} resources in {result.seconds:.2f} s and read back "
                f"{patient} (family name {result.patient_family_name!r})"
            )
        if "trustcentre" in plan.endpoints and node.domains:
            domain = node.domains[0].name
            token = secret_file(state_dir(args), plan.site, "tc-admin-token").read_text()
            with progress.step(f"smoke test {plan.site}: trust centre"):
                pseudonym = smoke_trustcentre(plan.endpoints["trustcentre"], token, domain, patient or "smoke-test")
            print(f"{plan.site}: the trust centre pseudonymised {patient or 'smoke-test'} as {pseudonym} in {domain}")
    return 0


def _down(args: argparse.Namespace, progress: Progress) -> int:
    with progress.step(f"remove stack {args.stack}"):
        removed = _launcher(args, progress, docker_client()).down(args.stack, remove_volumes=args.volumes)
    if args.volumes:
        state = _state(args)
        _remove_local_state(state.folder, keep={state.backup_key, state.backup_record})
    kept = "" if args.volumes else " (data volumes kept; --volumes deletes them)"
    print(
        f"removed {removed.containers} container(s), {removed.networks} network(s), "
        f"{removed.volumes} volume(s) of stack {args.stack}{kept}"
    )
    return 0


def _remove_local_state(folder: Path, keep: set[Path]) -> None:
    """Generated secrets go with the data they protect (a new volume gets a new password).

    What `keep` names stays: the backup key protects archives that outlive the data.
    """
    for path in sorted(folder.rglob("*"), reverse=True):
        if path in keep:
            continue
        if not path.is_dir():
            path.unlink()
        elif not any(path.iterdir()):
            path.rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _backup(args: argparse.Namespace, progress: Progress) -> int:
    """One archive per node (or `--site`'s): the node is stopped while its volumes are copied.

    After each node's archive is written whole, its older archives beyond the retention rule go.
    """
    spec, all_plans = _load(args, progress)
    plans = _chosen(all_plans, args.site, args.stack)
    policy = spec.backup or BackupPolicy()
    rule = Retention(keep=args.keep) if args.keep else Retention(policy.keep, policy.keep_days)
    state = _state(args)
    key, made = ensure_key(state.backup_key)
    if made:
        print(
            f"made the backup key {state.backup_key}: keep a copy of it off this machine"
            " (a password manager, a safe); no archive can be restored without it"
        )
    client = docker_client()
    host = Host(client, _launcher(args, progress, client), state, progress)
    output = _backup_folder(args, state, policy)
    for plan in plans:
        with progress.step(f"back up {plan.site} (stopped while its volumes are copied)"):
            done = backup_node(host, plan, key, output)
        record(state, done)
        print(
            f"{plan.site}: {done.path} ({done.path.stat().st_size / 1024 / 1024:.1f} MiB,"
            f" {len(done.manifest.members)} members; copied in {done.copy_s:.1f} s, node unavailable"
            f" {done.unavailable_s:.1f} s, took {done.took_s:.1f} s)"
        )
        removed = prune(done.path, plan.stack, plan.site, rule, datetime.now(UTC))
        if removed:
            print(f"{plan.site}: removed {len(removed)} older archive(s), keeping {rule}:")
            for path in removed:
                print(f"  {path}")
    print(f"encrypted with {state.backup_key}; restore with: hubnode restore --stack {args.stack} ARCHIVE")
    return 0


def _backup_folder(args: argparse.Namespace, state: StackState, policy: BackupPolicy) -> Path:
    """`--output`, else `hubnode:backup.output` (relative to the project folder), else `.hubnode/backups/<stack>/`."""
    if args.output:
        return Path(args.output).resolve()
    if policy.output:
        return (state.project_dir / policy.output).resolve()
    return state.backups_dir


def _schedule(args: argparse.Namespace, progress: Progress) -> int:
    """`hubnode schedule`: the stack's backup timer, shown, installed or removed."""
    spec = _load(args, progress)[0]
    schedule = spec.backup.schedule if spec.backup else None
    if schedule is None:
        raise HubnodeError(
            f"stack {args.stack} declares no backup schedule",
            fix=f"add hubnode:backup: {{schedule: daily 02:30}} to Pulumi.{args.stack}.yaml (see README)",
        )
    units = for_checkout(args.stack, schedule, project_dir(args))
    if not (args.install or args.remove):
        for name, content in ((units.service_name, units.service), (units.timer_name, units.timer)):
            print(f"# {args.unit_dir / name}\n{content}")
        return 0
    runner = run_checked if systemd_runs_host() else None
    done = (install if args.install else remove)(units, args.unit_dir, runner)
    print("\n".join(done))
    return 0


def _restore(args: argparse.Namespace, progress: Progress) -> int:
    """Refuse anything doubtful before changing anything; then volumes and files, and the hint to `up`."""
    path = Path(args.archive)
    if not path.is_file():
        raise HubnodeError(f"no archive {path}", fix="name a .hnb file that `hubnode backup` wrote")
    about = archive_about(path)
    site = args.site or str(about.get("site") or "")
    if not site:
        raise HubnodeError(f"{path} names no site", fix="name the node to restore with --site")
    [plan] = _chosen(_plans(args, progress), site, args.stack)
    state = _state(args)
    key = load_key(Path(args.key) if args.key else state.backup_key)
    client = docker_client()
    with progress.step(f"restore {plan.site} from {path.name}"):
        done = restore_node(Host(client, _launcher(args, progress, client), state, progress), plan, path, key)
    if args.key and not state.backup_key.exists():
        install_key(state.backup_key, key)
        print(f"the key is now also this stack's backup key: {state.backup_key}")
    print(
        f"restored {plan.site} of stack {about.get('stack')} (backed up {about.get('created')}) into stack"
        f" {args.stack}: {len(done.volumes)} volume(s), {len(done.files)} file(s) in {done.took_s:.1f} s"
    )
    for name in done.kept:
        print(f"  kept the stack's own {name} (the archive's differs; the stack's federation files win)")
    print(f"now run: hubnode up --stack {args.stack}")
    return 0


def _chosen(plans: tuple[NodePlan, ...], site: str | None, stack: str) -> tuple[NodePlan, ...]:
    """Every node, or the one `site` names."""
    if not site:
        return plans
    chosen = tuple(plan for plan in plans if plan.site == site)
    if not chosen:
        raise HubnodeError(
            f"stack {stack} has no node {site!r} (its nodes: {', '.join(p.site for p in plans)})",
            fix="name one of its nodes with --site",
        )
    return chosen


if __name__ == "__main__":
    sys.exit(main())
