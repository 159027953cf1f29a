"""NodeContext: what a node gets as its second argument."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ._emit import Delivery, Emitter
from ._events import Custom

__all__ = ("NodeContext",)


class _Usage(msgspec.Struct):
    tokens: float = 0.0
    side_effects: bool = False


class NodeContext:
    """The run as one node execution sees it.

    ``idempotency_key`` is stable across resumes for the same node execution (trace id, node,
    step, and branch for parallel branches): pass it to external APIs so a node re-run after a
    crash does not repeat a payment or an email.

    Attributes:
        trace_id: The run's trace id.
        step: This execution's step number (1 for the first node of a run).
        node: The node being executed.
        span_id: ``"<node>@<step>"``; events of this execution carry it.
        branch: For a branch of a parallel or map node, its name (``"<node>[<i>]"`` for map
            items); None otherwise.
        attempt: 1 for the first call of this execution, 2 for its first retry, and so on
            (counted across resumes: the count is checkpointed). The idempotency key does
            not change between attempts.
    """

    __slots__ = (
        "_beat",
        "_emitter",
        "_usage",
        "attempt",
        "branch",
        "node",
        "span_id",
        "step",
        "trace_id",
    )

    def __init__(
        self,
        trace_id: str,
        step: int,
        node: str,
        span_id: str,
        branch: str | None = None,
        _emitter: Emitter | None = None,
        attempt: int = 1,
        _beat: list[float] | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.attempt = attempt
        self._beat = _beat
        self.step = step
        self.node = node
        self.span_id = span_id
        self.branch = branch
        self._emitter = _emitter
        self._usage = _Usage()

    def __repr__(self) -> str:
        return (
            f"NodeContext(trace_id={self.trace_id!r}, step={self.step}, node={self.node!r}, "
            f"span_id={self.span_id!r}, branch={self.branch!r}, attempt={self.attempt})"
        )

    @property
    def idempotency_key(self) -> str:
        """``"<trace_id>:<node>:<step>"`` (plus ``":<branch>"``), the same on every re-run."""
        key = f"{self.trace_id}:{self.node}:{self.step}"
        return f"{key}:{self.branch}" if self.branch is not None else key

    def emit(self, data: Any) -> Delivery:
        """Send ``data`` to the consumer as a ``Custom`` event (token streaming).

        Returns at once; ``await ctx.emit(data)`` also waits while the consumer's buffer is full
        (backpressure). From a sync node in a worker thread the call blocks until delivered.
        Without a stream consumer (``execute()``), the data is dropped.
        """
        emitter = self._emitter
        if emitter is not None:
            emitter.send_soon(
                Custom(
                    trace_id=self.trace_id,
                    step=self.step,
                    node=self.node,
                    span_id=self.span_id,
                    data=data,
                    branch=self.branch,
                )
            )
        return Delivery(emitter)

    def report(self, *, token_cost: float = 0, side_effects: bool = False) -> None:
        """Tell adaptive checkpointing about this execution's cost and external effects.

        ``side_effects=True`` makes a checkpoint follow this step, as if the node had been
        declared with ``side_effects=True``.
        """
        if token_cost < 0:
            raise ValueError("token_cost must be >= 0")
        self._usage.tokens += token_cost
        self._usage.side_effects = self._usage.side_effects or side_effects

    def heartbeat(self) -> None:
        """Say the node is still making progress: with ``heartbeat_timeout=`` on the node, an
        attempt that goes that long without a heartbeat fails with ``NodeTimeout(idle=True)``.
        Cheap (one clock read); safe to call from a sync node's worker thread."""
        beat = self._beat
        if beat is not None:
            beat[0] = time.monotonic()
