"""graphexec: run stateful graphs for agent apps.

Build a graph with :class:`GraphBuilder`, run it with :class:`GraphExecutor` (``execute``,
``execute_stream``, ``resume_from``, ``fork``), consume its typed events, decide its barriers,
and keep it durable with a checkpoint store (:class:`SQLiteStore`, :class:`MemoryStore`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import reducers, testing
from ._breaker import CircuitBreaker
from ._context import NodeContext
from ._decisions import Approve, Decision, Edit, Reject, Skip
from ._directives import End, Fallback, Goto, Overwrite, StateDelta
from ._events import (
    BarrierResolved,
    BarrierWaiting,
    BranchCompleted,
    CheckpointSaved,
    CircuitChanged,
    Custom,
    ErrorInfo,
    GraphComplete,
    GraphEvent,
    GraphFailed,
    GraphInterrupted,
    GraphStart,
    LogEntry,
    NodeEnd,
    NodeInvalidated,
    NodeRetry,
    NodeStart,
    ObservedError,
    ParallelCompleted,
    ParallelStarted,
    StateChanged,
)
from ._executor import GraphExecutor
from ._graph import Graph, GraphBuilder
from ._policy import CheckpointPolicy, CheckpointScore
from ._rerun.plan import PlanReason, PlanRow, RerunPlan
from ._retry import Retry
from ._run import GraphResult, Run, RunHandle
from ._runstate import BarrierInfo, RunState
from .checkpoint import (
    CheckpointStore,
    CheckpointSummary,
    MemoryStore,
    RunInfo,
)
from .exceptions import (
    Cancelled,
    CheckpointError,
    CircuitOpen,
    GraphChanged,
    GraphChangedWarning,
    GraphError,
    InvalidDecision,
    InvalidGraph,
    InvalidTraceId,
    LeaseLost,
    MissingEdge,
    NodeExecutionFailed,
    NodeNotFound,
    NodeTimeout,
    NonRetryable,
    PlanStale,
    RetriesExhausted,
    RetryAfter,
    RunError,
    RunExists,
    RunFinished,
    RunLocked,
    RunNotFound,
    StateError,
    StepsExceeded,
    StoreError,
    StoreRequired,
    Unrouted,
    UsageError,
)
from .worker import Worker, WorkerStats

__version__ = "0.1.0"

__all__ = (
    # Barriers
    "Approve",
    # Events
    "BarrierInfo",
    "BarrierResolved",
    "BarrierWaiting",
    "BranchCompleted",
    # Errors
    "Cancelled",
    "CheckpointError",
    # Checkpoints
    "CheckpointPolicy",
    "CheckpointSaved",
    "CheckpointScore",
    "CheckpointStore",
    "CheckpointSummary",
    # Resilience
    "CircuitBreaker",
    "CircuitChanged",
    "CircuitOpen",
    "Custom",
    "Decision",
    "Edit",
    # Node results
    "End",
    "ErrorInfo",
    "Fallback",
    "Goto",
    # Building
    "Graph",
    "GraphBuilder",
    "GraphChanged",
    "GraphChangedWarning",
    "GraphComplete",
    "GraphError",
    "GraphEvent",
    # Running
    "GraphExecutor",
    "GraphFailed",
    "GraphInterrupted",
    "GraphResult",
    "GraphStart",
    "InvalidDecision",
    "InvalidGraph",
    "InvalidTraceId",
    "LeaseLost",
    "LogEntry",
    "MemoryStore",
    "MissingEdge",
    "NodeContext",
    "NodeEnd",
    "NodeExecutionFailed",
    "NodeInvalidated",
    "NodeNotFound",
    "NodeRetry",
    "NodeStart",
    "NodeTimeout",
    "NonRetryable",
    "ObservedError",
    "Overwrite",
    "ParallelCompleted",
    "ParallelStarted",
    # Re-runs
    "PlanReason",
    "PlanRow",
    "PlanStale",
    "PostgresStore",
    "Reject",
    "RerunPlan",
    "RetriesExhausted",
    "Retry",
    "RetryAfter",
    "Run",
    "RunError",
    "RunExists",
    "RunFinished",
    "RunHandle",
    "RunInfo",
    "RunLocked",
    "RunNotFound",
    "RunState",
    "SQLiteStore",
    "Skip",
    "StateChanged",
    "StateDelta",
    "StateError",
    "StepsExceeded",
    "StoreError",
    "StoreRequired",
    "Unrouted",
    "UsageError",
    "Worker",
    "WorkerStats",
    "reducers",
    "testing",
)

for _name in __all__:
    _obj = globals().get(_name)
    # Errors only: Structs and dataclasses resolve their string annotations in the module
    # named by __module__ (msgspec decoding, typing.get_type_hints), so they keep their own.
    if (
        isinstance(_obj, type)
        and issubclass(_obj, Exception)
        and _obj.__module__.startswith("graphexec.")
    ):
        try:
            _obj.__module__ = "graphexec"
        except (AttributeError, TypeError):  # pragma: no cover - some builtins refuse
            pass
del _name, _obj


if TYPE_CHECKING:
    from .checkpoint import PostgresStore, SQLiteStore


def __getattr__(name: str) -> Any:
    # gx.SQLiteStore loads sqlite3 on first use, keeping `import graphexec` fast.
    if name == "SQLiteStore":
        from .checkpoint._sqlite import SQLiteStore

        return SQLiteStore
    if name == "web":
        # gx.web (extra "web") imports Starlette and uvicorn: loaded on first use only.
        import importlib

        return importlib.import_module(".web", __name__)
    # gx.PostgresStore needs the `postgres` extra (psycopg): imported only when asked for.
    if name == "PostgresStore":
        from .checkpoint._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
