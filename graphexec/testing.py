"""Helpers for testing apps built on graphexec: run a graph and collect its events.

Example::

    events, result = await gx.testing.collect(ex, graph, {"ticket": "..."},
                                              decide=lambda ev: gx.Approve())
    assert [type(e).__name__ for e in events][-1] == "GraphComplete"
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec

from ._decisions import Decision
from ._events import BarrierWaiting, GraphEvent
from ._executor import GraphExecutor
from ._graph import Graph
from ._run import GraphResult

__all__ = ("FakeClock", "collect", "without_timings")

_TIMING_FIELDS = ("duration", "deadline")


async def collect(
    executor: GraphExecutor,
    graph: Graph,
    state: Any = None,
    *,
    trace_id: str | None = None,
    decide: Callable[[BarrierWaiting], Decision | None | Awaitable[Decision | None]] | None = None,
) -> tuple[list[GraphEvent], GraphResult]:
    """Stream a run to its end; return every event and the result.

    ``decide`` answers each ``BarrierWaiting`` (returning None leaves the barrier waiting,
    which then needs a timeout or another decider).
    """
    events: list[GraphEvent] = []
    async with executor.execute_stream(graph, state, trace_id=trace_id) as run:
        async for event in run:
            events.append(event)
            if decide is not None and isinstance(event, BarrierWaiting):
                decision = decide(event)
                if isinstance(decision, Awaitable):
                    decision = await decision
                if decision is not None:
                    await run.handle.decide(event.barrier_id, decision)
    return events, run.result


def without_timings(events: list[GraphEvent]) -> list[GraphEvent]:
    """The events with ``duration`` set to 0.0, ``deadline`` to None and ``event_id`` to 0 (ids
    depend on the store's segment), for literal compares."""
    out: list[GraphEvent] = []
    for event in events:
        changes: dict[str, Any] = {"event_id": 0} if event.event_id else {}
        for name in _TIMING_FIELDS:
            if hasattr(event, name) and getattr(event, name) is not None:
                changes[name] = 0.0 if name == "duration" else None
        out.append(msgspec.structs.replace(event, **changes) if changes else event)
    return out


class FakeClock:
    """A clock for ``GraphExecutor(clock=...)`` whose sleeps return at once and advance its
    time: backoffs and circuit-breaker cool-downs are tested without waiting.

    ``sleeps`` lists every wait asked for, in order; ``advance(seconds)`` moves time on (a
    cool-down passing while no run sleeps).
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()

    def advance(self, seconds: float) -> None:
        self.time += seconds
