"""How a run ended: GraphResult, what execute() returns and run.result holds."""

from __future__ import annotations

from typing import Any

import msgspec

from .._events import LogEntry
from ..exceptions import GraphError
from ..typing import RunStatus

__all__ = ("GraphResult",)


class GraphResult(msgspec.Struct, frozen=True):
    """How a run ended.

    ``status`` is ``"completed"``, ``"failed"``, ``"cancelled"``, or ``"waiting"`` (the consumer
    left while a barrier waited). ``execution_log`` lists the steps run by this call (after a
    resume: the steps since the resume). ``error`` holds the exception of a failed or cancelled
    run.
    """

    trace_id: str
    state: Any
    status: RunStatus
    steps: int
    duration: float
    execution_log: list[LogEntry] = msgspec.field(default_factory=list)
    error: GraphError | None = None
    reused: int = 0
    """A re-run (``ex.rerun``): the node executions it reused from its source trace instead of
    running them (they are not in ``execution_log``, which lists what ran)."""
