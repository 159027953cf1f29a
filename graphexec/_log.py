"""The library's structlog logger; graphexec never configures logging globally."""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ("get_logger",)


def get_logger(**bound: Any) -> Any:
    """A structlog logger named ``graphexec`` with ``bound`` context (trace_id, node, step...)."""
    return structlog.get_logger("graphexec").bind(**bound)
