"""Retention: which archives a backup removes; only the node's own, never the new one, nothing unless asked."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra import archive
from infra.backup import archive_name
from infra.retention import Retention, held_archives, prune

KEY = bytes(range(32))
NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)


def write_archive(folder: Path, stack: str, site: str, created: datetime, name: str | None = None) -> Path:
    path = folder / (name or archive_name(stack, site, created))
    buffer = io.BytesIO()
    about = {"stack": stack, "site": site, "created": created.isoformat(timespec="seconds")}
    archive.ArchiveWriter(buffer, KEY, about).close()
    path.write_bytes(buffer.getvalue())
    return path


def daily(folder: Path, days: int, stack: str = "bk", site: str = "dic") -> list[Path]:
    """One archive a day for `days` days, the newest (today's) first."""
    return [write_archive(folder, stack, site, NOW - timedelta(days=day)) for day in range(days)]


def test_the_newest_n_stay_and_the_older_go(tmp_path: Path) -> None:
    archives = daily(tmp_path, 6)
    removed = prune(archives[0], "bk", "dic", Retention(keep=3), NOW)
    assert removed == archives[3:]
    assert sorted(tmp_path.iterdir()) == sorted(archives[:3])


def test_keep_days_keeps_the_recent_ones_and_either_rule_keeps_an_archive(tmp_path: Path) -> None:
    archives = daily(tmp_path, 10)
    assert prune(archives[0], "bk", "dic", Retention(keep_days=4), NOW) == archives[5:]
    assert prune(archives[0], "bk", "dic", Retention(keep=2, keep_days=3), NOW) == [archives[4]]
    assert prune(archives[0], "bk", "dic", Retention(keep=4, keep_days=1), NOW) == []


def test_without_a_rule_nothing_goes(tmp_path: Path) -> None:
    archives = daily(tmp_path, 4)
    assert prune(archives[0], "bk", "dic", Retention(), NOW) == []
    assert len(list(tmp_path.iterdir())) == 4


def test_the_archive_just_written_stays_even_when_its_clock_says_it_is_older(tmp_path: Path) -> None:
    archives = daily(tmp_path, 3)
    written = write_archive(tmp_path, "bk", "dic", NOW - timedelta(days=30))
    removed = prune(written, "bk", "dic", Retention(keep=1), NOW)
    assert written.exists()
    assert removed == archives[1:]


def test_other_stacks_sites_and_files_are_never_touched(tmp_path: Path) -> None:
    ours = daily(tmp_path, 3)
    # Stack "bk-dic", site "x" and stack "bk", site "dic-x" would share a file-name prefix: the header decides.
    theirs = [
        write_archive(tmp_path, "bk", "practice", NOW - timedelta(days=9)),
        write_archive(tmp_path, "other", "dic", NOW - timedelta(days=9)),
        write_archive(
            tmp_path, "bk-x", "dic", NOW - timedelta(days=9), name=archive_name("bk", "dic", NOW - timedelta(days=9))
        ),
    ]
    stranger = tmp_path / archive_name("bk", "dic", NOW - timedelta(days=20))
    stranger.write_bytes(b"not an archive at all")
    notes = tmp_path / "hubnode-backup-bk-dic-notes.txt"
    notes.write_text("keep me")
    link = tmp_path / archive_name("bk", "dic", NOW - timedelta(days=40))
    link.symlink_to(ours[2])
    assert [held.path for held in held_archives(tmp_path, "bk", "dic")] == ours
    assert prune(ours[0], "bk", "dic", Retention(keep=1), NOW) == ours[1:]
    assert all(path.exists() for path in [*theirs, stranger, notes])
    assert link.is_symlink()


@pytest.mark.parametrize(
    ("rule", "said"),
    [
        (Retention(keep=3), "the newest 3"),
        (Retention(keep=3, keep_days=7), "the newest 3 and those of the last 7 days"),
        (Retention(), "all"),
    ],
)
def test_the_rule_says_what_it_keeps(rule: Retention, said: str) -> None:
    assert str(rule) == said
