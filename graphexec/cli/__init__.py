"""The ``graphexec`` command line: list, inspect, decide, resume and fork runs in a store.

Installed with the ``cli`` extra (``pip install 'graphexec[cli]'``: typer and rich); run it as
``graphexec`` or ``python -m graphexec``. ``import graphexec`` never imports this package, and
this module imports nothing heavy: typer loads when the command line starts, rich and the
stores only when a command needs them, so ``graphexec --help`` stays fast.

Exit codes (scripts can rely on them):

====  ============================================================================================
0     success (for ``resume``/``fork``: the run completed, or stopped waiting at a barrier)
1     a graph error: the run failed, a checkpoint could not be read, the graph changed
2     usage: bad arguments or options (an invalid trace id too), a ``--graphs`` target that does
      not load, bad JSON, an unknown or unavailable store URL
3     not found: no such run, checkpoint, barrier, store file, or graph in ``--graphs``
4     conflict: the run's state refuses the operation (already completed, locked by another
      driver, barrier already decided)
130   interrupted (SIGINT/SIGTERM; ``resume``/``fork`` checkpoint the run and release it first)
====  ============================================================================================

Every error is one line on stderr (``graphexec: error: ...``), never a traceback; set
``GRAPHEXEC_TRACEBACK=1`` to see the traceback of an unexpected one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ._exit import EXIT_CONFLICT, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE

__all__ = (
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
    "run",
)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    from ._main import run_app

    return run_app(list(sys.argv[1:] if argv is None else argv))


def main() -> None:
    """The ``graphexec`` console script: run the command line and exit with its code."""
    sys.exit(run())
