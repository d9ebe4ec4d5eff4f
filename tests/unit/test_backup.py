"""What a node's archive carries and where it goes back, the backup key, refusals and roll-back (no Docker)."""

from __future__ import annotations

import io
import stat
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from infra import archive, backup
from infra.cli import _remove_local_state, main
from infra.errors import HubnodeError
from infra.plan import NodePlan, plan_stack
from infra.progress import Progress
from infra.spec import parse_stack
from infra.state import StackState

KEY = bytes(range(32))


def plan(stack: str = "bk", database: str = "postgres") -> NodePlan:
    values = {"hubnode:site": "dic", "hubnode:database": database, "hubnode:components": ["fhir", "trustcentre"]}
    [node] = plan_stack(parse_stack(stack, values))
    return node


def stack_state(tmp_path: Path) -> StackState:
    state = StackState(tmp_path, "bk")
    secrets = state.secrets_dir("dic")
    secrets.mkdir(parents=True, exist_ok=True)
    for name in ("db-password", "tc-secret", "node-key", "allow-list"):
        (secrets / name).write_text(f"{name}-content")
    state.secrets_dir("practice").mkdir(parents=True, exist_ok=True)
    (state.secrets_dir("practice") / "tc-secret").write_text("practice's")
    state.pki_dir.mkdir(exist_ok=True)
    for name in ("ca.crt", "dic.crt", "dic.key", "practice.crt", "practice.key", "federation.crl", "revoked.json"):
        (state.pki_dir / name).write_text(name)
    (state.folder / "ca").mkdir(exist_ok=True)
    (state.folder / "ca" / "ca.key").write_text("the federation's own")
    (state.folder / "federation").mkdir(exist_ok=True)
    (state.folder / "federation" / "allow-list.json").write_text("{}")
    return state


def test_an_archive_carries_the_nodes_secrets_and_certificates_but_never_the_ca_key(tmp_path: Path) -> None:
    state = stack_state(tmp_path)
    names = [name for name, _ in backup.state_files(state, "dic")]
    assert names == [
        "state/secrets/dic/db-password",
        "state/secrets/dic/tc-secret",
        "state/pki/ca.crt",
        "state/pki/dic.crt",
        "state/pki/dic.key",
        "state/pki/federation.crl",
        "state/pki/revoked.json",
        "state/federation/allow-list.json",
    ]
    assert not any("ca.key" in name or "practice" in name for name in names)


def test_state_members_go_back_to_their_places_and_nothing_else_is_accepted(tmp_path: Path) -> None:
    state = StackState(tmp_path, "other")
    assert backup.state_target(state, "dic", "state/secrets/dic/tc-secret") == (
        state.folder / "secrets/dic/tc-secret",
        True,
    )
    assert backup.state_target(state, "dic", "state/pki/dic.key") == (state.folder / "pki/dic.key", False)
    for foreign in (
        "state/secrets/practice/tc-secret",
        "state/../../etc/passwd",
        "state/pki/../ca/ca.key",
        "state/ca/ca.key",
        "state//etc/x",
        "state/secrets/dic/../../x",
    ):
        with pytest.raises(archive.ArchiveError, match="refused"):
            backup.state_target(state, "dic", foreign)


def test_volume_members_are_named_without_stack_and_site() -> None:
    node = plan()
    assert [backup.volume_member(node, v) for v in node.volumes] == [
        "volume/db-data",
        "volume/fhir-data",
        "volume/tcdb-data",
        "volume/trustcentre-data",
    ]
    other = plan("elsewhere")
    assert [backup.volume_member(other, v) for v in other.volumes] == [
        backup.volume_member(node, v) for v in node.volumes
    ]


def test_archive_names_carry_stack_site_and_utc_time() -> None:
    created = datetime(2026, 12, 4, 18, 5, 9, tzinfo=UTC)
    assert backup.archive_name("dev", "dic", created) == "hubnode-backup-dev-dic-20261204T180509Z.hnb"


def test_the_backup_key_is_made_once_owner_read_only_and_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "bk" / "backup-key"
    key, made = backup.ensure_key(path)
    assert made
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert backup.ensure_key(path) == (key, False)


def test_a_missing_or_broken_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(HubnodeError, match=r"no backup key .*nokey") as missing:
        backup.load_key(tmp_path / "nokey")
    assert "--key FILE" in str(missing.value)
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(HubnodeError, match=r"short is no backup key: 3 bytes"):
        backup.load_key(tmp_path / "short")


def test_down_volumes_keeps_the_backup_key_and_record(tmp_path: Path) -> None:
    state = stack_state(tmp_path)
    backup.install_key(state.backup_key, KEY)
    state.backup_record.write_text("{}")
    _remove_local_state(state.folder, keep={state.backup_key, state.backup_record})
    assert sorted(p.name for p in state.folder.iterdir()) == ["backup-key", "backups.json"]
    _remove_local_state(state.folder, keep=set())
    assert not state.folder.exists()


class FakeVolumes:
    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = set(names)

    def get(self, name: str) -> Any:
        if name not in self.names:
            raise docker.errors.NotFound(name)
        volumes = self

        class Volume:
            def remove(self, force: bool = False) -> None:
                volumes.names.discard(name)

        return Volume()

    def create(self, name: str, labels: dict[str, str]) -> None:
        assert labels["org.hubnode.stack"] == "bk"
        self.names.add(name)


class FakeClient:
    def __init__(self, volumes: Iterable[str] = ()) -> None:
        self.volumes = FakeVolumes(volumes)
        self.images = self

    def get(self, reference: str) -> object:
        return object()


class FakeLauncher:
    def __init__(self, containers: Iterable[str] = ()) -> None:
        self.containers = [type("C", (), {"name": name})() for name in containers]

    def node_containers(self, _plan: NodePlan) -> list[Any]:
        return self.containers


class FakeCopier:
    filled: dict[str, bytes]
    fail_on: str | None = None

    def __init__(self, *_args: object) -> None:
        pass

    def fill(self, volume: str, blocks: Iterable[bytes]) -> None:
        if volume == self.fail_on:
            raise HubnodeError("tar failed")
        FakeCopier.filled[volume] = b"".join(blocks)


def node_archive(tmp_path: Path, node: NodePlan, key: bytes = KEY) -> Path:
    path = tmp_path / "node.hnb"
    state = stack_state(tmp_path / "source")
    with path.open("wb") as out:
        writer = archive.ArchiveWriter(out, key, backup._about(node, datetime.now(UTC)))
        for name, file in backup.state_files(state, node.site):
            writer.add_file(name, file)
        for volume in node.volumes:
            writer.add(backup.volume_member(node, volume), "volume", [volume.encode() * 1000])
        writer.close()
    return path


@pytest.fixture
def copier(monkeypatch: pytest.MonkeyPatch) -> type[FakeCopier]:
    FakeCopier.filled, FakeCopier.fail_on = {}, None
    monkeypatch.setattr(backup, "VolumeCopier", FakeCopier)
    return FakeCopier


def restore(tmp_path: Path, client: FakeClient, path: Path, launcher: FakeLauncher | None = None) -> backup.RestoreDone:
    state = StackState(tmp_path / "target", "bk")
    quiet = Progress(io.StringIO())
    host = backup.Host(client, launcher or FakeLauncher(), state, quiet)  # type: ignore[arg-type]
    return backup.restore_node(host, plan(), path, KEY)


def test_a_restore_fills_every_volume_and_puts_the_files_back(tmp_path: Path, copier: type[FakeCopier]) -> None:
    node = plan()
    client = FakeClient()
    done = restore(tmp_path, client, node_archive(tmp_path, node))
    assert client.volumes.names == set(node.volumes)
    assert copier.filled == {volume: volume.encode() * 1000 for volume in node.volumes}
    target = tmp_path / "target" / ".hubnode" / "bk"
    assert (target / "secrets/dic/tc-secret").read_text() == "tc-secret-content"
    assert not (target / "secrets/dic/node-key").exists()
    assert not (target / "ca").exists()
    assert "pki/dic.key" in done.files


def test_a_failed_restore_removes_the_volumes_it_made(tmp_path: Path, copier: type[FakeCopier]) -> None:
    node = plan()
    copier.fail_on = node.volumes[2]
    client = FakeClient(volumes=["someone-elses"])
    with pytest.raises(HubnodeError, match="tar failed"):
        restore(tmp_path, client, node_archive(tmp_path, node))
    assert client.volumes.names == {"someone-elses"}
    assert not (tmp_path / "target" / ".hubnode" / "bk" / "secrets").exists()


@pytest.mark.parametrize(("volumes", "containers"), [(["hubnode-bk-dic-fhir-data"], []), ([], ["hubnode-bk-dic-fhir"])])
def test_a_restore_into_a_stack_that_holds_the_node_changes_nothing(
    tmp_path: Path, copier: type[FakeCopier], volumes: list[str], containers: list[str]
) -> None:
    client = FakeClient(volumes=volumes)
    with pytest.raises(HubnodeError, match="a restore needs an empty stack") as refused:
        restore(tmp_path, client, node_archive(tmp_path, plan()), FakeLauncher(containers))
    assert "hubnode down --stack bk --volumes" in str(refused.value)
    assert client.volumes.names == set(volumes)
    assert copier.filled == {}


def test_a_restore_with_the_wrong_key_or_a_damaged_archive_changes_nothing(
    tmp_path: Path, copier: type[FakeCopier]
) -> None:
    path = node_archive(tmp_path, plan(), key=bytes(32))
    client = FakeClient()
    with pytest.raises(archive.ArchiveError, match="another backup key"):
        restore(tmp_path, client, path)
    path = node_archive(tmp_path, plan())
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:-40]))
    with pytest.raises(archive.ArchiveError, match="truncated"):
        restore(tmp_path, client, path)
    assert client.volumes.names == set()
    assert copier.filled == {}


def test_an_archive_of_another_kind_of_node_is_refused(tmp_path: Path, copier: type[FakeCopier]) -> None:
    path = node_archive(tmp_path, plan(database="embedded"))
    with pytest.raises(HubnodeError, match="the archive holds the volumes volume/fhir-data, volume/trustcentre"):
        restore(tmp_path, FakeClient(), path)


def test_an_archive_made_before_a_volume_was_added_restores_without_it_and_says_so(
    tmp_path: Path, copier: type[FakeCopier], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "volume/cndb-data" in backup.LATER_VOLUMES, "the connector's PostgreSQL came after the first releases"
    monkeypatch.setitem(backup.LATER_VOLUMES, "volume/tcdb-data", "made empty by hubnode up")
    node = plan()
    older = replace(node, volumes=tuple(v for v in node.volumes if not v.endswith("-tcdb-data")))
    client = FakeClient()
    restore(tmp_path, client, node_archive(tmp_path, older))
    assert client.volumes.names == set(older.volumes), "the added one is left to hubnode up"
    monkeypatch.delitem(backup.LATER_VOLUMES, "volume/tcdb-data")
    client = FakeClient()
    with pytest.raises(HubnodeError, match="the archive holds the volumes"):
        restore(tmp_path / "again", client, node_archive(tmp_path / "again", older))


def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text("name: hubnode\nruntime: python\n")
    (tmp_path / "Pulumi.bk.yaml").write_text("config:\n  hubnode:site: dic\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["restore", "--stack", "bk", "missing.hnb"], "no archive missing.hnb"),
        (["restore", "--stack", "bk", "Pulumi.yaml"], "not a hubnode backup"),
        (["restore", "--stack", "bk", "--site", "lab", "node.hnb"], "stack bk has no node 'lab' (its nodes: dic)"),
        (["restore", "--stack", "bk", "node.hnb"], "no backup key"),
        (["restore", "--stack", "bk", "--key", "Pulumi.yaml", "node.hnb"], "Pulumi.yaml is no backup key"),
        (["backup", "--stack", "bk", "--site", "lab"], "stack bk has no node 'lab'"),
    ],
)
def test_the_cli_names_what_is_wrong_in_one_line_without_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    folder = project(tmp_path)
    node_archive(folder, plan())
    monkeypatch.chdir(folder)
    assert main(["--project-dir", str(folder), *args]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_restore_needs_an_archive_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["restore", "--stack", "bk"])
    assert exit_.value.code == 2
    assert "ARCHIVE" in capsys.readouterr().err
