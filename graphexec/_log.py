"""The library's structlog logger; graphexec never configures logging globally.

structlog is imported on the first log call, not with graphexec: most runs log nothing, and
the import costs more than everything else graphexec loads.

Until the application configures structlog, only warnings and errors are emitted: an
unconfigured structlog prints every level to stdout, and a library's routine info lines
("barrier waiting") do not belong in an app's output unless it asked for them.
"""

from __future__ import annotations

from typing import Any

__all__ = ("get_logger",)


class _LazyLogger:
    """A ``graphexec`` structlog logger with bound context, created when first used."""

    __slots__ = ("_bound", "_logger")

    def __init__(self, bound: dict[str, Any]) -> None:
        self._bound = bound
        self._logger: Any = None

    def _get(self) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger("graphexec").bind(**self._bound)
        return self._logger

    def bind(self, **more: Any) -> _LazyLogger:
        """A logger with more context bound."""
        return _LazyLogger({**self._bound, **more})

    def debug(self, event: str, **kw: Any) -> None:
        if _app_configured():
            self._get().debug(event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        if _app_configured():
            self._get().info(event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._get().warning(event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._get().error(event, **kw)


def _app_configured() -> bool:
    import structlog

    return structlog.is_configured()


def get_logger(**bound: Any) -> _LazyLogger:
    """A structlog logger named ``graphexec`` with ``bound`` context (trace_id, node, step...)."""
    return _LazyLogger(bound)
