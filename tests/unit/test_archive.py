"""The backup archive format: what goes in comes out, and anything altered, cut, moved or foreign is refused."""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra import archive
from infra.archive import CHUNK_BYTES, ArchiveError, ArchiveReader, ArchiveWriter

KEY = bytes(range(32))
ABOUT = {"stack": "dev", "site": "dic", "created": "2026-12-04T18:00:00+00:00"}


def write(members: list[tuple[str, list[bytes]]], key: bytes = KEY, about: dict[str, Any] | None = None) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out, key, about or ABOUT)
    for name, blocks in members:
        writer.add(name, "volume", blocks)
    writer.close()
    return out.getvalue()


def read(data: bytes, key: bytes = KEY) -> tuple[dict[str, bytes], archive.Manifest]:
    reader = ArchiveReader(io.BytesIO(data), key)
    found = {member.name: b"".join(member.blocks) for member in reader}
    assert reader.manifest is not None
    return found, reader.manifest


def chunks(data: bytes) -> tuple[bytes, list[bytes]]:
    """The archive's bytes before its first chunk, and each chunk with its length prefix."""
    stream = io.BytesIO(data)
    archive.read_header(stream)
    head, pieces = data[: stream.tell()], []
    while raw := stream.read(4):
        (length,) = struct.unpack(">I", raw)
        pieces.append(raw + stream.read(length))
    return head, pieces


BIG = [("volume/fhir-data", [b"x" * (CHUNK_BYTES + 10), b"y" * 5]), ("volume/tc", [b"z" * CHUNK_BYTES])]


@given(
    st.lists(
        st.tuples(
            st.text(alphabet="abcdefghij/-.", min_size=1, max_size=12),
            st.lists(st.binary(max_size=300), max_size=4),
        ),
        max_size=5,
        unique_by=lambda m: m[0],
    ),
    st.integers(min_value=0, max_value=3),
)
def test_members_come_out_as_they_went_in_with_their_sizes_and_hashes(
    members: list[tuple[str, list[bytes]]], near_boundary: int
) -> None:
    # one member reaching just around a chunk boundary, so the last chunk may be empty or full
    members = [*members, ("volume/edge", [b"e" * (CHUNK_BYTES - 2 + near_boundary)])]
    found, manifest = read(write(members))
    assert found == {name: b"".join(blocks) for name, blocks in members}
    assert [(m.name, m.size) for m in manifest.members] == [(n, len(b"".join(b))) for n, b in members]
    assert manifest.about == ABOUT


def test_an_empty_archive_has_a_manifest_and_no_members() -> None:
    found, manifest = read(write([]))
    assert (found, manifest.members) == ({}, ())


def test_the_manifest_records_version_times_and_each_members_sha256(tmp_path: Path) -> None:
    path = tmp_path / "a.hnb"
    with path.open("wb") as out:
        writer = ArchiveWriter(out, KEY, ABOUT)
        secret = tmp_path / "tc-secret"
        secret.write_bytes(b"s3cret")
        secret.chmod(0o600)
        writer.add_file("state/secrets/dic/tc-secret", secret)
        writer.close()
    manifest = archive.verify(path, KEY)
    [member] = manifest.members
    assert (member.name, member.kind, member.size, member.mode) == ("state/secrets/dic/tc-secret", "file", 6, 0o600)
    assert member.sha256 == hashlib.sha256(b"s3cret").hexdigest()
    assert manifest.to_json()["format"] == archive.FORMAT_VERSION
    assert manifest.to_json()["members"][0]["mode"] == "0600"


def test_nothing_of_the_content_is_readable_in_the_file() -> None:
    data = write([("volume/v", [b"Mustermann-Erika-1961" * 100])])
    assert b"Mustermann" not in data
    assert b'"site": "dic"' in data  # the header says what it is of, in the clear (authenticated)


def test_a_wrong_key_is_named_as_such() -> None:
    with pytest.raises(ArchiveError, match="another backup key"):
        read(write(BIG), key=bytes(32))


@pytest.mark.parametrize("where", [0, 1, -1])
def test_a_flipped_byte_in_any_chunk_is_refused(where: int) -> None:
    head, pieces = chunks(write(BIG))
    piece = bytearray(pieces[where])
    piece[len(piece) // 2] ^= 0x01
    pieces[where] = bytes(piece)
    with pytest.raises(ArchiveError, match="fails its authentication"):
        read(head + b"".join(pieces))


def test_a_changed_header_is_refused() -> None:
    data = write(BIG)
    with pytest.raises(ArchiveError, match="fails its authentication"):
        read(data.replace(b'"site": "dic"', b'"site": "dac"'))


def test_swapped_chunks_are_refused() -> None:
    head, pieces = chunks(write(BIG))
    assert len(pieces) >= 3
    pieces[0], pieces[1] = pieces[1], pieces[0]
    with pytest.raises(ArchiveError, match="chunk 0 fails"):
        read(head + b"".join(pieces))


@pytest.mark.parametrize("keep", [0, 1, 2])
def test_an_archive_cut_at_a_chunk_boundary_is_refused(keep: int) -> None:
    head, pieces = chunks(write(BIG))
    with pytest.raises(ArchiveError, match="truncated"):
        read(head + b"".join(pieces[:keep]))


def test_an_archive_cut_inside_a_chunk_is_refused() -> None:
    data = write(BIG)
    with pytest.raises(ArchiveError, match="truncated"):
        read(data[: len(data) - 100])


def test_bytes_after_the_last_chunk_are_refused() -> None:
    with pytest.raises(ArchiveError, match="after its last chunk"):
        read(write(BIG) + b"\0")


def test_a_dropped_middle_chunk_is_refused() -> None:
    head, pieces = chunks(write(BIG))
    with pytest.raises(ArchiveError, match="chunk 1 fails"):
        read(head + pieces[0] + b"".join(pieces[2:]))


def test_an_unknown_format_version_is_refused_before_any_key_is_tried() -> None:
    data = write([])
    stream = io.BytesIO(data)
    header = archive.read_header(stream)
    del header["_raw"]
    header["format"] = 99
    raw = json.dumps(header).encode()
    forged = archive.MAGIC + struct.pack(">I", len(raw)) + raw + data[stream.tell() :]
    with pytest.raises(ArchiveError, match="format version 99 is unknown"):
        read(forged, key=bytes(32))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"PK\x03\x04 a zip file", "not a hubnode backup"),
        (archive.MAGIC + b"\0\0", "truncated"),
        (archive.MAGIC + struct.pack(">I", 10**9), "claims"),
        (archive.MAGIC + struct.pack(">I", 3) + b"{{{", "not JSON"),
    ],
)
def test_what_is_not_an_archive_is_refused_with_a_reason(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError, match=message):
        read(data)


def test_a_member_that_does_not_match_the_manifest_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = archive.Manifest.to_json

    def lying(self: archive.Manifest) -> dict[str, Any]:
        stored = real(self)
        stored["members"][0]["sha256"] = "0" * 64
        return stored

    monkeypatch.setattr(archive.Manifest, "to_json", lying)
    with pytest.raises(ArchiveError, match="member volume/fhir-data is not what the manifest lists"):
        read(write(BIG))


def test_a_manifest_about_another_node_than_the_header_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = archive.Manifest.to_json
    monkeypatch.setattr(archive.Manifest, "to_json", lambda self: {**real(self), "site": "practice"})
    with pytest.raises(ArchiveError, match="does not describe the archive its header describes"):
        read(write([]))


def test_a_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ArchiveError, match="32 bytes"):
        ArchiveWriter(io.BytesIO(), b"short", ABOUT)


def test_members_not_read_by_the_caller_are_still_verified() -> None:
    reader = ArchiveReader(io.BytesIO(write(BIG)), KEY)
    names = [member.name for member in reader]  # blocks never read
    assert names == ["volume/fhir-data", "volume/tc"]
    assert reader.manifest is not None
    assert [m.size for m in reader.manifest.members] == [CHUNK_BYTES + 15, CHUNK_BYTES]
