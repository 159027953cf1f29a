"""The shared vocabulary: ids, statuses and the shapes of user-supplied callables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, NewType, TypeAlias, get_args

__all__ = (
    "RUN_STATUSES",
    "BarrierId",
    "Condition",
    "NodeFn",
    "NodeName",
    "PromptFn",
    "Reducer",
    "RunStatus",
    "State",
    "TraceId",
)

TraceId = NewType("TraceId", str)
"""Identifies one run across processes and restarts."""

NodeName = NewType("NodeName", str)
"""The name a node was declared with."""

BarrierId = NewType("BarrierId", str)
"""``"<node>#<occurrence>"``: the nth time a barrier node is reached in a run."""

State: TypeAlias = Mapping[str, Any]
"""What a node receives: a read-only mapping (or an instance of the typed-state Struct)."""

Reducer: TypeAlias = Callable[[Any, Any], Any]
"""``(current, value) -> new``; pure and deterministic (replayed on restore)."""

NodeFn: TypeAlias = Callable[..., Any] | Callable[..., Awaitable[Any]]
"""``fn(state)`` or ``fn(state, ctx)``, sync or async; returns None, a mapping or a directive."""

Condition: TypeAlias = Callable[[Any], bool]
"""An edge predicate over the state after the node ran."""

PromptFn: TypeAlias = Callable[[Any], Any] | Callable[[Any], Awaitable[Any]]
"""Builds a barrier's prompt payload (anything msgspec can encode) from the state."""

RunStatus: TypeAlias = Literal[
    "running", "waiting", "completed", "failed", "cancelled", "interrupted", "queued"
]
"""The lifecycle of a run as recorded in its checkpoints. ``"interrupted"``: stopped by the
shutdown of the executor that drove it (``async with GraphExecutor(...)`` ended); resumable, and
what ``ex.recover()`` picks up, unlike a user's ``"cancelled"``. ``"queued"``: recorded by
``ex.start(..., queue=True)`` for any worker to claim; no node has run yet."""

RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
"""Every RunStatus, for checking a status given as a string."""
