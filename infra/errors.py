"""The one error type the CLI shows to a person: what went wrong, and what to do about it."""

from __future__ import annotations


class HubnodeError(Exception):
    """A failure with a cause a person can act on.

    `fix` says what to do next; the CLI prints both and exits non-zero, never a stack trace.
    """

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message}\n  fix: {self.fix}" if self.fix else self.message


class UsageError(HubnodeError):
    """A command asked for what cannot be (a file that is not there): exit 2, as for a wrong argument."""
