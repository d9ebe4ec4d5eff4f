"""The backup timer of a stack: rendered for this checkout, installed and removed; systemd asked only where it runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from infra import cli, timer_units
from infra.cli import main
from infra.errors import HubnodeError
from infra.schedule import parse_schedule
from infra.timer_units import install, remove, render

STACK_FILE = "config:\n  hubnode:site: dic\n  hubnode:backup:\n    schedule: weekly Sun 03:00\n    keep: 3\n"


def project(tmp_path: Path, stack_text: str = STACK_FILE) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
    (tmp_path / "Pulumi.bk.yaml").write_text(stack_text)
    return tmp_path


def test_the_service_runs_this_checkouts_backup_and_the_timer_catches_up_after_boot() -> None:
    units = render("bk", parse_schedule("daily 02:30"), Path("/srv/hub"), Path("/opt/venv/bin/python"), "hub")
    assert (units.service_name, units.timer_name) == ("hubnode-backup-bk.service", "hubnode-backup-bk.timer")
    service = units.service.splitlines()
    assert "Type=oneshot" in service
    assert "User=hub" in service
    assert "WorkingDirectory=/srv/hub" in service
    assert "ExecStart=/opt/venv/bin/python -m infra.cli --project-dir /srv/hub backup --stack bk" in service
    timer = units.timer.splitlines()
    assert "OnCalendar=*-*-* 02:30:00" in timer
    assert "Persistent=true" in timer
    assert "Unit=hubnode-backup-bk.service" in timer
    assert "WantedBy=timers.target" in timer


class Systemctl:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    def __call__(self, command: Sequence[str]) -> None:
        self.calls.append(list(command))
        if self.fail:
            raise subprocess.CalledProcessError(1, list(command))


def units() -> timer_units.Units:
    return render("bk", parse_schedule("daily"), Path("/srv/hub"), Path("/usr/bin/python3"), "hub")


def test_install_writes_both_units_and_starts_the_timer_where_systemd_runs(tmp_path: Path) -> None:
    systemctl = Systemctl()
    done = install(units(), tmp_path / "units", systemctl)
    service, timer = units().paths(tmp_path / "units")
    assert service.read_text() == units().service
    assert timer.read_text() == units().timer
    assert oct(timer.stat().st_mode & 0o777) == "0o644"
    assert systemctl.calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "hubnode-backup-bk.timer"],
    ]
    assert done[-1] == "ran systemctl enable --now hubnode-backup-bk.timer"


def test_without_systemd_install_writes_the_units_and_says_what_to_run(tmp_path: Path) -> None:
    done = install(units(), tmp_path, None)
    assert (tmp_path / "hubnode-backup-bk.timer").is_file()
    assert "on the host, run: systemctl enable --now hubnode-backup-bk.timer" in done[-1]


def test_remove_stops_the_timer_and_deletes_both_units(tmp_path: Path) -> None:
    install(units(), tmp_path, None)
    systemctl = Systemctl()
    done = remove(units(), tmp_path, systemctl)
    assert list(tmp_path.iterdir()) == []
    assert systemctl.calls == [
        ["systemctl", "disable", "--now", "hubnode-backup-bk.timer"],
        ["systemctl", "daemon-reload"],
    ]
    assert remove(units(), tmp_path, systemctl) == [
        f"no hubnode-backup-bk.timer or hubnode-backup-bk.service in {tmp_path}: nothing to remove"
    ]
    assert len(systemctl.calls) == 2
    assert "removed" in done[1]


def test_a_failing_systemctl_or_an_unwritable_folder_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(HubnodeError, match="systemctl daemon-reload failed") as failed:
        install(units(), tmp_path, Systemctl(fail=True))
    assert "journalctl" in str(failed.value)
    with pytest.raises(HubnodeError, match=r"cannot write .*/hubnode-backup-bk\.timer/sub: Not a directory") as refused:
        install(units(), tmp_path / "hubnode-backup-bk.timer" / "sub", None)
    assert "--unit-dir" in str(refused.value)

    def denied(path: Path, _content: bytes, _mode: int) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(timer_units, "write_atomically", denied)
    with pytest.raises(HubnodeError, match=r"hubnode-backup-bk\.service: Permission denied"):
        install(units(), tmp_path, None)


def test_schedule_prints_the_units_and_installs_them_in_the_unit_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project(tmp_path)
    monkeypatch.setattr(cli, "systemd_runs_host", lambda: False)
    assert main(["--project-dir", str(folder), "schedule", "--stack", "bk"]) == 0
    out = capsys.readouterr().out
    assert "# /etc/systemd/system/hubnode-backup-bk.timer" in out
    assert "OnCalendar=Sun *-*-* 03:00:00" in out
    assert f"ExecStart={Path(sys.executable).absolute()} -m infra.cli --project-dir {folder} backup --stack bk" in out
    units_dir = tmp_path / "units"
    assert (
        main(["--project-dir", str(folder), "schedule", "--stack", "bk", "--install", "--unit-dir", str(units_dir)])
        == 0
    )
    assert sorted(p.name for p in units_dir.iterdir()) == ["hubnode-backup-bk.service", "hubnode-backup-bk.timer"]
    assert "systemd is not PID 1 here" in capsys.readouterr().out
    assert (
        main(["--project-dir", str(folder), "schedule", "--stack", "bk", "--remove", "--unit-dir", str(units_dir)]) == 0
    )
    assert list(units_dir.iterdir()) == []


def test_schedule_of_a_stack_without_one_says_what_to_declare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project(tmp_path, "config:\n  hubnode:site: dic\n")
    assert main(["--project-dir", str(folder), "schedule", "--stack", "bk", "--install"]) == 1
    err = capsys.readouterr().err
    assert "hubnode: error: stack bk declares no backup schedule" in err
    assert "hubnode:backup: {schedule: daily 02:30}" in err
