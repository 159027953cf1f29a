"""What a run looks like from outside, as JSON objects: :class:`RunState` (``ex.get_state``)
and :class:`BarrierInfo` (the barrier it waits at).

Kept apart from the checkpoint record (whose structs are msgpack arrays, for size): these are
the shapes a UI or a server sends on the wire, so every one encodes to a JSON object.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._events import ErrorInfo
from .checkpoint._record import CheckpointBody, ParentRef, PendingBarrier
from .typing import RunStatus

__all__ = ("BarrierInfo", "RunState", "barrier_info", "failure_of")


class BarrierInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The barrier a run waits at (a JSON object)."""

    barrier_id: str
    """``"<node>#<occurrence>"``: what a decision names."""
    node: str
    prompt: Any = None
    """The payload the barrier's ``prompt`` built from the state."""
    deadline: float | None = None
    """Wall-clock time at which the default action applies; None: never."""


class RunState(msgspec.Struct, frozen=True, kw_only=True):
    """A run as last checkpointed (what ``ex.get_state`` returns); a JSON object on the wire."""

    trace_id: str
    state: Any
    status: RunStatus
    step: int
    next_node: str | None
    pending_barrier: BarrierInfo | None
    """The barrier the run waits at (what a chat UI shows as an approval card)."""
    seq: int
    graph_name: str
    graph_hash: str
    updated_at: float
    error: ErrorInfo | None = None
    """A failed or cancelled run's error: ``{type, message, node}``."""
    parent: ParentRef | None = None
    turn: int = 1
    """The conversation turn of the last checkpointed run on this trace."""


def barrier_info(pending: PendingBarrier | None) -> BarrierInfo | None:
    """The wire form of a pending barrier."""
    if pending is None:
        return None
    return BarrierInfo(
        barrier_id=pending.barrier_id,
        node=pending.node,
        prompt=pending.prompt,
        deadline=pending.deadline,
    )


def failure_of(body: CheckpointBody) -> ErrorInfo | None:
    """A checkpoint's error as data; records older than the ``failure`` field have only the
    text ``"<Type>: <message>"``."""
    if body.failure is not None:
        return body.failure
    if body.error is None:
        return None
    kind, sep, message = body.error.partition(": ")
    if not sep or not kind.isidentifier():
        return ErrorInfo(type="GraphError", message=body.error)
    return ErrorInfo(type=kind, message=message)
