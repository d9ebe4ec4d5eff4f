"""Where a stack's local state lives on this host: `.hubnode/<stack>/` beside the stack file.

One owner of the layout, so the CLI, the launcher and the targets file agree on it: endpoints, generated
secrets per site, the federation's PKI, the backup key, the targets file the conformance suite reads (its path is the
suite's own convention, `conformance.targets.local_targets_file`, so `hubnode check --stack` finds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conformance.targets import local_targets_file


@dataclass(frozen=True)
class StackState:
    """The state folder of one stack of one project."""

    project_dir: Path
    stack: str

    @property
    def folder(self) -> Path:
        """`.hubnode/<stack>/`."""
        return self.project_dir / ".hubnode" / self.stack

    @property
    def endpoints_file(self) -> Path:
        """Where each node answers, as `hubnode up` last brought the stack up."""
        return self.folder / "endpoints.json"

    @property
    def pki_dir(self) -> Path:
        """The federation's CA and node certificates."""
        return self.folder / "pki"

    @property
    def conformance_dir(self) -> Path:
        """The targets file, the client certificates made for trust tests, and the reports."""
        return self.targets_file.parent

    @property
    def targets_file(self) -> Path:
        """The targets file `hubnode check --stack` reads."""
        return local_targets_file(self.project_dir, self.stack)

    @property
    def backup_key(self) -> Path:
        """The key backups of this stack are encrypted with (owner read-only; `down --volumes` keeps it)."""
        return self.folder / "backup-key"

    @property
    def backup_record(self) -> Path:
        """Each node's last backup, for `hubnode status` (`down --volumes` keeps it)."""
        return self.folder / "backups.json"

    @property
    def backups_dir(self) -> Path:
        """Where `hubnode backup` writes archives unless told otherwise: beside the stacks' folders, not in one."""
        return self.project_dir / ".hubnode" / "backups" / self.stack

    def secrets_dir(self, site: str) -> Path:
        """A node's generated secrets (owner-only)."""
        return self.folder / "secrets" / site
