"""Cold backups of a local node into one encrypted archive, and their restore into an empty stack.

What a node is, on this host: its named volumes (`NodePlan.volumes`: every database, the identity
provider's and the portal's data) and its files under `.hubnode/<stack>/` (its secrets, which the data
needs: database passwords, the trust centre's pseudonym key; its federation certificate and key, the
federation CA's certificate, revocation list and allow list). A backup stops the node's containers, so
the copy is consistent without knowing each database's own tools, copies each volume out as a tar
(numeric owners, modes) through a short-lived helper container running one of the node's own images,
and starts the node again, also when the copy failed. The archive format is `infra.archive`.

Not in an archive: the federation CA's private key (`.hubnode/<stack>/ca/`). It belongs to whoever runs
the federation, not to a node, and a node's archive that carried it would let anyone holding that archive
and its key issue certificates every node of the federation trusts. Restored into a stack without it,
`hubnode up` issues a new CA and certificates, as for any new local stack.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import LogConfig

from infra import archive
from infra.errors import HubnodeError
from infra.files import create_private
from infra.local import LocalLauncher
from infra.plan import FEDERATION_FILES, LABEL_PREFIX, NodePlan
from infra.progress import Progress
from infra.state import StackState

SUFFIX = ".hnb"
KEY_MODE = 0o400
ARCHIVE_MODE = 0o600
#: Where the helper container mounts the volume it copies.
HELPER_MOUNT = "/volume"
#: What tar as root needs to read and recreate every file of a volume, whoever owns it; nothing else.
HELPER_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID")
HELPER_ERROR_BYTES = 4096
VOLUME_KIND, FILE_KIND = "volume", "file"
#: State files restored over what the stack holds (the data needs them) ...
_REPLACED = re.compile(r"secrets/(?P<site>[a-z0-9-]+)/[A-Za-z0-9._-]+")
#: ... and files of the federation, restored only where the stack has none (the stack's current CA wins).
_KEPT = re.compile(r"(pki|federation)/[A-Za-z0-9._-]+")
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Host:
    """Where a stack's nodes run: the engine, the launcher that stops and starts them, their state, progress."""

    client: docker.DockerClient
    launcher: LocalLauncher
    state: StackState
    progress: Progress


@dataclass(frozen=True)
class BackupDone:
    """One node's archive: where, how large, how long the copy took and how long the node was unavailable.

    `unavailable_s` runs from stopping the first container to the node answering again (its restart and
    health checks included), which is what its users notice; `copy_s` is the copy alone.
    """

    site: str
    path: Path
    manifest: archive.Manifest
    copy_s: float
    unavailable_s: float
    took_s: float


@dataclass(frozen=True)
class RestoreDone:
    """What a restore put back."""

    site: str
    volumes: tuple[str, ...]
    files: tuple[str, ...]
    kept: tuple[str, ...]
    took_s: float


def load_key(path: Path) -> bytes:
    """The backup key in `path`; a clear error when it is missing or not a key."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        raise HubnodeError(
            f"no backup key {path}",
            fix="put the copy of this stack's backup key there, or name it with --key FILE",
        ) from None
    if len(key) != archive.KEY_BYTES:
        raise HubnodeError(f"{path} is no backup key: {len(key)} bytes, not {archive.KEY_BYTES}")
    return key


def ensure_key(path: Path) -> tuple[bytes, bool]:
    """The stack's backup key, made on first use (owner read-only); True when it was just made."""
    if path.is_file():
        return load_key(path), False
    install_key(path, archive.new_key())
    return load_key(path), True


def install_key(path: Path, key: bytes) -> None:
    """Write `key` to `path`, owner read-only from the moment it exists."""
    create_private(path, key, KEY_MODE)


def archive_name(stack: str, site: str, created: datetime) -> str:
    """`hubnode-backup-<stack>-<site>-<UTC time>.hnb`."""
    return f"hubnode-backup-{stack}-{site}-{created.astimezone(UTC):%Y%m%dT%H%M%SZ}{SUFFIX}"


def volume_member(plan: NodePlan, volume: str) -> str:
    """A volume's member name, without the stack and site (so it restores into another stack's names)."""
    return f"{VOLUME_KIND}/{volume.removeprefix(plan.network + '-')}"


def state_files(state: StackState, site: str) -> list[tuple[str, Path]]:
    """The node's files under `.hubnode/<stack>/` an archive carries, as (member name, file).

    Its secrets folder but the copies of federation files in it (`up` makes those anew from `pki/`);
    from the federation's files its own certificate and key, the CA's certificate (never its key), the
    revocation list and the allow list.
    """
    secrets = state.secrets_dir(site)
    found = [
        (f"state/secrets/{site}/{path.name}", path)
        for path in (sorted(secrets.iterdir()) if secrets.is_dir() else [])
        if path.is_file() and path.name not in FEDERATION_FILES
    ]
    federation = [state.pki_dir / name for name in ("ca.crt", f"{site}.crt", f"{site}.key", "federation.crl")]
    federation += [state.pki_dir / "revoked.json", state.folder / "federation" / "allow-list.json"]
    found += [(f"state/{path.relative_to(state.folder)}", path) for path in federation if path.is_file()]
    return found


def state_target(state: StackState, site: str, member: str) -> tuple[Path, bool]:
    """Where a state member goes in the stack, and whether it replaces a file there; refuses foreign names."""
    relative = member.removeprefix("state/")
    replaced = _REPLACED.fullmatch(relative)
    if replaced is not None and replaced["site"] == site:
        return state.folder / relative, True
    if _KEPT.fullmatch(relative) and _SAFE_NAME.fullmatch(relative.split("/")[1]) and ".." not in relative:
        return state.folder / relative, False
    raise archive.ArchiveError(f"member {member} is not a file a node of site {site} keeps: refused")


class VolumeCopier:
    """Tar streams of named volumes, out of and into Docker, through a short-lived helper container.

    The helper runs tar as root with just the capabilities tar needs, no network, on a read-only root,
    and its output never goes to a log (it is the data). `image` is one already on this host: nothing
    is pulled.
    """

    def __init__(self, client: docker.DockerClient, image: str, labels: dict[str, str]) -> None:
        self._client, self._image = client, image
        self._labels = {**labels, f"{LABEL_PREFIX}.component": "backup-helper"}

    def export(self, volume: str) -> Generator[bytes, None, None]:
        """The volume's content as a tar stream (numeric owners), read-only mounted."""
        tar = ["--numeric-owner", "-C", HELPER_MOUNT, "-cf", "-", "."]
        container = self._helper(volume, tar, writable=False)
        output = None
        try:
            output = container.attach(stdout=True, stderr=True, stream=True, demux=True)
            container.start()
            errors = bytearray()
            for out, err in output:
                if err:
                    errors += err[: HELPER_ERROR_BYTES - len(errors)]
                if out:
                    yield out
            _check_exit(container, bytes(errors), f"copying volume {volume} out")
        finally:
            if output is not None:
                output.close()
            _discard(container)

    def fill(self, volume: str, blocks: Iterable[bytes]) -> None:
        """Unpack a tar stream into the (empty) volume, with the owners and modes it records.

        If `blocks` fails, the helper is removed without waiting for tar, which would wait for more.
        """
        tar = ["--numeric-owner", "--same-owner", "--same-permissions", "-C", HELPER_MOUNT, "-xf", "-"]
        container = self._helper(volume, tar, writable=True)
        attached = None
        try:
            attached = container.attach_socket(params={"stdin": 1, "stream": 1})
            raw: socket.socket = getattr(attached, "_sock", attached)
            raw.settimeout(None)
            container.start()
            try:
                for block in blocks:
                    raw.sendall(block)
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # tar stopped reading: its exit code and log say why
            _check_exit(container, b"", f"filling volume {volume}")
        finally:
            if attached is not None:
                attached.close()
            _discard(container)

    def _helper(self, volume: str, tar: list[str], *, writable: bool) -> Any:  # noqa: ANN401 -- docker's Container
        return self._client.containers.create(
            self._image,
            entrypoint=["tar"],
            command=tar,
            user="0:0",
            network_mode="none",
            volumes={volume: {"bind": HELPER_MOUNT, "mode": "rw" if writable else "ro"}},
            labels=self._labels,
            cap_drop=["ALL"],
            cap_add=list(HELPER_CAPABILITIES),
            security_opt=["no-new-privileges:true"],
            read_only=True,
            mem_limit="256m",
            pids_limit=64,
            stdin_open=writable,  # and closed at the end of what is sent (docker-py sets StdinOnce with it)
            # The stream out is the volume's data: a log driver would keep a copy of it on the host.
            log_config=LogConfig(type="json-file" if writable else "none"),
        )


def _discard(helper: Any) -> None:  # noqa: ANN401 -- docker's Container
    """Remove a helper with the anonymous volume its image's `VOLUME` gave it (empty: tar used /volume)."""
    helper.remove(force=True, v=True)


def _check_exit(container: Any, errors: bytes, doing: str) -> None:  # noqa: ANN401 -- docker's Container
    code = int(container.wait().get("StatusCode", -1))
    if code != 0:
        if not errors:
            with contextlib.suppress(docker.errors.APIError):
                errors = container.logs(stdout=True, stderr=True, tail=20)
        raise HubnodeError(
            f"tar failed while {doing} (exit code {code}): {errors.decode(errors='replace').strip()[-500:]}",
            fix="see tar's message; nothing was kept of the failed copy",
        )


def helper_image(client: docker.DockerClient, plan: NodePlan) -> str:
    """An image of the node already on this host to run tar in (Debian-based, so it has tar); never pulled."""
    for service in plan.services:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(service.image.reference)
            return service.image.reference
    raise HubnodeError(
        f"none of the images of {plan.site} is on this host, and one is needed to copy its volumes",
        fix=f"run: hubnode images --stack {plan.stack}",
    )


def _about(plan: NodePlan, created: datetime) -> dict[str, Any]:
    return {
        "hubnode": version("hubnode"),
        "stack": plan.stack,
        "site": plan.site,
        "role": plan.role,
        "created": created.astimezone(UTC).isoformat(timespec="seconds"),
        "volumes": [volume_member(plan, volume) for volume in plan.volumes],
        "not_included": "the federation CA's private key: it belongs to the federation, never to a node's copy",
    }


def backup_node(host: Host, plan: NodePlan, key: bytes, output: Path) -> BackupDone:
    """Stop the node, copy its volumes and files into one archive in `output`, start it again.

    The archive is written under a temporary name and renamed when complete, so a file with the
    archive's name is always a whole archive.
    """
    began, client, progress = time.monotonic(), host.client, host.progress
    for volume in plan.volumes:
        try:
            client.volumes.get(volume)
        except docker.errors.NotFound:
            raise HubnodeError(
                f"{plan.site} has no volume {volume}: there is nothing to back up",
                fix=f"bring the node up first: hubnode up --stack {plan.stack}",
            ) from None
    copier = VolumeCopier(client, helper_image(client, plan), dict(plan.labels))
    created = datetime.now(UTC)
    output.mkdir(parents=True, exist_ok=True)
    path = output / archive_name(plan.stack, plan.site, created)
    descriptor, partial = tempfile.mkstemp(dir=output, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as out:
            writer = archive.ArchiveWriter(out, key, _about(plan, created))
            for name, file in state_files(host.state, plan.site):
                writer.add_file(name, file)
            stopping = time.monotonic()
            with host.launcher.stopped(plan):
                progress.note(f"{plan.site}: stopped; copying {len(plan.volumes)} volume(s)")
                for volume in plan.volumes:
                    with contextlib.closing(copier.export(volume)) as stream:  # the helper goes even on failure
                        member = writer.add(volume_member(plan, volume), VOLUME_KIND, stream)
                    progress.note(f"{plan.site}: {volume} copied ({_size(member.size)})")
                copied = time.monotonic() - stopping
                progress.note(f"{plan.site}: copied after {copied:.1f} s stopped; starting it again")
            unavailable = time.monotonic() - stopping
            manifest = writer.close()
        Path(partial).chmod(ARCHIVE_MODE)
        Path(partial).replace(path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return BackupDone(plan.site, path, manifest, copied, unavailable, time.monotonic() - began)


def archive_about(path: Path) -> dict[str, Any]:
    """What an archive says it is of (stack, site, created), read from its header without the key."""
    try:
        with path.open("rb") as stream:
            return dict(archive.read_header(stream).get("about") or {})
    except OSError as error:
        raise HubnodeError(f"cannot read {path}: {error.strerror}") from None


def refuse_unless_empty(host: Host, plan: NodePlan) -> None:
    """A restore goes only where the node has no container and no volume: it never mixes data."""
    containers = [str(c.name) for c in host.launcher.node_containers(plan)]
    volumes = []
    for volume in plan.volumes:
        with contextlib.suppress(docker.errors.NotFound):
            host.client.volumes.get(volume)
            volumes.append(volume)
    if containers or volumes:
        held = ", ".join([*containers, *volumes])
        raise HubnodeError(
            f"stack {plan.stack} already holds node {plan.site} ({held}); a restore needs an empty stack",
            fix=f"hubnode down --stack {plan.stack} --volumes (after a backup of what it holds), then restore",
        )


#: Volumes a newer release added to a node, by member name: an archive made before holds none of them,
#: and restores without them (`hubnode up` makes them empty), with what fills them then.
LATER_VOLUMES: Mapping[str, str] = {
    "volume/cndb-data": "the connector's PostgreSQL: its first start adopts the store in connector-data",
}


def restore_node(host: Host, plan: NodePlan, path: Path, key: bytes) -> RestoreDone:
    """Verify the whole archive, then fill the node's volumes and put back its files; undo it all on failure.

    The first pass decrypts and checks every chunk and member and changes nothing; only an archive that
    passes is read again and unpacked. Volumes this restore created are removed if anything fails.
    """
    began, client, state = time.monotonic(), host.client, host.state
    refuse_unless_empty(host, plan)
    manifest = archive.verify(path, key)
    _check_fits(manifest, plan)
    host.progress.note(f"{path.name}: verified, {len(manifest.members)} member(s), {_size(manifest.size)}")
    volumes = {volume_member(plan, volume): volume for volume in plan.volumes}
    for absent in sorted(volumes.keys() - {m.name for m in manifest.members}):
        host.progress.note(f"{plan.site}: no {absent} (the archive is older than it); {LATER_VOLUMES[absent]}")
    copier = VolumeCopier(client, helper_image(client, plan), dict(plan.labels))
    created: list[str] = []
    staged: list[tuple[Path, Path, bool]] = []
    staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=_existing(state.folder)))
    try:
        with path.open("rb") as stream:
            reader = archive.ArchiveReader(stream, key)
            for member in reader:
                if member.kind == VOLUME_KIND:
                    volume = _volume_of(volumes, member.name, plan.site)
                    client.volumes.create(volume, labels=dict(plan.labels))
                    created.append(volume)
                    copier.fill(volume, member.blocks)
                    host.progress.note(f"{plan.site}: {volume} filled")
                else:
                    target, replaces = state_target(state, plan.site, member.name)
                    copy = staging / str(len(staged))
                    copy.write_bytes(b"".join(member.blocks))
                    copy.chmod(member.mode if member.mode is not None else 0o600)
                    staged.append((copy, target, replaces))
        files, kept = _put_in_place(staged)
    except BaseException:
        for volume in reversed(created):
            with contextlib.suppress(docker.errors.APIError):
                client.volumes.get(volume).remove(force=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    relative = tuple(str(f.relative_to(state.folder)) for f in files)
    return RestoreDone(plan.site, tuple(created), relative, tuple(kept), time.monotonic() - began)


def _volume_of(volumes: dict[str, str], member: str, site: str) -> str:
    if member not in volumes:
        raise archive.ArchiveError(f"member {member} is no volume of {site}: refused")
    return volumes[member]


def _existing(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def _check_fits(manifest: archive.Manifest, plan: NodePlan) -> None:
    """The archive is of this site and holds exactly the volumes its plan names (but those added since)."""
    if manifest.about.get("site") != plan.site:
        raise HubnodeError(f"the archive is of site {manifest.about.get('site')!r}, not {plan.site!r}")
    held = sorted(m.name for m in manifest.members if m.kind == VOLUME_KIND)
    wanted = sorted(volume_member(plan, volume) for volume in plan.volumes)
    if not set(held) <= set(wanted) or not set(wanted) - set(held) <= LATER_VOLUMES.keys():
        raise HubnodeError(
            f"the archive holds the volumes {', '.join(held) or 'none'}; node {plan.site} of stack {plan.stack}"
            f" plans {', '.join(wanted) or 'none'}",
            fix="restore into a stack whose node has the same components and database as the one backed up",
        )


def _put_in_place(staged: list[tuple[Path, Path, bool]]) -> tuple[list[Path], list[str]]:
    """Move staged files to their places: secrets replace what is there, federation files only fill gaps."""
    placed: list[Path] = []
    kept: list[str] = []
    for copy, target, replaces in staged:
        if target.exists() and not replaces:
            if target.read_bytes() != copy.read_bytes():
                kept.append(target.name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        copy.replace(target)
        placed.append(target)
    return placed, kept


def _size(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB"


def record(state: StackState, done: BackupDone) -> None:
    """Remember the node's last backup for `hubnode status` (`.hubnode/<stack>/backups.json`)."""
    records = last_backups(state)
    records[done.site] = {
        "archive": str(done.path),
        "created": done.manifest.about["created"],
        "bytes": done.path.stat().st_size,
        "unavailable_s": round(done.unavailable_s, 1),
    }
    state.backup_record.parent.mkdir(parents=True, exist_ok=True)
    state.backup_record.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")


def last_backups(state: StackState) -> dict[str, Any]:
    """Each node's last backup, as `record` wrote it (nothing if none was made)."""
    try:
        found = json.loads(state.backup_record.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
