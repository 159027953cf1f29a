"""How a run ended: GraphResult, what execute() returns and run.result holds."""

from __future__ import annotations

from typing import Any

import msgspec

from .._events import ErrorInfo, LogEntry
from ..exceptions import GraphError
from ..typing import RunStatus
from .recorder import error_info

__all__ = ("GraphResult",)


class GraphResult(msgspec.Struct, frozen=True, dict=True):
    """How a run ended.

    ``status`` is ``"completed"``, ``"failed"``, ``"cancelled"``, ``"interrupted"`` (stopped by
    a shutdown) or ``"waiting"`` (the consumer left while a barrier waited). ``execution_log``
    lists the steps run by this call (after a resume: the steps since the resume), with
    wall-clock times. ``error`` holds the exception of a failed or cancelled run.

    ``msgspec.json.encode(result)`` gives a JSON object; the error goes out as
    ``{"type", "message", "node"}`` (``error_info``), the exception itself stays in the process.
    """

    trace_id: str
    state: Any
    status: RunStatus
    steps: int
    duration: float
    execution_log: list[LogEntry] = msgspec.field(default_factory=list)
    error_info: ErrorInfo | None = msgspec.field(default=None, name="error")
    """The error as data (the JSON ``error`` field): type, message, node."""
    turn: int = 1
    """The conversation turn this run was (1 for a trace's first run)."""
    reused: int = 0
    """A re-run (``ex.rerun``): the node executions it reused from its source trace instead of
    running them (they are not in ``execution_log``, which lists what ran)."""

    @classmethod
    def of(
        cls,
        *,
        trace_id: str,
        state: Any,
        status: RunStatus,
        steps: int,
        duration: float,
        execution_log: list[LogEntry],
        error: GraphError | None,
        turn: int = 1,
        reused: int = 0,
    ) -> GraphResult:
        """A result holding ``error`` (the exception) and its data."""
        info = None if error is None else error_info(error, error.node)
        result = cls(
            trace_id=trace_id,
            state=state,
            status=status,
            steps=steps,
            duration=duration,
            execution_log=execution_log,
            error_info=info,
            turn=turn,
            reused=reused,
        )
        result.__dict__["_error"] = error
        return result

    @property
    def error(self) -> GraphError | None:
        """The exception of a failed or cancelled run (None for a result decoded from JSON)."""
        error: GraphError | None = self.__dict__.get("_error")
        return error
