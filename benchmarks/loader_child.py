"""`python -m benchmarks.loader_child PROJECT STACK SITE FILE`: one `hubnode load`, its figures as JSON.

The bulk benchmark runs the loader alone in a process of its own, importing nothing else, so that the
peak RSS read here is the loader's (and the interpreter's with the loader's imports, read before the
load begins: `imports_rss_kib`). It is the kernel's high-water mark of this program's memory
(`VmHWM`), not getrusage's `ru_maxrss`: that one survives `exec` and so starts at the RSS of the
benchmark process that spawned this one (356 MiB once the benchmarks before it had filled that).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from infra.load import Options, job_for, load, node_door
from infra.progress import Progress
from infra.state import StackState


def load_once(project: Path, stack: str, site: str, path: Path) -> dict[str, Any]:
    """`hubnode load --stack STACK --site SITE --restart FILE` with the command's defaults: its figures."""
    imports_rss_kib = peak_rss_kib()
    state = StackState(project, stack)
    door = node_door(state, site)
    result = load(door, job_for(state, door, [path]), Options(restart=True), Progress(quiet=True))
    return {
        "seconds": result.seconds,
        "lines": result.lines,
        "resources": result.resources,
        "refused": result.refused,
        "report": str(result.report),
        "imports_rss_kib": imports_rss_kib,
        "peak_rss_kib": peak_rss_kib(),
    }


def peak_rss_kib() -> int:
    """The most memory this program has held resident so far, in KiB (Linux's `VmHWM`)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/status names no VmHWM: peak RSS is read on Linux only")


if __name__ == "__main__":
    project, stack, site, path = sys.argv[1:5]
    print(json.dumps(load_once(Path(project), stack, site, Path(path))))
