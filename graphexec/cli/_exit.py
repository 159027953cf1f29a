"""Exit codes, the command line's own error, and the one-line error report."""

from __future__ import annotations

import sys

__all__ = (
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "report",
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A problem the command line reports in one line and exits on with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def report(message: str, *, prefix: str = "error") -> None:
    """Write ``graphexec: <prefix>: <message>`` to stderr as one line."""
    line = " ".join(message.split())
    sys.stderr.write(f"graphexec: {prefix}: {line}\n")
    sys.stderr.flush()
