"""Graphs and helpers shared by the executor-level checkpoint tests (test_resume.py, test_fork.py,
test_policy.py, ...)."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio

import graphexec as gx
from graphexec.checkpoint._record import (
    RunInfo,
    StoredCheckpoint,
    StoredDecision,
)


@dataclass
class Stores:
    """The store under test, and ways to reach its data as another process would."""

    kind: str
    path: Path
    store: gx.CheckpointStore
    opened: list[gx.CheckpointStore] = field(default_factory=list)
    opener: Callable[[], gx.CheckpointStore] | None = None
    """Opens another store object on the same data (default: a SQLiteStore on ``path``)."""

    async def reopen(self) -> gx.CheckpointStore:
        """Close the store and open it again, as a restarted process would."""
        if self.kind == "memory":
            return self.store
        await self.store.aclose()
        self.store = self._open()
        return self.store

    def other(self) -> gx.CheckpointStore:
        """A second store object on the same data (another process); MemoryStore: the same."""
        if self.kind == "memory":
            return self.store
        return self._open()

    def executor(self, store: gx.CheckpointStore | None = None, **kw: Any) -> gx.GraphExecutor:
        """An executor on ``store`` (default: the current store)."""
        return gx.GraphExecutor(store=store or self.store, **kw)

    def _open(self) -> gx.CheckpointStore:
        store = self.opener() if self.opener is not None else gx.SQLiteStore(self.path)
        self.opened.append(store)
        return store


PAD = "x" * 4000
"""A big value in the initial state, so small deltas never outweigh the base (no early base)."""

# -- stores -----------------------------------------------------------------------------------


class SlowSaves:
    """A store whose saves take ``delay`` seconds each, so async commits lag behind the run."""

    def __init__(self, inner: gx.CheckpointStore, delay: float) -> None:
        self.inner = inner
        self.delay = delay

    async def save(
        self, rows: Sequence[StoredCheckpoint], run: RunInfo, **options: Any
    ) -> list[StoredDecision]:
        """Wait, then save through the real store."""
        await anyio.sleep(self.delay)
        return await self.inner.save(rows, run, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def slow(store: gx.CheckpointStore, delay: float = 0.02) -> gx.CheckpointStore:
    """``store`` with slow saves."""
    return cast(gx.CheckpointStore, SlowSaves(store, delay))


# -- graphs -----------------------------------------------------------------------------------


def _appender(
    name: str, calls: list[str], delays: Mapping[str, float]
) -> Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]:
    async def node(state: Mapping[str, Any]) -> dict[str, Any]:
        calls.append(name)
        await anyio.sleep(delays.get(name, 0.0))
        return {"log": [name]}

    return node


def chain(
    calls: list[str] | None = None,
    delays: Mapping[str, float] | None = None,
    *,
    names: Sequence[str] = ("a", "b", "c"),
    side_effects: Sequence[str] = (),
) -> gx.Graph:
    """``a -> b -> c``: each node records its call and appends its name to ``log``."""
    calls = calls if calls is not None else []
    builder = gx.GraphBuilder("chain")
    for name in names:
        builder.node(name, _appender(name, calls, delays or {}), side_effects=name in side_effects)
    for source, target in itertools.pairwise(names):
        builder.edge(source, target)
    return builder.reducer("log", gx.reducers.append).start(names[0]).end(names[-1]).build()


def approval() -> gx.Graph:
    """``draft -> approve (barrier) -> send | discard``."""

    async def draft(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"draft": "hello"}

    async def send(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"sent": True}

    async def discard(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"sent": False}

    def prompt(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"text": state["draft"]}

    def approved(state: Mapping[str, Any]) -> bool:
        return bool(state["approve"]["decision"] == "approve")

    return (
        gx.GraphBuilder("approval")
        .node("draft", draft)
        .barrier("approve", prompt=prompt)
        .node("send", send)
        .node("discard", discard)
        .edge("draft", "approve")
        .edge("approve", "send", when=approved)
        .edge("approve", "discard")
        .start("draft")
        .end("send", "discard")
        .build()
    )


def loop(rounds: int = 2) -> gx.Graph:
    """``work -> gate (barrier) -> work`` while ``count < rounds``, then ``done``."""

    async def work(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"count": 1}

    async def done(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"done": True}

    def again(state: Mapping[str, Any]) -> bool:
        return bool(state["count"] < rounds)

    return (
        gx.GraphBuilder("loop")
        .node("work", work)
        .barrier("gate")
        .node("done", done)
        .edge("work", "gate")
        .edge("gate", "work", when=again)
        .edge("gate", "done")
        .reducer("count", gx.reducers.add)
        .start("work")
        .end("done")
        .build()
    )


APPROVED = {"decision": "approve", "reason": None, "by": "human"}

# -- driving runs -----------------------------------------------------------------------------


async def consume(run: gx.Run, *, approve: bool = True) -> list[gx.GraphEvent]:
    """Every event of ``run``, approving each barrier it waits at."""
    events: list[gx.GraphEvent] = []
    async for event in run:
        events.append(event)
        if approve and isinstance(event, gx.BarrierWaiting):
            await run.handle.approve(event.barrier_id)
    return events


async def leave_at_barrier(
    ex: gx.GraphExecutor,
    graph: gx.Graph,
    trace_id: str,
    state: Any = None,
    before_leaving: Callable[[gx.Run, gx.BarrierWaiting], Awaitable[None]] | None = None,
) -> tuple[list[gx.GraphEvent], gx.Run]:
    """Start a run and leave the stream at its first BarrierWaiting."""
    events: list[gx.GraphEvent] = []
    async with ex.execute_stream(graph, state, trace_id=trace_id) as run:
        async for event in run:
            events.append(event)
            if isinstance(event, gx.BarrierWaiting):
                if before_leaving is not None:
                    await before_leaving(run, event)
                break
    assert run.result.status == "waiting"
    return events, run


async def leave_at_node(
    ex: gx.GraphExecutor, graph: gx.Graph, trace_id: str, node: str, state: Any = None
) -> gx.Run:
    """Start a run and leave the stream once ``node`` has started."""
    async with ex.execute_stream(graph, state, trace_id=trace_id) as run:
        async for event in run:
            if isinstance(event, gx.NodeStart) and event.node == node:
                break
    assert run.result.status == "cancelled"
    return run


async def triggers(ex: gx.GraphExecutor, trace_id: str) -> list[tuple[str, int]]:
    """``(trigger, step)`` of every checkpoint of a trace."""
    return [(h.trigger, h.step) for h in await ex.history(trace_id)]


def saved(events: Sequence[gx.GraphEvent]) -> list[gx.CheckpointSaved]:
    """The CheckpointSaved events."""
    return [e for e in events if isinstance(e, gx.CheckpointSaved)]


# -- resume_from ------------------------------------------------------------------------------
