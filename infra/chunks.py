"""NDJSON files read line by line and cut into chunks for `hubnode load`, a patient's lines kept together.

A file is never read whole: lines stream from it (gzip is recognised by its first bytes, whatever the
name) and only the chunk being filled is held. A chunk ends once the next line would take it past a
count of resources or of bytes, and it ends before a line that starts a group if it can: a Patient (a
patient's resources follow it, as `hubnode generate` and most exports write them) or a Bundle line (one
patient each, as the MII test data ships). References between a patient's resources then stay inside
one request, where the connector resolves them; a group larger than a chunk is cut where it must be,
and the chunk continuing it says so (`continues`), so the loader can send it after the one before.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Bundles whose entries an NDJSON line contributes at the connector's `$import` (connector.transform).
ENTRY_BUNDLE_TYPES = ("transaction", "batch", "collection")
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Line:
    """One line of a file: its number there (from 1), its text without the line end, what it holds.

    `read_to` is how far the file (as stored, compressed or not) had been read after it: progress.
    """

    number: int
    text: bytes
    resources: int = 1
    starts_group: bool = False
    read_to: int = 0

    @property
    def size(self) -> int:
        """Bytes it takes in a request body, its line end included."""
        return len(self.text) + 1


@dataclass(frozen=True)
class Limits:
    """How large a chunk may grow: resources (a bundle line counts its entries) and bytes of request body."""

    resources: int
    bytes: int


@dataclass(frozen=True)
class Chunk:
    """Lines sent in one request; `continues` when it carries on a group the chunk before it began."""

    lines: tuple[Line, ...]
    continues: bool = False

    @property
    def first(self) -> int:
        """The number of its first line."""
        return self.lines[0].number

    @property
    def end(self) -> int:
        """The number after its last line."""
        return self.lines[-1].number + 1

    @property
    def resources(self) -> int:
        """How many resources its lines hold."""
        return sum(line.resources for line in self.lines)


def body(lines: Iterable[Line]) -> bytes:
    """The NDJSON request body of `lines`: its line n is the n-th of them."""
    return b"".join(line.text + b"\n" for line in lines)


def read_lines(path: Path, start: int = 1) -> Iterator[Line]:
    """The lines of `path` from number `start` on, blank ones left out; a leading UTF-8 BOM is dropped.

    OSError, EOFError and gzip.BadGzipFile say the file is unreadable or cut short.
    """
    with path.open("rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        for number, read in enumerate(stream, start=1):
            if number < start:
                continue
            text = read.rstrip(b"\r\n")
            if number == 1:
                text = text.removeprefix(_BOM)
            if text.strip():
                resources, starts_group = _classified(text)
                yield Line(number, text, resources, starts_group, raw.tell())


def _classified(text: bytes) -> tuple[int, bool]:
    """How many resources a line holds and whether it starts a group; a line that is no JSON object is one.

    The connector judges every line; this only has to count and find where patients begin.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return 1, False
    if not isinstance(value, dict):
        return 1, False
    entries = value.get("entry")
    if value.get("resourceType") == "Bundle" and value.get("type") in ENTRY_BUNDLE_TYPES and isinstance(entries, list):
        return max(1, len(entries)), True
    return 1, value.get("resourceType") == "Patient"


def chunked(lines: Iterable[Line], limits: Limits) -> Iterator[Chunk]:
    """`lines` in order, cut into chunks within `limits` (a line beyond them alone goes alone).

    Nothing is lost or repeated, and a group of lines that fits in a chunk is never cut (tested).
    """
    pending: list[Line] = []
    group = 0  # where in `pending` the last group began
    resources = size = 0
    grouped = continues = False
    for line in lines:
        if pending and (resources + line.resources > limits.resources or size + line.size > limits.bytes):
            cut = group if group > 0 and not line.starts_group else len(pending)
            yield Chunk(tuple(pending[:cut]), continues)
            continues = grouped and not pending[cut:] and not line.starts_group
            pending, group = pending[cut:], 0
            resources, size = sum(p.resources for p in pending), sum(p.size for p in pending)
            if pending and (resources + line.resources > limits.resources or size + line.size > limits.bytes):
                yield Chunk(tuple(pending))  # the carried group alone is full: it is cut here
                pending, resources, size, continues = [], 0, 0, True
        if line.starts_group:
            group, grouped = len(pending), True
        pending.append(line)
        resources += line.resources
        size += line.size
    if pending:
        yield Chunk(tuple(pending), continues)
