"""The interface the run loop reports spans through; ``graphexec.otel`` implements it.

A run without telemetry holds None where a :class:`RunSegment` would be, and the loop checks
that once per step (the recorder's way: nothing is built when no one listens). This module
imports nothing from OpenTelemetry: ``import graphexec`` never does (``graphexec.otel`` does,
and only a user imports it).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, TypeAlias

__all__ = ("AttributeValue", "RunSegment", "SegmentKind", "SpanKind", "Telemetry")

AttributeValue: TypeAlias = str | int | float | bool
SegmentKind: TypeAlias = Literal["start", "resume", "fork", "rerun"]
"""How a run segment (one driver of a trace in one process) began."""
SpanKind: TypeAlias = Literal["node", "branch", "barrier"]
"""A node attempt (parallel and map nodes: their one execution), a branch or map item
attempt (a child of its node's span), or a barrier step (waits and decisions as events)."""


class Telemetry(Protocol):
    """What ``GraphExecutor(telemetry=...)`` takes: opens one :class:`RunSegment` per driver."""

    def segment(
        self,
        *,
        trace_id: str,
        graph: str,
        graph_hash: str,
        kind: SegmentKind,
        step: int,
        stored_context: str | None,
        linked_context: str | None,
    ) -> RunSegment:
        """Open the span of one run segment.

        Args:
            trace_id: the run's graphexec trace id.
            graph: the graph's name; ``graph_hash`` its structural hash.
            kind: how the segment began.
            step: the steps the run had taken before this segment.
            stored_context: the W3C ``traceparent`` recorded by the run's first traced
                segment (a resume): the new segment joins that trace.
            linked_context: the ``traceparent`` of another run this one relates to (the
                source of a fork or a re-run): linked, not joined.
        """
        ...


class RunSegment(Protocol):
    """The span of one run segment, and the spans and events inside it."""

    trace_context: str | None
    """The ``traceparent`` the run's checkpoints record: the stored one when it was valid,
    else this segment's own (None when nothing is sampled or recorded)."""

    def begin(self) -> None:
        """Make the segment's span current in the driver's task (its children nest in it)."""

    def span(
        self,
        kind: SpanKind,
        node: str,
        step: int,
        span_id: str,
        *,
        attempt: int = 1,
        branch: str | None = None,
        barrier_id: str | None = None,
    ) -> AbstractContextManager[Any]:
        """A child span, current while the ``with`` block runs: ended with an error status
        when the block raises (a cancel is not an error)."""
        ...

    def event(self, name: str, attributes: dict[str, AttributeValue]) -> None:
        """An event on the current span (a barrier's, a node's, else the segment's)."""

    def end(
        self,
        status: str,
        steps: int,
        error: BaseException | None,
        next_node: str | None,
        barrier_id: str | None,
    ) -> None:
        """End the segment's span: the run's status (an error status for ``"failed"``)."""
