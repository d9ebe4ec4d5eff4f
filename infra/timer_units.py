"""A stack's scheduled backups as a systemd service and timer pair: rendered, installed, removed.

The service runs this checkout's `hubnode backup --stack S` (absolute paths, from the project folder,
as the project folder's owner, who brought the stack up and holds its files); the timer runs it on the
stack's `hubnode:backup.schedule`, `Persistent=true` so a run missed while the host was off happens
after boot. systemd is asked to load and start the timer only where it runs the host (PID 1); anywhere
else the files are written and the message says what to run.
"""

from __future__ import annotations

import pwd
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.errors import HubnodeError
from infra.files import write_atomically
from infra.schedule import Schedule

UNIT_DIR = Path("/etc/systemd/system")
UNIT_MODE = 0o644
#: A command line run for its effect; raises `subprocess.CalledProcessError` when it fails.
Runner = Callable[[Sequence[str]], object]


@dataclass(frozen=True)
class Units:
    """The two unit files of one stack's backups: names and contents."""

    service_name: str
    service: str
    timer_name: str
    timer: str

    def paths(self, unit_dir: Path) -> tuple[Path, Path]:
        """Where the service and the timer go in `unit_dir`."""
        return unit_dir / self.service_name, unit_dir / self.timer_name


def unit_name(stack: str) -> str:
    """`hubnode-backup-<stack>` (a stack name is already a valid unit name)."""
    return f"hubnode-backup-{stack}"


def render(stack: str, schedule: Schedule, project_dir: Path, python: Path, user: str) -> Units:
    """The service running `python -m infra.cli ... backup --stack <stack>` in `project_dir`, and its timer."""
    name = unit_name(stack)
    command = f"{python} -m infra.cli --project-dir {project_dir} backup --stack {stack}"
    service = f"""[Unit]
Description=hubnode backup of stack {stack}
Documentation=file://{project_dir}/README.md
Wants=docker.service
After=docker.service network-online.target

[Service]
Type=oneshot
User={user}
WorkingDirectory={project_dir}
ExecStart={command}
"""
    timer = f"""[Unit]
Description=hubnode backup of stack {stack}: {schedule.text}

[Timer]
OnCalendar={schedule.on_calendar}
Persistent=true
Unit={name}.service

[Install]
WantedBy=timers.target
"""
    return Units(f"{name}.service", service, f"{name}.timer", timer)


def for_checkout(stack: str, schedule: Schedule, project_dir: Path) -> Units:
    """The units for this checkout: its Python, its project folder, run as the project folder's owner."""
    if any(c.isspace() for c in f"{project_dir}{sys.executable}"):
        raise HubnodeError(
            f"the project folder {project_dir} or Python {sys.executable} has a space in its path,"
            " which a unit's ExecStart= would split",
            fix="move the checkout to a path without spaces",
        )
    owner = pwd.getpwuid(project_dir.stat().st_uid).pw_name
    return render(stack, schedule, project_dir, Path(sys.executable).absolute(), owner)


def systemd_runs_host() -> bool:
    """Whether systemd is PID 1 here (as `sd_booted` checks); in a container or WSL it may not be."""
    return Path("/run/systemd/system").is_dir()


def install(units: Units, unit_dir: Path, run: Runner | None) -> list[str]:
    """Write both units into `unit_dir`; with a `run`ner (systemd is PID 1), load them and start the timer.

    Returns what was done, one line each, for the command to print.
    """
    done = []
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        for path, content in zip(units.paths(unit_dir), (units.service, units.timer), strict=True):
            write_atomically(path, content.encode(), UNIT_MODE)
            done.append(f"wrote {path}")
    except OSError as error:
        raise HubnodeError(
            f"cannot write {error.filename}: {error.strerror}",
            fix="run it as root (sudo hubnode schedule ...), or name a folder you may write with --unit-dir",
        ) from None
    done += _systemctl(run, [["daemon-reload"], ["enable", "--now", units.timer_name]])
    return done


def remove(units: Units, unit_dir: Path, run: Runner | None) -> list[str]:
    """Stop and disable the timer (with a `run`ner), delete both units; says so when none were there."""
    present = [path for path in units.paths(unit_dir) if path.exists()]
    if not present:
        return [f"no {units.timer_name} or {units.service_name} in {unit_dir}: nothing to remove"]
    done = _systemctl(run, [["disable", "--now", units.timer_name]])
    try:
        for path in present:
            path.unlink()
            done.append(f"removed {path}")
    except OSError as error:
        raise HubnodeError(
            f"cannot remove {error.filename}: {error.strerror}", fix="run it as root (sudo hubnode schedule ...)"
        ) from None
    return done + _systemctl(run, [["daemon-reload"]])


def _systemctl(run: Runner | None, commands: list[list[str]]) -> list[str]:
    if run is None:
        return [
            f"systemd is not PID 1 here, so nothing ran: on the host, run: systemctl {' '.join(c)}" for c in commands
        ]
    done = []
    for command in commands:
        try:
            run(["systemctl", *command])
        except (OSError, subprocess.CalledProcessError) as error:
            raise HubnodeError(
                f"systemctl {' '.join(command)} failed: {error}",
                fix="see `journalctl -xe`; the unit files are in place, fix the cause and run it again",
            ) from None
        done.append(f"ran systemctl {' '.join(command)}")
    return done


def run_checked(command: Sequence[str]) -> None:
    """Run `command`, raising when it fails (the `Runner` of the CLI)."""
    subprocess.run(list(command), check=True, capture_output=True, timeout=120)
