"""What a load has done, on disk: the state a rerun continues from, and the report of refused lines.

Both outlive the process that wrote them: the state is rewritten whole (atomically) after every answer,
the report only ever grows, each refused line in it once however often a rerun sends it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import HubnodeError
from infra.files import write_atomically


@dataclass
class FileState:
    """One file of a load: below which line everything was answered, and whether all of it was."""

    path: str
    size: int
    done_below: int = 1
    complete: bool = False


@dataclass
class LoadState:
    """What a load has done, kept in `path` after every answer so that an interrupted load can continue."""

    path: Path
    report: Path
    files: list[FileState]
    resumed: bool = False

    @classmethod
    def begin(cls, path: Path, files: Sequence[Path], report: Path, restart: bool) -> LoadState:
        """The state of a load of `files`: as recorded in `path` (a rerun), else new (the report emptied)."""
        expected = [FileState(str(f.resolve()), f.stat().st_size) for f in files]
        if path.is_file() and not restart:
            try:
                recorded = json.loads(path.read_text(encoding="utf-8"))
                done = [FileState(**f) for f in recorded["files"]]
            except (ValueError, KeyError, TypeError) as error:
                raise HubnodeError(f"{path} is no load state ({error})", fix="start over with --restart") from None
            if [(f.path, f.size) for f in done] == [(f.path, f.size) for f in expected]:
                return cls(path, report, done, resumed=True)
        state = cls(path, report, expected)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_bytes(b"")
            state.save()
        except OSError as error:
            raise HubnodeError(
                f"cannot write the load's state or report: {error}", fix="name a writable --report"
            ) from None
        return state

    def save(self) -> None:
        """Write the state atomically: a crash leaves the one before or this one, never half of it."""
        files = [vars(f) for f in self.files]
        document = {"report": str(self.report), "files": files}
        write_atomically(self.path, json.dumps(document, indent=2).encode() + b"\n", 0o600)


class Report:
    """The refused lines, one JSON object a line (file, line, message); each (file, line) once, across reruns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written = {(r.get("file"), r.get("line")) for r in _json_lines(path)}

    def __len__(self) -> int:
        return len(self._written)

    def add(self, file: str, line: int, message: str) -> None:
        """Record a refused line, unless it was recorded before (a rerun sent it again)."""
        if (file, line) in self._written:
            return
        self._written.add((file, line))
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps({"file": file, "line": line, "message": message}, ensure_ascii=False) + "\n")


def first_refusals(report: Path, count: int) -> list[str]:
    """The first `count` refused lines of a report as `<file name> line <n>: <reason>`, for a person to read."""
    said: list[str] = []
    for record in _json_lines(report):
        if len(said) == count:
            break
        said.append(f"{Path(str(record.get('file'))).name} line {record.get('line')}: {record.get('message')}")
    return said


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as stream:
        for text in stream:
            try:
                record = json.loads(text)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record
