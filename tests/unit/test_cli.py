"""The CLI's failure paths that need no Docker: one clear message, a fix, a non-zero exit."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.volume import write_volume
from infra import bootstrap
from infra.cli import main
from infra.errors import HubnodeError
from infra.progress import Progress


def project(tmp_path: Path, stack_text: str) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
    (tmp_path / "Pulumi.dev.yaml").write_text(stack_text)
    return tmp_path


def test_a_broken_stack_file_fails_before_docker_is_touched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = project(tmp_path, "config:\n  hubnode:site: dev\n  hubnode:components: [fhir, ldap]\n")
    assert main(["--project-dir", str(folder), "up", "--stack", "dev"]) == 1
    err = capsys.readouterr().err
    assert "hubnode: error:" in err
    assert "hubnode:components (line 3) = ['ldap']: unknown component" in err
    assert "fix: edit" in err
    assert "Traceback" not in err


def test_the_project_is_found_from_a_subfolder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = project(tmp_path, "config:\n  hubnode:database: sqlite\n")
    (folder / "sub").mkdir()
    monkeypatch.chdir(folder / "sub")
    assert main(["status"]) == 1
    assert "hubnode:database (line 2) = 'sqlite'" in capsys.readouterr().err


def test_outside_a_project_the_error_says_to_pass_project_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["up"]) == 1
    assert "pass --project-dir" in capsys.readouterr().err


def test_no_engine_and_no_root_ends_with_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable() -> None:
        raise HubnodeError("no Docker engine answers (unix:///var/run/docker.sock): refused")

    monkeypatch.setattr(bootstrap, "docker_client", unreachable)
    monkeypatch.setattr(bootstrap.os, "geteuid", lambda: 1000)
    with pytest.raises(HubnodeError) as caught:
        bootstrap.ensure_docker_engine(Progress(quiet=True))
    assert "not root, so it cannot install or start one" in caught.value.message
    assert "sudo hubnode bootstrap" in caught.value.fix


def test_an_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["launch"])
    assert caught.value.code == 2
    assert "invalid choice: 'launch'" in capsys.readouterr().err


def test_generate_writes_the_volume_of_the_seed_and_refuses_a_folder_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v.ndjson.gz"
    assert main(["generate", "--patients", "3", "--seed", "4", "--out", str(out)]) == 0
    assert "wrote 3 patients, " in capsys.readouterr().out
    write_volume(tmp_path / "same.ndjson.gz", 3, 4)
    assert out.read_bytes() == (tmp_path / "same.ndjson.gz").read_bytes()
    assert main(["generate", "--patients", "3", "--out", str(tmp_path / "no" / "v.ndjson")]) == 1
    assert f"no folder {tmp_path / 'no'}" in capsys.readouterr().err
