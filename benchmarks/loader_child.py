"""`python -m benchmarks.loader_child PROJECT STACK SITE FILE`: one `hubnode load`, its figures as JSON.

The bulk benchmark runs the loader alone in a process of its own, importing nothing else, so that the
peak RSS read here with getrusage is the loader's (and the interpreter's with the loader's imports,
read before the load begins: `imports_rss_kib`).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

from infra.load import Options, job_for, load, node_door
from infra.progress import Progress
from infra.state import StackState


def load_once(project: Path, stack: str, site: str, path: Path) -> dict[str, Any]:
    """`hubnode load --stack STACK --site SITE --restart FILE` with the command's defaults: its figures."""
    imports_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
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
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


if __name__ == "__main__":
    project, stack, site, path = sys.argv[1:5]
    print(json.dumps(load_once(Path(project), stack, site, Path(path))))
