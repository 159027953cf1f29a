"""The typed events a run streams out; one tagged union, JSON-encodable as it is.

Every event carries ``trace_id`` and ``step``; events about one node execution also carry its
``span_id`` (``"<node>@<step>"``: stable across resumes of the same execution).
``msgspec.json.decode(data, type=gx.GraphEvent)`` turns the wire form back into the Structs.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

__all__ = (
    "BarrierResolved",
    "BarrierWaiting",
    "BranchCompleted",
    "CheckpointSaved",
    "CircuitChanged",
    "Custom",
    "ErrorInfo",
    "GraphComplete",
    "GraphEvent",
    "GraphFailed",
    "GraphInterrupted",
    "GraphStart",
    "LogEntry",
    "NodeEnd",
    "NodeInvalidated",
    "NodeRetry",
    "NodeStart",
    "ObservedError",
    "ParallelCompleted",
    "ParallelStarted",
    "StateChanged",
)


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    trace_id: str
    """The run this event belongs to."""
    step: int
    """The step counter when the event was sent (the node's step for node events)."""
    event_id: int = 0
    """Increasing within the trace, across resumes, turns and processes (set when the event is
    sent; 0 on an event built by hand). ``(segment << 32) | n``: ``segment`` grows with every
    driver of the trace (taken from the store), ``n`` counts that driver's events, so ids a
    crashed driver handed out are never reused. Without a store the segment is 0."""


class GraphStart(_Event, frozen=True, kw_only=True, tag=True):
    """The run started (or resumed: ``resumed=True``)."""

    graph: str
    graph_hash: str
    node: str | None
    """The first node this run will execute (None if it resumes at a waiting barrier's end)."""
    resumed: bool = False
    parent: str | None = None
    """For a fork: the trace it was forked from."""
    input: Any = None
    """What the caller passed to start this run (or this turn); None for a resume or a fork."""
    turn: int = 1
    """The conversation turn: 1 for a trace's first run, then one more for each next turn."""


class NodeStart(_Event, frozen=True, kw_only=True, tag=True):
    """A node began executing."""

    node: str
    span_id: str
    kind: str


class NodeEnd(_Event, frozen=True, kw_only=True, tag=True):
    """A node finished; ``ok`` is False if it raised."""

    node: str
    span_id: str
    ok: bool
    duration: float
    """Seconds."""
    next_node: str | None = None


class StateChanged(_Event, frozen=True, kw_only=True, tag=True):
    """One delta was applied to the state."""

    node: str
    span_id: str
    key: str
    delta: Any
    """The value handed to the key's reducer (not the whole new value)."""
    reducer: str = "overwrite"
    """How ``delta`` was applied: the key's reducer by name (``"append"``, a registered name,
    ``"custom:<qualname>"``), or ``"overwrite"`` (no reducer, or a ``gx.Overwrite`` value)."""


class ParallelStarted(_Event, frozen=True, kw_only=True, tag=True):
    """A parallel or map node fanned out."""

    node: str
    span_id: str
    branches: list[str]


class BranchCompleted(_Event, frozen=True, kw_only=True, tag=True):
    """One branch of a parallel node finished."""

    node: str
    span_id: str
    branch: str
    ok: bool
    duration: float
    error: str | None = None


class ParallelCompleted(_Event, frozen=True, kw_only=True, tag=True):
    """All branches finished (or were cancelled); ``failed`` names the failed branches."""

    node: str
    span_id: str
    ok: bool
    failed: list[str] = msgspec.field(default_factory=list)


class Custom(_Event, frozen=True, kw_only=True, tag=True):
    """Data a node sent with ``ctx.emit`` (tokens, progress)."""

    node: str
    span_id: str
    data: Any
    branch: str | None = None


class BarrierWaiting(_Event, frozen=True, kw_only=True, tag=True):
    """The run waits for a decision; the wait is checkpointed before this is sent (with a store)."""

    barrier_id: str
    node: str
    prompt: Any = None
    deadline: float | None = None
    """Wall-clock time at which the barrier's default action applies; None: no timeout."""


class BarrierResolved(_Event, frozen=True, kw_only=True, tag=True):
    """A barrier got its decision."""

    barrier_id: str
    node: str
    decision: Literal["approve", "reject", "skip"]
    reason: str | None = None
    by: Literal["human", "timeout", "cancel"] = "human"
    edited: bool = False
    """True when the decision was an ``Edit`` (approve with changes)."""


class CheckpointSaved(_Event, frozen=True, kw_only=True, tag=True):
    """A checkpoint was committed to the store (sent only after the commit)."""

    checkpoint_id: str
    """``"<trace_id>:<seq>"``."""
    seq: int
    kind: Literal["base", "delta"]
    bytes: int
    trigger: str


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An exception, as data."""

    type: str
    message: str
    node: str | None = None


class ObservedError(_Event, frozen=True, kw_only=True, tag=True):
    """A failure the run survived: a Fallback, or a branch failing under ``on_error="continue"``."""

    node: str
    span_id: str
    error: ErrorInfo
    branch: str | None = None


class NodeInvalidated(_Event, frozen=True, kw_only=True, tag=True):
    """A completed execution whose node's fingerprint changed since it ran: a resume with
    ``GraphExecutor(invalidate_on_resume=True)`` runs it again (and what depends on it)."""

    node: str
    span_id: str
    """The invalidated execution (``"<node>@<step>"`` as it ran)."""
    old_fingerprint: str | None
    new_fingerprint: str | None


class NodeRetry(_Event, frozen=True, kw_only=True, tag=True):
    """An attempt of a node (or of one branch or map item) failed and will be retried after
    ``wait`` seconds."""

    node: str
    span_id: str
    attempt: int
    """The attempt that failed (1 for the first call)."""
    error: ErrorInfo
    wait: float
    """Seconds until the next attempt."""
    branch: str | None = None


class CircuitChanged(_Event, frozen=True, kw_only=True, tag=True):
    """A node's circuit breaker (shared by the runs of one executor) changed state."""

    node: str
    state: Literal["closed", "open", "half_open"]
    failures: int
    """Consecutive failed calls when the change happened."""
    until: float | None = None
    """When opened: the wall-clock end of the cool-down."""


class LogEntry(msgspec.Struct, frozen=True):
    """One line of ``GraphResult.execution_log``: one attempt of a node execution (a JSON
    object)."""

    step: int
    node: str
    start: float
    """Wall-clock time (``time.time()`` seconds) at the node's start."""
    end: float
    """Wall-clock time at the node's end (measured with the monotonic clock from ``start``)."""
    success: bool
    attempt: int = 1
    """Which attempt this line is (failed attempts that were retried have their own line)."""


class GraphComplete(_Event, frozen=True, kw_only=True, tag=True):
    """The run finished; carries the result's data."""

    state: Any
    steps: int
    duration: float
    status: Literal["completed"] = "completed"


class GraphFailed(_Event, frozen=True, kw_only=True, tag=True):
    """The run ended with an error (``status="failed"``) or was cancelled."""

    error: ErrorInfo
    state: Any
    status: Literal["failed", "cancelled"] = "failed"


class GraphInterrupted(_Event, frozen=True, kw_only=True, tag=True):
    """The run was stopped by the shutdown of the executor driving it (its ``async with``
    ended). It is checkpointed with status ``"interrupted"`` and resumed by ``ex.recover()``."""

    state: Any
    status: Literal["interrupted"] = "interrupted"


TERMINAL_EVENTS: tuple[type, ...] = (GraphComplete, GraphFailed, GraphInterrupted)
"""Events after which a run sends nothing more (an event tail ends at one of them)."""


GraphEvent: TypeAlias = (
    GraphStart
    | NodeStart
    | NodeEnd
    | StateChanged
    | ParallelStarted
    | BranchCompleted
    | ParallelCompleted
    | Custom
    | BarrierWaiting
    | BarrierResolved
    | CheckpointSaved
    | ObservedError
    | NodeInvalidated
    | NodeRetry
    | CircuitChanged
    | GraphComplete
    | GraphFailed
    | GraphInterrupted
)
"""Every event a run can send."""
