"""The entry point's frame: run the typer app, turn every error into one line and an exit code."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from ..exceptions import (
    GraphError,
    InvalidDecision,
    InvalidTraceId,
    RunFinished,
    RunLocked,
    RunNotFound,
)
from ._exit import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    report,
)

__all__ = ("exit_code_for", "run_app")


def exit_code_for(exc: GraphError) -> int:
    """The exit code of a graphexec error (see the table in ``graphexec.cli``)."""
    if isinstance(exc, RunNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, InvalidTraceId):
        return EXIT_USAGE
    if isinstance(exc, RunFinished | RunLocked | InvalidDecision):
        return EXIT_CONFLICT
    return EXIT_ERROR


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    report(str(message), prefix="warning")


def run_app(argv: list[str]) -> int:
    """Run the command line on ``argv``; returns the exit code (never raises but SystemExit)."""
    try:
        import typer
        import typer.main
    except ImportError:
        report(
            "the graphexec command line needs the cli extra: pip install 'graphexec[cli]' "
            "(typer and rich)"
        )
        return EXIT_USAGE
    from ._app import app

    warnings.showwarning = _one_line_warning
    if not argv:
        argv = ["--help"]
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="graphexec", standalone_mode=False)
    except CliError as exc:
        report(exc.message)
        return exc.code
    except GraphError as exc:
        report(str(exc))
        return exit_code_for(exc)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        report("interrupted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        report("interrupted")
        return EXIT_INTERRUPTED
    except typer.TyperException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        report(exc.format_message() + hint)
        return exc.exit_code if exc.exit_code != 1 else EXIT_USAGE
    except BrokenPipeError:
        # `graphexec runs | head`: the reader left; nothing to report.
        sys.stderr.close()
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("GRAPHEXEC_TRACEBACK"):
            raise
        report(
            f"unexpected {type(exc).__name__}: {exc} (set GRAPHEXEC_TRACEBACK=1 for the traceback)"
        )
        return EXIT_ERROR
    return result if isinstance(result, int) else EXIT_OK
