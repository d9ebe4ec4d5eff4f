"""`hubnode backup` with a retention rule and `hubnode status` with a schedule, Docker left out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra import archive, backup, cli
from infra.cli import main
from infra.errors import HubnodeError
from infra.plan import NodePlan
from infra.state import StackState
from tests.unit.test_retention import write_archive

POLICY = "  hubnode:backup:\n    schedule: daily 02:30\n    keep: 2\n"


def project(tmp_path: Path, policy: str = POLICY) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
    (tmp_path / "Pulumi.bk.yaml").write_text(f"config:\n  hubnode:site: dic\n{policy}")
    return tmp_path


class Launcher:
    def status(self, plans: tuple[NodePlan, ...]) -> list[dict[str, Any]]:
        return [{"site": p.site, "role": p.role, "health": "up", "endpoints": {}, "services": {}} for p in plans]


@pytest.fixture
def no_docker(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """`backup_node` writes an empty archive of the node where it is told, as the real one would; returns them."""
    written: list[Path] = []
    monkeypatch.setattr(cli, "docker_client", lambda: None)
    monkeypatch.setattr(cli, "_launcher", lambda *_args: Launcher())

    def backup_node(_host: backup.Host, plan: NodePlan, _key: bytes, output: Path) -> backup.BackupDone:
        output.mkdir(parents=True, exist_ok=True)
        path = write_archive(output, plan.stack, plan.site, datetime.now(UTC))
        written.append(path)
        manifest = archive.Manifest({"created": datetime.now(UTC).isoformat(timespec="seconds")}, ())
        return backup.BackupDone(plan.site, path, manifest, 0.1, 0.2, 0.3)

    monkeypatch.setattr(cli, "backup_node", backup_node)
    return written


def older(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    return [write_archive(folder, "bk", "dic", now - timedelta(days=day + 1)) for day in range(count)]


def test_a_backup_removes_the_archives_the_stacks_policy_does_not_keep_and_says_which(
    tmp_path: Path, no_docker: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project(tmp_path)
    old = older(StackState(folder, "bk").backups_dir, 3)
    assert main(["--project-dir", str(folder), "backup", "--stack", "bk"]) == 0
    assert [p.exists() for p in old] == [True, False, False]
    assert no_docker[0].exists()
    out = capsys.readouterr().out
    assert "dic: removed 2 older archive(s), keeping the newest 2:" in out
    assert f"  {old[2]}" in out


def test_keep_on_the_command_line_overrides_the_policy_and_output_the_folder(
    tmp_path: Path, no_docker: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project(tmp_path, POLICY + "    output: archives\n")
    declared = older(folder / "archives", 2)
    assert main(["--project-dir", str(folder), "backup", "--stack", "bk", "--keep", "1"]) == 0
    assert no_docker[0].parent == folder / "archives"
    assert not any(p.exists() for p in declared)
    elsewhere = older(tmp_path / "elsewhere", 2)
    assert main(["--project-dir", str(folder), "backup", "--stack", "bk", "--output", str(tmp_path / "elsewhere")]) == 0
    assert [p.exists() for p in elsewhere] == [True, False]
    assert no_docker[1].parent == tmp_path / "elsewhere"
    capsys.readouterr()


def test_without_a_policy_or_keep_every_archive_stays(tmp_path: Path, no_docker: list[Path]) -> None:
    folder = project(tmp_path, "")
    old = older(StackState(folder, "bk").backups_dir, 3)
    assert main(["--project-dir", str(folder), "backup", "--stack", "bk"]) == 0
    assert all(p.exists() for p in [*old, *no_docker])


def test_a_failed_backup_removes_nothing(
    tmp_path: Path, no_docker: list[Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project(tmp_path)
    old = older(StackState(folder, "bk").backups_dir, 3)

    def failing(*_args: object) -> backup.BackupDone:
        raise HubnodeError("tar failed while copying volume x out")

    monkeypatch.setattr(cli, "backup_node", failing)
    assert main(["--project-dir", str(folder), "backup", "--stack", "bk", "--keep", "1"]) == 1
    assert all(p.exists() for p in old)
    assert "hubnode: error: tar failed" in capsys.readouterr().err


def test_keep_must_be_a_whole_number_above_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--project-dir", str(project(tmp_path)), "backup", "--stack", "bk", "--keep", "0"])
    assert exit_.value.code == 2
    assert "--keep: '0' is not a whole number above 0" in capsys.readouterr().err


def status(folder: Path, capsys: pytest.CaptureFixture[str], *options: str) -> str:
    assert main(["--project-dir", str(folder), "status", "--stack", "bk", *options]) == 0
    return capsys.readouterr().out


def last_backup(folder: Path, created: datetime) -> None:
    record = {"dic": {"archive": "/x.hnb", "created": created.isoformat(timespec="seconds"), "bytes": 1}}
    StackState(folder, "bk").backup_record.parent.mkdir(parents=True, exist_ok=True)
    StackState(folder, "bk").backup_record.write_text(json.dumps(record))


def test_status_shows_the_schedule_and_marks_an_overdue_backup(
    tmp_path: Path, no_docker: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project(tmp_path)
    assert "backups      scheduled daily 02:30 (*-*-* 02:30:00); no backup yet" in status(folder, capsys)
    last_backup(folder, datetime.now(UTC) - timedelta(days=3))
    assert "; OVERDUE: no backup since the run due " in status(folder, capsys)
    [node] = json.loads(status(folder, capsys, "--json"))["nodes"]
    assert node["backup_schedule"]["overdue"] is True
    assert node["backup_schedule"]["on_calendar"] == "*-*-* 02:30:00"
    last_backup(folder, datetime.now(UTC) - timedelta(minutes=1))
    assert "; next due " in status(folder, capsys)
    [node] = json.loads(status(folder, capsys, "--json"))["nodes"]
    assert node["backup_schedule"]["overdue"] is False
    assert datetime.fromisoformat(node["backup_schedule"]["due"]) > datetime.now(UTC)


def test_status_of_a_stack_without_a_schedule_says_nothing_of_one(
    tmp_path: Path, no_docker: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project(tmp_path, "")
    assert "scheduled" not in status(folder, capsys)
    [node] = json.loads(status(folder, capsys, "--json"))["nodes"]
    assert "backup_schedule" not in node
