"""The command line's logging: graphexec's log lines off, or to stderr at GRAPHEXEC_LOG's level."""

from __future__ import annotations

import os
import sys

from ._exit import CliError

__all__ = ("configure_logging",)


def configure_logging() -> None:
    # The command line is an application, so it configures structlog (unless the --graphs
    # module does): graphexec's own log lines repeat what the event lines and the one-line
    # error already say, so they are off unless GRAPHEXEC_LOG names a level; then they go to
    # stderr, never into the stdout that --json scripts read.
    import structlog

    if structlog.is_configured():
        return
    wanted = os.environ.get("GRAPHEXEC_LOG", "").strip().lower()
    levels = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
    if wanted and wanted not in levels:
        raise CliError(f"bad GRAPHEXEC_LOG {wanted!r}: expected one of {', '.join(levels)}")
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.KeyValueRenderer(key_order=["level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(levels.get(wanted, 50)),
        logger_factory=(
            structlog.PrintLoggerFactory(sys.stderr) if wanted else structlog.ReturnLoggerFactory()
        ),
    )
