"""`python -m infra.door stop|start CONTAINER`: take a local node's gateway (its doors) down, or bring it back.

The conformance suite's `control` steps run this through the targets file `hubnode up` writes, to show
what a node does when a peer is down and after it is back (`$retry`). The container is stopped, not
removed, so it starts again exactly as it was; `start` returns once the gateway passes its health check.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import docker.errors
from docker.models.containers import Container

from infra.bootstrap import docker_client
from infra.errors import HubnodeError

#: Seconds nginx gets to finish requests in flight before it is stopped.
STOP_TIMEOUT_S = 10
#: How long a started gateway may take to pass its health check (Docker runs it every few seconds).
HEALTHY_WITHIN_S = 90.0


def main(argv: Sequence[str] | None = None) -> int:
    """Stop or start one container by name; exit 2 with a message on misuse."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 2 or arguments[0] not in ("stop", "start"):
        print("usage: python -m infra.door stop|start CONTAINER", file=sys.stderr)
        return 2
    action, name = arguments
    try:
        container = docker_client().containers.get(name)
        if action == "stop":
            container.stop(timeout=STOP_TIMEOUT_S)
        else:
            container.start()
            _wait_healthy(container)
    except (docker.errors.DockerException, HubnodeError) as error:
        print(f"infra.door: {action} {name}: {error}", file=sys.stderr)
        return 1
    return 0


def _wait_healthy(container: Container) -> None:
    deadline = time.monotonic() + HEALTHY_WITHIN_S
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(0.5)
    raise HubnodeError(f"{container.name} did not pass its health check within {HEALTHY_WITHIN_S:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
