"""`python -m infra.door stop|start TARGET`: take a node's gateway (its doors) down, or bring it back.

The conformance suite's `control` steps run this through the targets file `hubnode up` or `hubnode deploy`
writes, to show what a node does when a peer is down and after it is back (`$retry`).

- On Docker, TARGET is the gateway's container. It is stopped, not removed, so it starts again exactly as
  it was; `start` returns once the gateway passes its health check.
- On Kubernetes (`--kubectl` and `--kubeconfig` given), TARGET is `NAMESPACE/DEPLOYMENT`. `stop` scales it
  to no replicas and returns once its pods are gone (its host ports closed); `start` scales it back to one
  and returns once the rollout is ready. The next `hubnode deploy` sets the declared count again anyway.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import docker.errors
from docker.models.containers import Container

from infra.bootstrap import docker_client
from infra.errors import HubnodeError
from infra.kube_manifests import COMPONENT_LABEL

#: Seconds nginx gets to finish requests in flight before it is stopped.
STOP_TIMEOUT_S = 10
#: How long a started gateway may take to pass its health check (Docker runs it every few seconds).
HEALTHY_WITHIN_S = 90.0


def main(argv: Sequence[str] | None = None) -> int:
    """Stop or start one gateway; exit 2 with a message on misuse, 1 when it could not be done."""
    parser = argparse.ArgumentParser(prog="python -m infra.door", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("stop", "start"))
    parser.add_argument("target", help="the gateway's container, or NAMESPACE/DEPLOYMENT with --kubeconfig")
    parser.add_argument("--kubectl", type=Path, help="the kubectl to run (Kubernetes only)")
    parser.add_argument("--kubeconfig", type=Path, help="the cluster's admin kubeconfig (Kubernetes only)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if (args.kubectl is None) != (args.kubeconfig is None) or (args.kubectl and "/" not in args.target):
        parser.error("on Kubernetes give --kubectl, --kubeconfig and NAMESPACE/DEPLOYMENT; on Docker neither")
    try:
        if args.kubectl is not None:
            _kubernetes(args.action, args.target, [str(args.kubectl), f"--kubeconfig={args.kubeconfig}"])
        else:
            _docker(args.action, args.target)
    except (docker.errors.DockerException, HubnodeError) as error:
        print(f"infra.door: {args.action} {args.target}: {error}", file=sys.stderr)
        return 1
    return 0


def _docker(action: str, name: str) -> None:
    container = docker_client().containers.get(name)
    if action == "stop":
        container.stop(timeout=STOP_TIMEOUT_S)
    else:
        container.start()
        _wait_healthy(container)


def _wait_healthy(container: Container) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(0.5)
    raise HubnodeError(f"{container.name} did not pass its health check within {HEALTHY_WITHIN_S:.0f} s")


def _kubernetes(action: str, target: str, kubectl: list[str]) -> None:
    namespace, name = target.split("/", 1)
    within = f"--timeout={HEALTHY_WITHIN_S:.0f}s"
    if action == "stop":
        _run([*kubectl, "-n", namespace, "scale", f"deployment/{name}", "--replicas=0"])
        _run([*kubectl, "-n", namespace, "wait", "--for=delete", "pod", f"-l={COMPONENT_LABEL}={name}", within])
    else:
        _run([*kubectl, "-n", namespace, "scale", f"deployment/{name}", "--replicas=1"])
        _run([*kubectl, "-n", namespace, "rollout", "status", f"deployment/{name}", within])


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=HEALTHY_WITHIN_S + 30)
    if done.returncode != 0:
        raise HubnodeError(f"{' '.join(command[2:])}: {done.stderr.strip() or done.stdout.strip()}")


if __name__ == "__main__":
    sys.exit(main())
