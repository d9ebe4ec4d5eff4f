"""Progress lines for long work (builds, bring-up): one line per event, readable in a CI log too."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Prints named steps with their duration, and notes inside a step.

    Plain lines rather than a redrawn bar, so the same output reads well on a terminal, in a CI
    log and in a test's captured output. `quiet` keeps only failures (for `--json` output).
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self._stream = stream or sys.stderr
        self._quiet = quiet
        self._step_started = time.monotonic()

    def note(self, message: str) -> None:
        """Say something about the step under way."""
        if not self._quiet:
            elapsed = time.monotonic() - self._step_started
            print(f"    {message}  [{elapsed:5.1f} s]", file=self._stream, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run a named step, printing its start, its end and how long it took."""
        self._step_started = started = time.monotonic()
        if not self._quiet:
            print(f"==> {name}", file=self._stream, flush=True)
        try:
            yield
        except BaseException:
            print(f"  ✗ {name} failed after {time.monotonic() - started:.1f} s", file=self._stream)
            raise
        if not self._quiet:
            print(f"  ✓ {name} ({time.monotonic() - started:.1f} s)", file=self._stream, flush=True)
