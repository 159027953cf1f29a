"""Where a run stands: the one value the loop advances and the checkpointer, restore and fork
read and write.

Everything a checkpoint records about the run besides its state lives here, so continuing a
run (resume, fork) is "restore the state, take the position", not a list of arguments copied
field by field.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._decisions import Decision
from ..checkpoint._record import CheckpointBody, KeptOutputs, PendingBarrier
from ..typing import RunStatus

__all__ = ("Position",)


class Position(msgspec.Struct):
    """The run's position; mutated in place by the loop (one task owns it)."""

    step: int = 0
    """Steps taken so far (a barrier occurrence counts as one)."""
    next_node: str | None = None
    """The node the next step runs; None once the run has nowhere left to go."""
    status: RunStatus = "running"
    barrier_counts: dict[str, int] = msgspec.field(default_factory=dict)
    """Occurrences reached per barrier node (an occurrence counts once decided or pending)."""
    pending: PendingBarrier | None = None
    """The barrier the run waits at, if any."""
    decisions: dict[str, Decision] = msgspec.field(default_factory=dict)
    """Decisions not used yet: exact (``"node#n"``, used once) or wildcard (node name)."""
    decision_cursor: int = 0
    """The id of the last decision read from the store's inbox."""
    attempt: int = 0
    """Failed attempts of ``next_node`` so far: its retry budget already spent."""
    retry_at: float | None = None
    """When ``next_node``'s next attempt is due (wall clock), during a backoff."""
    kept: KeptOutputs | None = None
    """Successful branches of a failed fan-out node, reused by its next execution."""
    compensable: list[str] = msgspec.field(default_factory=list)
    """Completed nodes with a ``compensate=`` node, in order (``on_failure="compensate"``)."""
    turn: int = 1
    """The conversation turn (a completed trace's next run is the next turn)."""
    turn_start: int = 0
    """The step count when this turn started: ``max_steps`` counts the steps after it."""

    @classmethod
    def start(cls, node: str, decisions: dict[str, Decision] | None = None) -> Position:
        """A new run about to run ``node``."""
        return cls(next_node=node, decisions=decisions if decisions is not None else {})

    @classmethod
    def of(
        cls,
        body: CheckpointBody,
        *,
        decisions: dict[str, Any] | None = None,
        decision_cursor: int | None = None,
    ) -> Position:
        """The position a checkpoint recorded (a copy: the checkpoint stays as it was).

        ``decisions`` and ``decision_cursor`` replace the recorded ones (a fork does not
        inherit its source's decisions nor its inbox).
        """
        return cls(
            step=body.step,
            next_node=body.next_node,
            status="waiting" if body.pending_barrier is not None else "running",
            barrier_counts=dict(body.barrier_counts),
            pending=body.pending_barrier,
            decisions=dict(body.decisions) if decisions is None else decisions,
            decision_cursor=body.decision_cursor if decision_cursor is None else decision_cursor,
            attempt=body.attempt,
            retry_at=body.retry_at,
            kept=body.kept,
            compensable=list(body.compensable),
            turn=body.turn,
            turn_start=body.turn_start,
        )
