"""Files written whole or not at all, and secrets no one else can read at any moment.

Written whole: a crash leaves the old content or the new, never part of it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, content: bytes, mode: int) -> None:
    """Write `content` to `path` with `mode`, through a temporary file beside it renamed over it."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(content)
        Path(temporary).chmod(mode)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def create_private(path: Path, content: bytes, mode: int) -> None:
    """Create `path` (refused if it exists) with `mode` from the moment it exists, its folder owner-only.

    For secrets (a key, a passphrase): a file made first and narrowed after would be readable in between.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        out.write(content)
