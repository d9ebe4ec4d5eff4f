"""Which of a node's older archives a backup removes, and removing them.

Only archives whose own header says they are of this stack and site count (a file name alone could
belong to another stack whose name and site join to the same text), never the archive just written,
and nothing at all unless a rule asks for it: a folder of archives is precious.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from infra import archive


@dataclass(frozen=True)
class Retention:
    """An archive stays when it is among the newest `keep` or younger than `keep_days` days."""

    keep: int | None = None
    keep_days: int | None = None

    def __str__(self) -> str:
        rules = [f"the newest {self.keep}"] if self.keep else []
        rules += [f"those of the last {self.keep_days} days"] if self.keep_days else []
        return " and ".join(rules) or "all"


@dataclass(frozen=True)
class Held:
    """One archive of the node in the folder, and when it was made (as its header says)."""

    path: Path
    created: datetime


def held_archives(folder: Path, stack: str, site: str) -> list[Held]:
    """The archives in `folder` whose headers name `stack` and `site`, newest first; anything else is left alone."""
    found = []
    for path in folder.glob(f"hubnode-backup-{stack}-{site}-*.hnb"):
        if path.is_symlink() or not path.is_file():
            continue
        try:
            with path.open("rb") as stream:
                about = archive.read_header(stream).get("about") or {}
            created = datetime.fromisoformat(str(about.get("created")))
        except (OSError, ValueError, archive.ArchiveError):
            continue
        if about.get("stack") == stack and about.get("site") == site and created.tzinfo is not None:
            found.append(Held(path, created))
    return sorted(found, key=lambda held: (held.created, held.path.name), reverse=True)


def expired(held: Iterable[Held], rule: Retention, written: Path, now: datetime) -> list[Held]:
    """What `rule` removes from `held` (newest first): never `written`, nothing when the rule keeps all."""
    if rule.keep is None and rule.keep_days is None:
        return []
    cutoff = now - timedelta(days=rule.keep_days) if rule.keep_days is not None else None
    gone = []
    for rank, archive_ in enumerate(held):
        newest = rule.keep is not None and rank < rule.keep
        recent = cutoff is not None and archive_.created >= cutoff
        if not (newest or recent or archive_.path == written):
            gone.append(archive_)
    return gone


def prune(written: Path, stack: str, site: str, rule: Retention, now: datetime) -> list[Path]:
    """Remove the node's archives beside the one just `written` that `rule` does not keep; returns them."""
    removed = []
    for archive_ in expired(held_archives(written.parent, stack, site), rule, written, now):
        archive_.path.unlink(missing_ok=True)
        removed.append(archive_.path)
    return removed
