"""The backup archive format (`.hnb`): named members, a manifest, streamed and encrypted in chunks.

Pure (no Docker): `infra.backup` decides what goes in. Archives can hold gigabytes of database
files, so nothing here holds more than one chunk in memory, and restoring verifies as it reads.

On disk: the magic line, a header (JSON: format version, cipher, chunk size, nonce prefix, the key's
id and what the archive is of) and then chunks, each its ciphertext length and AES-256-GCM
ciphertext. Chunk `i` is sealed with nonce = random 8-byte prefix + `i`, and its associated data
binds the header, `i` and whether it is the last chunk; so a changed byte, a changed header, chunks
swapped or dropped, and an archive cut short (no chunk marked last) are all refused, and the key's id
tells a wrong key from a damaged archive.

Decrypted: members one after the other, each a JSON head (name, kind, mode) and its data in length-
prefixed blocks up to an empty block; then the manifest (the header's description plus each member's
name, size and SHA-256), checked against what was read.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.errors import HubnodeError

MAGIC = b"HUBNODE-BACKUP\n"
#: Raised whenever the layout changes; a reader refuses versions it does not know.
FORMAT_VERSION = 1
CIPHER = "AES-256-GCM"
KEY_BYTES = 32
CHUNK_BYTES = 1024 * 1024
#: A member's data is framed in blocks of at most this size.
BLOCK_BYTES = 256 * 1024
NONCE_PREFIX_BYTES = 8
TAG_BYTES = 16
#: A header larger than this is not ours (and is not read into memory).
MAX_HEADER_BYTES = 64 * 1024
#: Tags of the decrypted stream: a member follows, or the manifest (the end).
_MEMBER, _MANIFEST = b"M", b"E"
_LENGTH = struct.Struct(">I")
_COUNTER = struct.Struct(">I")


class ArchiveError(HubnodeError):
    """An archive that cannot be trusted or read: wrong key, damaged, cut short, of an unknown format."""


def new_key() -> bytes:
    """A fresh backup key: 32 random bytes."""
    return os.urandom(KEY_BYTES)


def key_id(key: bytes) -> str:
    """Names a key without revealing it, so a reader can say "wrong key" rather than "damaged"."""
    return hashlib.sha256(b"hubnode-backup-key-id\0" + key).hexdigest()[:16]


@dataclass(frozen=True)
class MemberInfo:
    """One member as the manifest lists it."""

    name: str
    kind: str
    size: int
    sha256: str
    mode: int | None = None

    def entry(self) -> dict[str, Any]:
        """The manifest's entry for it."""
        entry: dict[str, Any] = {"name": self.name, "kind": self.kind, "size": self.size, "sha256": self.sha256}
        if self.mode is not None:
            entry["mode"] = f"{self.mode:04o}"
        return entry


@dataclass(frozen=True)
class Manifest:
    """What an archive is of (`about`: stack, site, versions, times) and every member it holds."""

    about: Mapping[str, Any]
    members: tuple[MemberInfo, ...]

    def to_json(self) -> dict[str, Any]:
        """The manifest as stored at the end of the archive."""
        return {**self.about, "format": FORMAT_VERSION, "members": [m.entry() for m in self.members]}

    @property
    def size(self) -> int:
        """The members' bytes together."""
        return sum(member.size for member in self.members)


@dataclass
class Member:
    """A member being read: its head, and its data as an iterator of blocks (read it to the end, or skip it)."""

    name: str
    kind: str
    mode: int | None
    blocks: Iterator[bytes]


class _Sealer:
    """Encrypts a byte stream in chunks onto `out`: at most one chunk in memory."""

    def __init__(self, out: BinaryIO, key: bytes, about: Mapping[str, Any]) -> None:
        if len(key) != KEY_BYTES:
            raise ArchiveError(f"a backup key is {KEY_BYTES} bytes, this one {len(key)}")
        self._out, self._aead = out, AESGCM(key)
        self._prefix = os.urandom(NONCE_PREFIX_BYTES)
        header = {
            "format": FORMAT_VERSION,
            "cipher": CIPHER,
            "chunk_bytes": CHUNK_BYTES,
            "nonce_prefix": self._prefix.hex(),
            "key_id": key_id(key),
            "about": dict(about),
        }
        self._header = json.dumps(header, sort_keys=True).encode()
        out.write(MAGIC + _LENGTH.pack(len(self._header)) + self._header)
        self._buffer = bytearray()
        self._counter = 0

    def write(self, data: bytes | bytearray) -> None:
        self._buffer += data
        while len(self._buffer) > CHUNK_BYTES:  # keep the last bytes back: the last chunk must be marked
            self._seal(bytes(self._buffer[:CHUNK_BYTES]), last=False)
            del self._buffer[:CHUNK_BYTES]

    def close(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()

    def _seal(self, plain: bytes, *, last: bool) -> None:
        nonce = self._prefix + _COUNTER.pack(self._counter)
        sealed = self._aead.encrypt(nonce, plain, _associated(self._header, self._counter, last=last))
        self._out.write(_LENGTH.pack(len(sealed)) + sealed)
        self._counter += 1


def _associated(header: bytes, counter: int, *, last: bool) -> bytes:
    return hashlib.sha256(header).digest() + _COUNTER.pack(counter) + (b"\1" if last else b"\0")


def read_header(stream: BinaryIO) -> dict[str, Any]:
    """The archive's header (unauthenticated until its first chunk is opened); refuses what is not ours."""
    if stream.read(len(MAGIC)) != MAGIC:
        raise ArchiveError("not a hubnode backup (it does not start as one)")
    raw = _read_exactly(stream, _LENGTH.size, "header")
    (length,) = _LENGTH.unpack(raw)
    if length > MAX_HEADER_BYTES:
        raise ArchiveError(f"its header claims {length} bytes: damaged")
    header_bytes = _read_exactly(stream, length, "header")
    try:
        header = json.loads(header_bytes)
    except ValueError:
        raise ArchiveError("its header is not JSON: damaged") from None
    if not isinstance(header, dict):
        raise ArchiveError("its header is not a JSON object: damaged")
    if header.get("format") != FORMAT_VERSION:
        raise ArchiveError(f"format version {header.get('format')!r} is unknown (this hubnode reads {FORMAT_VERSION})")
    if header.get("cipher") != CIPHER or header.get("chunk_bytes") != CHUNK_BYTES:
        raise ArchiveError(f"cipher {header.get('cipher')!r} in chunks of {header.get('chunk_bytes')!r} is not ours")
    header["_raw"] = header_bytes
    return header


class _Opener:
    """Decrypts the chunks after the header, refusing any chunk changed, moved or missing."""

    def __init__(self, stream: BinaryIO, key: bytes) -> None:
        self.header = read_header(stream)
        if key_id(key) != self.header.get("key_id"):
            raise ArchiveError(
                f"it was made with another backup key (key id {self.header.get('key_id')}, this key's {key_id(key)})"
            )
        try:
            self._prefix = bytes.fromhex(str(self.header["nonce_prefix"]))
        except (KeyError, ValueError):
            raise ArchiveError("its header has no valid nonce prefix: damaged") from None
        self._stream, self._aead = stream, AESGCM(key)

    def chunks(self) -> Iterator[bytes]:
        counter = 0
        while True:
            raw = self._stream.read(_LENGTH.size)
            if len(raw) < _LENGTH.size:
                raise ArchiveError(f"it ends after {counter} chunk(s) without its last one: truncated")
            (length,) = _LENGTH.unpack(raw)
            if length > CHUNK_BYTES + TAG_BYTES:
                raise ArchiveError(f"chunk {counter} claims {length} bytes: damaged")
            sealed = _read_exactly(self._stream, length, f"chunk {counter}")
            plain, last = self._open(sealed, counter)
            yield plain
            if last:
                if self._stream.read(1):
                    raise ArchiveError(f"there are bytes after its last chunk ({counter}): damaged")
                return
            counter += 1

    def _open(self, sealed: bytes, counter: int) -> tuple[bytes, bool]:
        nonce = self._prefix + _COUNTER.pack(counter)
        for last in (False, True):
            try:
                return self._aead.decrypt(nonce, sealed, _associated(self.header["_raw"], counter, last=last)), last
            except InvalidTag:
                continue
        raise ArchiveError(f"chunk {counter} fails its authentication: the archive was altered or damaged")


def _read_exactly(stream: BinaryIO, size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) < size:
        raise ArchiveError(f"it ends inside its {what}: truncated")
    return data


class ArchiveWriter:
    """Writes members and, on `close`, the manifest; the caller supplies the open file."""

    def __init__(self, out: BinaryIO, key: bytes, about: Mapping[str, Any]) -> None:
        self._sealer = _Sealer(out, key, about)
        self._about = dict(about)
        self._members: list[MemberInfo] = []

    def add(self, name: str, kind: str, blocks: Iterable[bytes], mode: int | None = None) -> MemberInfo:
        """Add a member from its data in blocks of any size (a stream from a container, a file's bytes)."""
        if any(member.name == name for member in self._members):
            raise ValueError(f"member {name} added twice")
        head = json.dumps({"name": name, "kind": kind, "mode": mode}).encode()
        self._sealer.write(_MEMBER + _LENGTH.pack(len(head)) + head)
        digest, size, pending = hashlib.sha256(), 0, bytearray()
        for block in blocks:  # a container's stream comes in small frames: gathered into blocks of BLOCK_BYTES
            pending += block
            digest.update(block)
            size += len(block)
            while len(pending) >= BLOCK_BYTES:
                self._sealer.write(_LENGTH.pack(BLOCK_BYTES) + pending[:BLOCK_BYTES])
                del pending[:BLOCK_BYTES]
        if pending:
            self._sealer.write(_LENGTH.pack(len(pending)) + pending)
        self._sealer.write(_LENGTH.pack(0))
        info = MemberInfo(name, kind, size, digest.hexdigest(), mode)
        self._members.append(info)
        return info

    def add_file(self, name: str, path: Path) -> MemberInfo:
        """Add a small file (a secret, a certificate) with its mode."""
        return self.add(name, "file", [path.read_bytes()], mode=path.stat().st_mode & 0o7777)

    def close(self) -> Manifest:
        """Write the manifest and seal the last chunk."""
        manifest = Manifest(self._about, tuple(self._members))
        self._sealer.write(_MANIFEST + json.dumps(manifest.to_json(), sort_keys=True).encode())
        self._sealer.close()
        return manifest


class _Plain:
    """The decrypted stream, read by exact sizes."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buffer = chunks, bytearray()

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise ArchiveError("its content ends early: damaged")
            self._buffer += chunk
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def rest(self) -> bytes:
        for chunk in self._chunks:
            self._buffer += chunk
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


class ArchiveReader:
    """Reads an archive's members in order, verifying each against the manifest at the end.

    Iterate it to the end: the manifest is read and every member's size and SHA-256 checked only then
    (`manifest` is set after that), so a caller that writes as it reads must undo its writes when
    iteration raises.
    """

    def __init__(self, stream: BinaryIO, key: bytes) -> None:
        opener = _Opener(stream, key)
        self.about: dict[str, Any] = dict(opener.header.get("about") or {})
        self._plain = _Plain(opener.chunks())
        self.manifest: Manifest | None = None

    def __iter__(self) -> Iterator[Member]:
        seen: list[MemberInfo] = []
        while True:
            tag = self._plain.read(1)
            if tag == _MANIFEST:
                self.manifest = _checked_manifest(self._plain.rest(), self.about, seen)
                return
            if tag != _MEMBER:
                raise ArchiveError("its content is out of order: damaged")
            (length,) = _LENGTH.unpack(self._plain.read(_LENGTH.size))
            try:
                head = json.loads(self._plain.read(length))
                name, kind, mode = str(head["name"]), str(head["kind"]), head.get("mode")
            except (ValueError, KeyError, TypeError):
                raise ArchiveError(f"the head of member {len(seen) + 1} is unreadable: damaged") from None
            digest = hashlib.sha256()
            sizes = [0]
            member = Member(name, kind, mode, self._blocks(digest, sizes))
            yield member
            for _ in member.blocks:  # what the caller did not read
                pass
            seen.append(MemberInfo(member.name, member.kind, sizes[0], digest.hexdigest(), member.mode))

    def _blocks(self, digest: Any, sizes: list[int]) -> Iterator[bytes]:  # noqa: ANN401 -- hashlib's private type
        while True:
            (length,) = _LENGTH.unpack(self._plain.read(_LENGTH.size))
            if length == 0:
                return
            block = self._plain.read(length)
            digest.update(block)
            sizes[0] += length
            yield block


def _checked_manifest(raw: bytes, about: Mapping[str, Any], seen: list[MemberInfo]) -> Manifest:
    """The manifest, if it describes the archive the header described and lists exactly the members read."""
    try:
        stored = json.loads(raw)
        members = tuple(
            MemberInfo(
                m["name"], m["kind"], m["size"], m["sha256"], int(m["mode"], 8) if m.get("mode") is not None else None
            )
            for m in stored.pop("members")
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ArchiveError("its manifest is unreadable: damaged") from None
    if stored.pop("format", None) != FORMAT_VERSION or stored != dict(about):
        raise ArchiveError("its manifest does not describe the archive its header describes: damaged")
    for found, listed in zip(seen, members, strict=False):
        if (found.name, found.size, found.sha256) != (listed.name, listed.size, listed.sha256):
            raise ArchiveError(f"member {found.name} is not what the manifest lists (size or SHA-256 differ)")
    if len(seen) != len(members):
        raise ArchiveError(f"the manifest lists {len(members)} member(s), the archive holds {len(seen)}")
    return Manifest(dict(about), members)


def verify(path: Path, key: bytes) -> Manifest:
    """Read the whole archive and check every chunk and member; change nothing. Returns its manifest."""
    with path.open("rb") as stream:
        reader = ArchiveReader(stream, key)
        for _ in reader:
            pass
    assert reader.manifest is not None  # noqa: S101 -- set when iteration ends without error
    return reader.manifest
