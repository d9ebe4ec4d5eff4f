"""A PID file counts only while its process runs the program it was started as (PIDs are reused)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from infra.cluster import running_pid
from infra.cluster_files import Layout, Process


def _layout(tmp_path: Path, pid: int) -> Layout:
    layout = Layout.at(tmp_path)
    layout.run.mkdir()
    layout.pid_file("etcd").write_text(f"{pid}\n")
    return layout


def test_a_live_process_of_the_same_program_is_running(tmp_path: Path) -> None:
    argv0 = Path("/proc/self/cmdline").read_bytes().split(b"\0")[0].decode()
    assert running_pid(_layout(tmp_path, os.getpid()), Process("etcd", (argv0,))) == os.getpid()


def test_a_reused_pid_running_another_program_is_not(tmp_path: Path) -> None:
    assert running_pid(_layout(tmp_path, os.getpid()), Process("etcd", ("etcd",))) is None


def test_a_dead_process_and_a_missing_or_garbled_file_are_not(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    layout = _layout(tmp_path, int(child.stdout))
    assert running_pid(layout, Process("etcd", (sys.executable,))) is None
    layout.pid_file("etcd").write_text("not a pid")
    assert running_pid(layout, Process("etcd", ("etcd",))) is None
    layout.pid_file("etcd").unlink()
    assert running_pid(layout, Process("etcd", ("etcd",))) is None
