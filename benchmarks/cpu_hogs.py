"""Processes that keep every core busy, for the busy-start campaign of `./dev chaos` (issue 16).

A site's host is seldom idle when site IT runs `hubnode up`; bring-up must wait on a service's progress,
not on a fixed budget. The hogs run at the same priority as the node's containers, stop by themselves
after an hour whatever happens to the campaign, and report the share of the cores they really held.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

SPIN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"
#: The longest a hog spins, should the campaign that started it never stop it.
LIMIT_S = 3600.0


class CpuHogs:
    """`count` processes spinning on a core each, from `with` until `stop()`."""

    def __init__(self, count: int, limit_s: float = LIMIT_S) -> None:
        self.count = count
        self.limit_s = limit_s
        #: CPU time the hogs got, as a share of `count` cores over the time they ran (set by `stop`).
        self.share = 0.0
        self._processes: list[subprocess.Popen[bytes]] = []
        self._started = 0.0

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        self._processes = [subprocess.Popen([sys.executable, "-c", SPIN, str(self.limit_s)]) for _ in range(self.count)]
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> float:
        """Stop the hogs (once); the share of `count` cores they held while they ran (1.0: all of them)."""
        if self._processes:
            spun = sum(cpu_seconds(process.pid) for process in self._processes)
            self.share = spun / ((time.perf_counter() - self._started) * self.count)
            for process in self._processes:
                process.kill()
            for process in self._processes:
                process.wait()
            self._processes = []
        return self.share


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a running process, from `/proc/PID/stat` (fields 14 and 15)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")
