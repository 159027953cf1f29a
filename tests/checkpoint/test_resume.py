"""Resuming, reading back and forking runs through the executor, on every store.

Store-independent behaviour runs on MemoryStore and SQLiteStore; "another process" is a second
SQLiteStore on the same file (MemoryStore: the same object), and "a restart" closes the
SQLiteStore and opens a new one on the same path.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import anyio
import pytest

import graphexec as gx
from graphexec.checkpoint._record import (
    Lease,
    ParentRef,
    PendingBarrier,
    RunInfo,
    StoredCheckpoint,
    StoredDecision,
)

PAD = "x" * 4000
"""A big value in the initial state, so small deltas never outweigh the base (no early base)."""

# -- stores -----------------------------------------------------------------------------------


@dataclass
class Stores:
    """The store under test, and ways to reach its data as another process would."""

    kind: str
    path: Path
    store: gx.CheckpointStore
    opened: list[gx.CheckpointStore] = field(default_factory=list)

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
        store = gx.SQLiteStore(self.path)
        self.opened.append(store)
        return store


@pytest.fixture(params=["memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """Each store kind; every store object opened by the test is closed after it."""
    path = tmp_path / "runs.db"
    store: gx.CheckpointStore = (
        gx.MemoryStore() if request.param == "memory" else gx.SQLiteStore(path)
    )
    box = Stores(request.param, path, store, [store])
    try:
        yield box
    finally:
        for s in box.opened:
            await s.aclose()


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


class TestResume:
    """resume_from continues a run where its checkpoints left it."""

    async def test_continues_at_the_saved_next_node(self, stores: Stores) -> None:
        """A run left during node b resumes at b, with the same trace id and step count."""
        calls: list[str] = []
        delays = {"b": 30.0}
        graph = chain(calls, delays)
        ex = stores.executor()
        run = await leave_at_node(ex, graph, "t1", "b", {"log": []})
        assert isinstance(run.result.error, gx.Cancelled)
        last = (await ex.history("t1"))[-1]
        assert (last.trigger, last.status, last.step, last.next_node) == (
            "cancel",
            "cancelled",
            1,
            "b",
        )

        delays["b"] = 0.0
        ex2 = stores.executor(await stores.reopen())
        async with ex2.resume_from(graph, "t1") as resumed:
            events = await consume(resumed)

        assert events[0] == gx.GraphStart(
            trace_id="t1", step=1, graph="chain", graph_hash=graph.hash, node="b", resumed=True
        )
        starts = [(e.node, e.step, e.span_id) for e in events if isinstance(e, gx.NodeStart)]
        assert starts == [("b", 2, "b@2"), ("c", 3, "c@3")]
        assert {e.trace_id for e in events} == {"t1"}
        result = resumed.result
        assert (result.trace_id, result.status, result.steps) == ("t1", "completed", 3)
        assert result.state == {"log": ["a", "b", "c"]}
        assert [(e.step, e.node) for e in result.execution_log] == [(2, "b"), (3, "c")]
        assert calls == ["a", "b", "b", "c"]
        assert await triggers(ex2, "t1") == [
            ("start", 0),
            ("cancel", 1),
            ("resume", 1),
            ("completion", 3),
        ]

    async def test_keeps_barrier_counters_and_early_decisions(self, stores: Stores) -> None:
        """A decision sent early for gate#2 before leaving at gate#1 is used after the resume."""
        graph = loop(rounds=2)
        ex = stores.executor()

        async def early(run: gx.Run, event: gx.BarrierWaiting) -> None:
            assert event.barrier_id == "gate#1"
            await run.handle.approve("gate#2")

        await leave_at_barrier(ex, graph, "t-loop", {"count": 0}, early)
        info = await stores.store.get_run("t-loop")
        assert info is not None
        assert (info.barrier_counts, info.pending_barrier, info.step) == ({"gate": 1}, "gate#1", 2)

        ex2 = stores.executor(await stores.reopen())
        async with ex2.resume_from(graph, "t-loop") as resumed:
            events = await consume(resumed)

        waits = [(e.barrier_id, e.step) for e in events if isinstance(e, gx.BarrierWaiting)]
        assert waits == [("gate#1", 2)]
        resolved = [
            (e.barrier_id, e.step, e.decision, e.by)
            for e in events
            if isinstance(e, gx.BarrierResolved)
        ]
        assert resolved == [("gate#1", 2, "approve", "human"), ("gate#2", 4, "approve", "human")]
        assert resumed.result.steps == 5
        assert resumed.result.state == {"count": 2, "gate": APPROVED, "done": True}
        info = await ex2.store.get_run("t-loop") if ex2.store else None
        assert info is not None
        assert (info.status, info.barrier_counts, info.pending_barrier) == (
            "completed",
            {"gate": 2},
            None,
        )

    async def test_waiting_run_waits_again_with_the_same_barrier_id(self, stores: Stores) -> None:
        """A run left at a barrier emits the same BarrierWaiting again after a restart."""
        graph = approval()
        ex = stores.executor()
        events, _run = await leave_at_barrier(ex, graph, "t-wait")
        first = events[-1]
        assert first == gx.BarrierWaiting(
            trace_id="t-wait",
            step=2,
            barrier_id="approve#1",
            node="approve",
            prompt={"text": "hello"},
        )
        last = (await ex.history("t-wait"))[-1]
        assert (last.trigger, last.status, last.next_node) == ("left", "waiting", "approve")

        ex2 = stores.executor(await stores.reopen())
        async with ex2.resume_from(graph, "t-wait") as resumed:
            again = await consume(resumed)

        assert again[0] == gx.GraphStart(
            trace_id="t-wait",
            step=2,
            graph="approval",
            graph_hash=graph.hash,
            node="approve",
            resumed=True,
        )
        assert [e for e in again if isinstance(e, gx.BarrierWaiting)] == [first]
        assert resumed.result.state == {"draft": "hello", "approve": APPROVED, "sent": True}
        assert resumed.result.steps == 3

    async def test_handle_cancel_leaves_a_resumable_run(self, stores: Stores) -> None:
        """handle.cancel() during a slow node ends the run cancelled; resume finishes it."""
        calls: list[str] = []
        delays = {"b": 30.0}
        graph = chain(calls, delays)
        ex = stores.executor()
        events: list[gx.GraphEvent] = []
        async with ex.execute_stream(graph, trace_id="t-cancel") as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.NodeStart) and event.node == "b":
                    await run.handle.cancel()
        final = events[-1]
        assert isinstance(final, gx.GraphFailed)
        assert (final.status, final.error.type, final.state) == (
            "cancelled",
            "Cancelled",
            {"log": ["a"]},
        )
        assert run.result.status == "cancelled"
        assert isinstance(run.result.error, gx.Cancelled)
        state = await ex.get_state("t-cancel")
        assert (state.status, state.step, state.next_node) == ("cancelled", 1, "b")

        delays["b"] = 0.0
        async with stores.executor(await stores.reopen()).resume_from(graph, "t-cancel") as resumed:
            await consume(resumed)
        assert resumed.result.status == "completed"
        assert resumed.result.state == {"log": ["a", "b", "c"]}
        assert calls == ["a", "b", "b", "c"]

    async def test_side_effect_node_is_not_repeated(self, stores: Stores) -> None:
        """A side-effect node is checkpointed right after it, so a resume does not repeat it."""
        calls: list[str] = []
        delays = {"c": 30.0}
        graph = chain(calls, delays, side_effects=["b"])
        ex = stores.executor()
        await leave_at_node(ex, graph, "t-fx", "c")
        delays["c"] = 0.0
        async with stores.executor(await stores.reopen()).resume_from(graph, "t-fx") as resumed:
            await consume(resumed)
        assert resumed.result.state == {"log": ["a", "b", "c"]}
        assert calls == ["a", "b", "c", "c"]

    async def test_cancel_while_waiting_waits_again_on_resume(self, stores: Stores) -> None:
        """handle.cancel() at a barrier ends the run cancelled; a resume waits there again."""
        graph = approval()
        ex = stores.executor()
        events: list[gx.GraphEvent] = []
        async with ex.execute_stream(graph, trace_id="t-cw") as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.cancel()
        resolved = [e for e in events if isinstance(e, gx.BarrierResolved)]
        assert [(e.barrier_id, e.by) for e in resolved] == [("approve#1", "cancel")]
        assert run.result.status == "cancelled"
        state = await ex.get_state("t-cw")
        assert state.status == "cancelled"
        assert state.pending_barrier is not None
        assert state.pending_barrier.barrier_id == "approve#1"

        async with stores.executor(await stores.reopen()).resume_from(graph, "t-cw") as resumed:
            again = await consume(resumed)
        assert [e.barrier_id for e in again if isinstance(e, gx.BarrierWaiting)] == ["approve#1"]
        assert resumed.result.state == {"draft": "hello", "approve": APPROVED, "sent": True}

    async def test_failed_run_resumes_at_the_failing_node(self, stores: Stores) -> None:
        """A node that raised is run again by resume_from (the failure checkpoint points at it)."""
        broken = {"b": True}

        async def a(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"log": ["a"]}

        async def b(state: Mapping[str, Any]) -> dict[str, Any]:
            if broken["b"]:
                raise RuntimeError("flaky API")
            return {"log": ["b"]}

        graph = (
            gx.GraphBuilder("flaky")
            .node("a", a)
            .node("b", b)
            .edge("a", "b")
            .reducer("log", gx.reducers.append)
            .start("a")
            .end("b")
            .build()
        )
        ex = stores.executor()
        with pytest.raises(gx.NodeExecutionFailed, match="flaky API"):
            await ex.execute(graph, trace_id="t-flaky")
        state = await ex.get_state("t-flaky")
        assert (state.status, state.step, state.next_node, state.state) == (
            "failed",
            1,
            "b",
            {"log": ["a"]},
        )
        assert state.error is not None
        assert "flaky API" in state.error
        broken["b"] = False
        async with stores.executor(await stores.reopen()).resume_from(graph, "t-flaky") as resumed:
            await consume(resumed)
        assert (resumed.result.status, resumed.result.steps) == ("completed", 2)
        assert resumed.result.state == {"log": ["a", "b"]}


class TestGraphChanges:
    """What resume_from does when the graph changed since the checkpoint."""

    async def test_missing_next_node_is_graph_changed(self, stores: Stores) -> None:
        """The node the run continues at no longer exists: GraphChanged, and nothing is locked."""
        delays = {"b": 30.0}
        ex = stores.executor()
        await leave_at_node(ex, chain(delays=delays), "t-gone", "b")
        with pytest.raises(gx.GraphChanged, match="node 'b'") as info:
            async with ex.resume_from(chain(names=("a", "c")), "t-gone"):
                pytest.fail("resume_from should refuse the graph")  # pragma: no cover
        assert (info.value.trace_id, info.value.node) == ("t-gone", "b")

        delays["b"] = 0.0
        async with ex.resume_from(chain(delays=delays), "t-gone") as resumed:
            await consume(resumed)
        assert resumed.result.state == {"log": ["a", "b", "c"]}

    async def test_structural_change_warns(self, stores: Stores) -> None:
        """Another structural change is a GraphChangedWarning, and the run goes on."""
        delays = {"b": 30.0}
        ex = stores.executor()
        await leave_at_node(ex, chain(delays=delays), "t-warn", "b")
        bigger = chain(names=("a", "b", "c", "d"))
        with pytest.warns(gx.GraphChangedWarning, match="changed structurally"):
            async with ex.resume_from(bigger, "t-warn") as resumed:
                await consume(resumed)
        assert resumed.result.state == {"log": ["a", "b", "c", "d"]}

    @pytest.mark.parametrize("where", ["resume_from", "executor"])
    async def test_structural_change_fails_when_asked(self, stores: Stores, where: str) -> None:
        """``on_graph_change="fail"`` makes a structural change a GraphChanged error."""
        ex = stores.executor()
        await leave_at_node(ex, chain(delays={"b": 30.0}), "t-fail", "b")
        bigger = chain(names=("a", "b", "c", "d"))
        strict = stores.executor(on_graph_change="fail") if where == "executor" else ex
        kw: dict[str, Any] = {"on_graph_change": "fail"} if where == "resume_from" else {}
        with pytest.raises(gx.GraphChanged, match="changed structurally"):
            async with strict.resume_from(bigger, "t-fail", **kw):
                pytest.fail("resume_from should refuse the graph")  # pragma: no cover
        state = await ex.get_state("t-fail")
        assert (state.status, state.next_node) == ("cancelled", "b")


class TestLeases:
    """Only one driver per trace."""

    async def test_second_driver_is_locked_out_until_the_first_leaves(self, stores: Stores) -> None:
        """A resume while another driver holds the run is RunLocked; after it leaves, it works."""
        graph = approval()
        ex1 = stores.executor()
        ex2 = stores.executor(stores.other())
        async with ex1.execute_stream(graph, trace_id="t-lock") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    with pytest.raises(gx.RunLocked) as locked:
                        async with ex2.resume_from(graph, "t-lock"):
                            pytest.fail("the lease is held")  # pragma: no cover
                    assert locked.value.trace_id == "t-lock"
                    assert locked.value.expires_at is not None
                    assert locked.value.expires_at > time.time()
                    break
        assert run.result.status == "waiting"

        async with ex2.resume_from(graph, "t-lock") as resumed:
            events = await consume(resumed)
        assert [e.barrier_id for e in events if isinstance(e, gx.BarrierWaiting)] == ["approve#1"]
        assert resumed.result.state["sent"] is True

    async def test_lease_is_kept_while_a_long_node_runs(self, stores: Stores) -> None:
        """A node running longer than lease_ttl keeps the lease: another driver stays out."""
        graph = chain(delays={"b": 1.0})
        ex = stores.executor(lease_ttl=0.3)
        other = stores.executor(stores.other())
        async with ex.execute_stream(graph, trace_id="t-long") as run:
            async for event in run:
                if isinstance(event, gx.NodeStart) and event.node == "b":
                    await anyio.sleep(0.7)  # well past the ttl of the lease taken at the start
                    with pytest.raises(gx.RunLocked):
                        async with other.resume_from(graph, "t-long"):
                            pytest.fail("the lease should have been renewed")  # pragma: no cover
        assert run.result.status == "completed"
        assert run.result.state == {"log": ["a", "b", "c"]}

    async def test_vanished_driver_blocks_resume_until_its_lease_expires(
        self, stores: Stores
    ) -> None:
        """A lease never released (the process died) blocks resume_from until its ttl passes."""
        graph = approval()
        ex = stores.executor()
        await leave_at_barrier(ex, graph, "t-ghost")
        t0 = time.time()
        await stores.other().acquire_lease("t-ghost", Lease("vanished-process", 0.5))
        with pytest.raises(gx.RunLocked) as locked:
            async with ex.resume_from(graph, "t-ghost"):
                pytest.fail("the lease is held")  # pragma: no cover
        expires_at = locked.value.expires_at
        assert expires_at is not None
        assert t0 < expires_at <= time.time() + 0.5

        while True:
            try:
                async with ex.resume_from(graph, "t-ghost") as resumed:
                    await consume(resumed)
                break
            except gx.RunLocked:
                assert time.time() < t0 + 5, "the lease never expired"
                await anyio.sleep(0.05)
        assert time.time() >= expires_at
        assert resumed.result.state["sent"] is True


class TestRefusals:
    """Runs that cannot be resumed or started, refused on entering the ``async with``."""

    async def test_resume_of_a_completed_run_is_run_finished(self, stores: Stores) -> None:
        """A completed run cannot be resumed."""
        ex = stores.executor()
        await ex.execute(chain(), trace_id="t-done")
        with pytest.raises(gx.RunFinished, match="fork"):
            async with stores.executor(await stores.reopen()).resume_from(chain(), "t-done"):
                pytest.fail("the run is over")  # pragma: no cover

    async def test_resume_of_an_unknown_trace_is_run_not_found(self, stores: Stores) -> None:
        """An unknown trace id is RunNotFound (also for get_state and history)."""
        ex = stores.executor()
        with pytest.raises(gx.RunNotFound, match="'nope'"):
            async with ex.resume_from(chain(), "nope"):
                pytest.fail("no such run")  # pragma: no cover
        with pytest.raises(gx.RunNotFound):
            await ex.get_state("nope")
        with pytest.raises(gx.RunNotFound):
            await ex.history("nope")

    async def test_starting_with_an_existing_trace_id_is_refused(self, stores: Stores) -> None:
        """execute_stream/execute with a trace id that has checkpoints is a GraphError."""
        graph = approval()
        ex = stores.executor()
        await leave_at_barrier(ex, graph, "t-taken")
        before = await ex.history("t-taken")
        with pytest.raises(gx.GraphError, match="already has checkpoints"):
            async with ex.execute_stream(graph, trace_id="t-taken"):
                pytest.fail("the trace id is taken")  # pragma: no cover
        with pytest.raises(gx.GraphError, match="already has checkpoints"):
            await ex.execute(graph, trace_id="t-taken", decisions={"approve": gx.Approve()})
        assert await ex.history("t-taken") == before
        # the refused start gave its lease back: the run still resumes
        async with ex.resume_from(graph, "t-taken") as resumed:
            await consume(resumed)
        assert resumed.result.status == "completed"


# -- reading runs back ------------------------------------------------------------------------


class TestGetState:
    """get_state: the run as last checkpointed."""

    async def test_running_run(self, stores: Stores) -> None:
        """While node b runs, get_state shows the checkpoint after a."""
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        graph = chain(delays={"b": 30.0})
        async with ex.execute_stream(graph, {"log": []}, trace_id="t-run") as run:
            async for event in run:
                if isinstance(event, gx.NodeStart) and event.node == "b":
                    state = await ex.get_state("t-run")
                    break
        assert (state.status, state.step, state.next_node, state.pending_barrier) == (
            "running",
            1,
            "b",
            None,
        )
        assert state.state == {"log": ["a"]}
        assert (state.trace_id, state.graph_name, state.graph_hash) == (
            "t-run",
            "chain",
            graph.hash,
        )

    async def test_waiting_and_completed_run_and_after_a_restart(self, stores: Stores) -> None:
        """get_state of a waiting run shows its barrier; of a completed one, the final state."""
        graph = approval()
        ex = stores.executor()
        async with ex.execute_stream(graph, trace_id="t-gs") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    waiting = await ex.get_state("t-gs")
                    await run.handle.approve(event.barrier_id)
        assert (waiting.status, waiting.step, waiting.next_node) == ("waiting", 2, "approve")
        assert waiting.pending_barrier == PendingBarrier(
            barrier_id="approve#1", node="approve", prompt={"text": "hello"}, deadline=None
        )
        assert waiting.state == {"draft": "hello"}

        done = await ex.get_state("t-gs")
        assert (done.status, done.step, done.next_node, done.pending_barrier) == (
            "completed",
            3,
            None,
            None,
        )
        assert (
            done.state == run.result.state == {"draft": "hello", "approve": APPROVED, "sent": True}
        )
        assert done.seq == (await ex.history("t-gs"))[-1].seq

        again = await stores.executor(await stores.reopen()).get_state("t-gs")
        assert again == done


class TestHistory:
    """history: every checkpoint, oldest first."""

    async def test_lists_checkpoints_oldest_first(self, stores: Stores) -> None:
        """seq, kind, step, next node, trigger and bytes, matching the CheckpointSaved events."""
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        async with ex.execute_stream(chain(), {"pad": PAD, "log": []}, trace_id="t-h") as run:
            events = await consume(run)
        history = await ex.history("t-h")
        assert [(h.seq, h.kind, h.step, h.next_node, h.trigger, h.status) for h in history] == [
            (1, "base", 0, "a", "start", "running"),
            (2, "delta", 1, "b", "step", "running"),
            (3, "delta", 2, "c", "step", "running"),
            (4, "delta", 3, None, "completion", "completed"),
        ]
        assert [(h.seq, h.kind, h.bytes) for h in history] == [
            (e.seq, e.kind, e.bytes) for e in saved(events)
        ]
        assert history[0].bytes > len(PAD) > max(h.bytes for h in history[1:])
        stamps = [h.created_at for h in history]
        assert stamps == sorted(stamps)
        assert await stores.executor(await stores.reopen()).history("t-h") == history


class TestFork:
    """fork: a new trace from any checkpoint."""

    async def test_fork_with_an_update(self, stores: Stores) -> None:
        """The update goes through the reducers; the original run is untouched."""
        calls: list[str] = []
        graph = chain(calls)
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(graph, {"pad": PAD, "log": []}, trace_id="t-orig")
        history = await ex.history("t-orig")
        original = await ex.get_state("t-orig")
        seq = next(h.seq for h in history if h.next_node == "b")
        calls.clear()

        async with ex.fork(
            graph, "t-orig", seq, update={"log": ["edited"], "pad": "p"}, new_trace_id="t-fork"
        ) as fork:
            events = await consume(fork)

        assert events[0] == gx.GraphStart(
            trace_id="t-fork",
            step=1,
            graph="chain",
            graph_hash=graph.hash,
            node="b",
            resumed=False,
            parent="t-orig",
        )
        assert (fork.result.trace_id, fork.result.status, fork.result.steps) == (
            "t-fork",
            "completed",
            3,
        )
        assert fork.result.state == {"pad": "p", "log": ["a", "edited", "b", "c"]}
        assert calls == ["b", "c"]
        forked = await ex.get_state("t-fork")
        assert forked.parent == ParentRef(trace_id="t-orig", seq=seq)
        assert forked.state == fork.result.state
        assert (await ex.history("t-fork"))[0].trigger == "fork"
        assert await ex.history("t-orig") == history
        assert await ex.get_state("t-orig") == original
        assert {r.trace_id for r in await ex.runs()} == {"t-orig", "t-fork"}

    async def test_fork_gets_a_new_trace_id(self, stores: Stores) -> None:
        """Without new_trace_id, a fork gets a fresh trace id; forking a waiting run works too."""
        graph = approval()
        ex = stores.executor()
        await leave_at_barrier(ex, graph, "t-w")
        seq = (await ex.history("t-w"))[-1].seq
        async with ex.fork(graph, "t-w", seq) as fork:
            events = await consume(fork)
        assert fork.trace_id != "t-w"
        assert [e.barrier_id for e in events if isinstance(e, gx.BarrierWaiting)] == ["approve#1"]
        assert fork.result.state["sent"] is True
        assert (await ex.get_state("t-w")).status == "waiting"


class TestRunsAndPrune:
    """The runs index, and pruning it."""

    async def _three_runs(self, ex: gx.GraphExecutor) -> None:
        await ex.execute(chain(), trace_id="t-done")
        await leave_at_barrier(ex, approval(), "t-wait")
        await leave_at_node(ex, chain(delays={"b": 30.0}), "t-cancel", "b")

    async def test_runs_by_status(self, stores: Stores) -> None:
        """runs(status=...) lists the runs in that status, most recently updated first."""
        ex = stores.executor()
        await self._three_runs(ex)
        assert [r.trace_id for r in await ex.runs()] == ["t-cancel", "t-wait", "t-done"]
        assert [r.trace_id for r in await ex.runs(status="completed")] == ["t-done"]
        assert [r.trace_id for r in await ex.runs(status="waiting")] == ["t-wait"]
        assert [r.trace_id for r in await ex.runs(status="cancelled")] == ["t-cancel"]
        assert await ex.runs(status="failed") == []
        assert [r.trace_id for r in await ex.runs(graph_name="approval")] == ["t-wait"]
        waiting = (await ex.runs(status="waiting"))[0]
        assert (waiting.pending_barrier, waiting.next_node) == ("approve#1", "approve")

    async def test_prune_never_removes_waiting_runs(self, stores: Stores) -> None:
        """prune removes finished runs; a waiting run stays and still resumes."""
        ex = stores.executor()
        await self._three_runs(ex)
        with pytest.raises(ValueError, match="waiting"):
            await stores.store.prune(older_than=time.time() + 60, statuses=("waiting",))
        gone = await stores.store.prune(
            older_than=time.time() + 60, statuses=("completed", "failed", "cancelled")
        )
        assert sorted(gone) == ["t-cancel", "t-done"]
        assert [r.trace_id for r in await ex.runs()] == ["t-wait"]
        with pytest.raises(gx.RunNotFound):
            await ex.get_state("t-done")
        async with ex.resume_from(approval(), "t-wait") as resumed:
            await consume(resumed)
        assert resumed.result.state["sent"] is True


# -- decisions through the store --------------------------------------------------------------


class TestStoreDecisions:
    """store.submit_decision: decisions from another process."""

    async def test_reaches_a_waiting_run_by_polling(self, stores: Stores) -> None:
        """A decision submitted through the store is picked up by the run waiting for it."""
        ex = stores.executor(decision_poll_interval=0.02)
        other = stores.other()
        events: list[gx.GraphEvent] = []
        async with ex.execute_stream(approval(), trace_id="t-poll") as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    assert (
                        await other.submit_decision("t-poll", event.barrier_id, gx.Approve()) >= 1
                    )
        resolved = [e for e in events if isinstance(e, gx.BarrierResolved)]
        assert [(e.barrier_id, e.decision, e.by) for e in resolved] == [
            ("approve#1", "approve", "human")
        ]
        assert run.result.state == {"draft": "hello", "approve": APPROVED, "sent": True}

    @pytest.mark.parametrize(
        ("decision", "record", "sent"),
        [
            (gx.Approve(), APPROVED, True),
            (
                gx.Reject("too risky"),
                {"decision": "reject", "reason": "too risky", "by": "human"},
                False,
            ),
        ],
    )
    async def test_is_used_by_a_later_resume(
        self, stores: Stores, decision: gx.Decision, record: dict[str, Any], sent: bool
    ) -> None:
        """A decision submitted while nobody drives the run is used when it is resumed."""
        graph = approval()
        await leave_at_barrier(stores.executor(), graph, "t-later")
        store = await stores.reopen()
        await store.submit_decision("t-later", "approve#1", decision)
        async with stores.executor(store).resume_from(graph, "t-later") as resumed:
            events = await consume(resumed, approve=False)
        assert not [e for e in events if isinstance(e, gx.BarrierWaiting)]
        assert resumed.result.state == {"draft": "hello", "approve": record, "sent": sent}

    async def test_refused_targets(self, stores: Stores) -> None:
        """Unknown trace, resolved barrier, non-barrier node, finished run: refused at the call."""
        graph = loop(rounds=2)
        ex = stores.executor()
        async with ex.execute_stream(graph, {"count": 0}, trace_id="t-ref") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    if event.barrier_id == "gate#2":
                        break
                    await run.handle.approve(event.barrier_id)
        assert run.result.status == "waiting"
        store = stores.other()
        with pytest.raises(gx.RunNotFound):
            await store.submit_decision("nope", "gate#1", gx.Approve())
        with pytest.raises(gx.InvalidDecision, match="already resolved"):
            await store.submit_decision("t-ref", "gate#1", gx.Approve())
        with pytest.raises(gx.InvalidDecision, match="not a barrier"):
            await store.submit_decision("t-ref", "work#1", gx.Approve())
        await store.submit_decision("t-ref", "gate#2", gx.Approve())
        async with ex.resume_from(graph, "t-ref") as resumed:
            events = await consume(resumed, approve=False)
        assert not [e for e in events if isinstance(e, gx.BarrierWaiting)]
        assert resumed.result.state == {"count": 2, "gate": APPROVED, "done": True}
        with pytest.raises(gx.RunFinished):
            await store.submit_decision("t-ref", "gate#3", gx.Approve())


# -- checkpoint policy ------------------------------------------------------------------------


class TestPolicy:
    """Which moments write a checkpoint."""

    async def test_every_step(self, stores: Stores) -> None:
        """every_step: one checkpoint per step (the last step's is the completion one)."""
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(chain(names=("a", "b", "c", "d")), trace_id="t")
        assert await triggers(ex, "t") == [
            ("start", 0),
            ("step", 1),
            ("step", 2),
            ("step", 3),
            ("completion", 4),
        ]

    async def test_default_policy_for_fast_nodes(self, stores: Stores) -> None:
        """Default policy, fast nodes: start and completion, plus the barrier's two."""
        ex = stores.executor()
        await ex.execute(chain(names=("a", "b", "c", "d")), trace_id="t-fast")
        assert await triggers(ex, "t-fast") == [("start", 0), ("completion", 4)]
        async with ex.execute_stream(approval(), trace_id="t-bar") as run:
            await consume(run)
        assert await triggers(ex, "t-bar") == [
            ("start", 0),
            ("barrier_waiting", 2),
            ("barrier_resolved", 2),
            ("completion", 3),
        ]

    async def test_declared_side_effects(self, stores: Stores) -> None:
        """A node declared side_effects=True is always followed by a checkpoint."""
        ex = stores.executor()
        await ex.execute(chain(side_effects=["b"]), trace_id="t")
        assert await triggers(ex, "t") == [("start", 0), ("side_effects", 2), ("completion", 3)]

    @pytest.mark.parametrize(
        ("report", "trigger"),
        [({"side_effects": True}, "side_effects"), ({"token_cost": 5000}, "adaptive")],
    )
    async def test_reported_usage(
        self, stores: Stores, report: dict[str, Any], trigger: str
    ) -> None:
        """ctx.report(side_effects=True) or a large token cost makes a checkpoint follow."""

        async def plain(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"log": ["plain"]}

        async def reporting(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
            ctx.report(**report)
            return {"log": ["reporting"]}

        graph = (
            gx.GraphBuilder("report")
            .node("a", plain)
            .node("b", reporting)
            .node("c", plain)
            .edge("a", "b")
            .edge("b", "c")
            .reducer("log", gx.reducers.append)
            .start("a")
            .end("c")
            .build()
        )
        ex = stores.executor()
        await ex.execute(graph, trace_id="t")
        assert await triggers(ex, "t") == [("start", 0), (trigger, 2), ("completion", 3)]

    async def test_small_token_cost_is_not_enough(self, stores: Stores) -> None:
        """Token costs below the threshold write no adaptive checkpoint."""

        async def cheap(state: Mapping[str, Any], ctx: gx.NodeContext) -> None:
            ctx.report(token_cost=100)

        graph = (
            gx.GraphBuilder("cheap")
            .node("a", cheap)
            .node("b", cheap)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        ex = stores.executor()
        await ex.execute(graph, trace_id="t")
        assert await triggers(ex, "t") == [("start", 0), ("completion", 2)]

    async def test_explicit(self, stores: Stores) -> None:
        """handle.checkpoint() writes an "explicit" checkpoint at the next step boundary."""
        go = anyio.Event()

        async def a(state: Mapping[str, Any]) -> dict[str, Any]:
            await go.wait()
            return {"log": ["a"]}

        async def b(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"log": ["b"]}

        graph = (
            gx.GraphBuilder("explicit")
            .node("a", a)
            .node("b", b)
            .node("c", b)
            .edge("a", "b")
            .edge("b", "c")
            .reducer("log", gx.reducers.append)
            .start("a")
            .end("c")
            .build()
        )
        ex = stores.executor()
        async with ex.execute_stream(graph, trace_id="t") as run:
            events: list[gx.GraphEvent] = []
            async for event in run:
                events.append(event)
                if isinstance(event, gx.NodeStart) and event.node == "a":
                    await run.handle.checkpoint()
                    go.set()
        assert await triggers(ex, "t") == [("start", 0), ("explicit", 1), ("completion", 3)]
        assert [e.trigger for e in saved(events)] == ["start", "explicit", "completion"]


# -- compaction and durability ----------------------------------------------------------------


class TestCompaction:
    """Bases every compact_every records; only the first and latest keep their snapshots."""

    async def test_compact_every_3(self, stores: Stores) -> None:
        """Bases at seq 1, 4, 7, 10 when written; afterwards only 1 and 10 are bases."""
        names = [f"n{i}" for i in range(10)]
        graph = chain(names=names)
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True, compact_every=3))
        async with ex.execute_stream(graph, {"pad": PAD, "log": []}, trace_id="t") as run:
            events = await consume(run)
        written = [(e.seq, e.kind) for e in saved(events)]
        assert written == [(s, "base" if s % 3 == 1 else "delta") for s in range(1, 12)]
        history = await ex.history("t")
        assert [h.seq for h in history if h.kind == "base"] == [1, 10]
        assert all(h.bytes < len(PAD) for h in history if h.kind == "delta")
        final = {"pad": PAD, "log": names}
        assert run.result.state == final
        ex2 = stores.executor(await stores.reopen())
        assert (await ex2.get_state("t")).state == final
        for seq in (3, 5, 8):  # restored from the first base through demoted bases' deltas
            async with ex2.fork(graph, "t", seq, new_trace_id=f"fork-{seq}") as fork:
                await consume(fork)
            assert fork.result.state == final
            assert fork.result.execution_log[0].node == names[seq - 1]

    async def test_compaction_continues_across_a_resume(self, stores: Stores) -> None:
        """A resumed run keeps the base cadence of its trace (seq 1, 4, 7, ...)."""
        names = [f"n{i}" for i in range(10)]
        delays = {"n5": 30.0}
        graph = chain(delays=delays, names=names)
        policy = gx.CheckpointPolicy(every_step=True, compact_every=3)
        ex = stores.executor(policy=policy)
        await leave_at_node(ex, graph, "t", "n5", {"pad": PAD, "log": []})
        assert [h.seq for h in await ex.history("t")] == list(range(1, 8))
        delays["n5"] = 0.0
        ex2 = stores.executor(await stores.reopen(), policy=policy)
        async with ex2.resume_from(graph, "t") as resumed:
            events = await consume(resumed)
        written = [(e.seq, e.kind) for e in saved(events)]
        assert written == [(s, "base" if s % 3 == 1 else "delta") for s in range(8, 14)]
        assert [h.seq for h in await ex2.history("t") if h.kind == "base"] == [1, 13]
        assert (await ex2.get_state("t")).state == {"pad": PAD, "log": names}


class TestDurability:
    """CheckpointSaved after the commit; async durability still commits everything."""

    @pytest.mark.parametrize("durability", ["sync", "async"])
    async def test_checkpoint_saved_after_commit(
        self, stores: Stores, durability: Literal["sync", "async"]
    ) -> None:
        """Each CheckpointSaved arrives once its checkpoint is readable from the store."""
        reader = stores.other()
        policy = gx.CheckpointPolicy(every_step=True, durability=durability)
        ex = stores.executor(slow(stores.store), policy=policy)
        seen: list[tuple[int, str, int]] = []
        async with ex.execute_stream(
            chain(names=("a", "b", "c", "d")), {"pad": PAD}, trace_id="t"
        ) as run:
            async for event in run:
                if isinstance(event, gx.CheckpointSaved):
                    committed = {h.seq: h for h in await reader.history("t")}
                    assert event.seq in committed
                    row = committed[event.seq]
                    assert (row.kind, row.bytes, row.trigger) == (
                        event.kind,
                        event.bytes,
                        event.trigger,
                    )
                    assert event.checkpoint_id == f"t:{event.seq}"
                    seen.append((event.seq, event.kind, event.bytes))
        assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5]
        assert run.result.status == "completed"

    async def test_async_durability_commits_everything_before_returning(
        self, stores: Stores
    ) -> None:
        """With durability="async" every CheckpointSaved arrives and all is committed at return."""
        names = [f"n{i}" for i in range(8)]
        policy = gx.CheckpointPolicy(every_step=True, durability="async")
        ex = stores.executor(slow(stores.store), policy=policy)
        async with ex.execute_stream(chain(names=names), {"pad": PAD}, trace_id="t-s") as run:
            events = await consume(run)
        assert [e.seq for e in saved(events)] == list(range(1, 10))
        result = await ex.execute(chain(names=names), {"pad": PAD}, trace_id="t-x")

        ex2 = stores.executor(await stores.reopen())
        for trace_id, state in (("t-s", run.result.state), ("t-x", result.state)):
            history = await ex2.history(trace_id)
            assert [h.seq for h in history] == list(range(1, 10))
            assert history[-1].trigger == "completion"
            got = await ex2.get_state(trace_id)
            assert (got.status, got.state) == ("completed", state)

    async def test_async_durability_commits_the_cancel_checkpoint(self, stores: Stores) -> None:
        """Leaving early with durability="async" still commits every checkpoint, cancel last."""
        policy = gx.CheckpointPolicy(every_step=True, durability="async")
        ex = stores.executor(slow(stores.store, 0.05), policy=policy)
        graph = chain(delays={"c": 30.0})
        await leave_at_node(ex, graph, "t-al", "c", {"pad": PAD})
        ex2 = stores.executor(await stores.reopen())
        assert await triggers(ex2, "t-al") == [
            ("start", 0),
            ("step", 1),
            ("step", 2),
            ("cancel", 2),
        ]
        got = await ex2.get_state("t-al")
        assert (got.status, got.next_node, got.state) == (
            "cancelled",
            "c",
            {"pad": PAD, "log": ["a", "b"]},
        )

    async def test_async_durability_barrier_waiting_after_commit(self, stores: Stores) -> None:
        """BarrierWaiting is sent only once the checkpoint recording the wait is committed."""
        reader = stores.other()
        policy = gx.CheckpointPolicy(every_step=True, durability="async")
        ex = stores.executor(slow(stores.store, 0.05), policy=policy)
        async with ex.execute_stream(approval(), trace_id="t-b") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    last = (await reader.history("t-b"))[-1]
                    assert (last.trigger, last.status, last.next_node) == (
                        "barrier_waiting",
                        "waiting",
                        "approve",
                    )
                    break
        assert run.result.status == "waiting"
        async with stores.executor(await stores.reopen()).resume_from(approval(), "t-b") as resumed:
            await consume(resumed)
        assert resumed.result.state["sent"] is True


# -- damaged records --------------------------------------------------------------------------


class TestDamagedRecords:
    """A damaged checkpoint is a CheckpointError naming the trace and the seq."""

    @pytest.mark.parametrize("damage", ["body", "snapshot"])
    async def test_damaged_row(self, tmp_path: Path, damage: str) -> None:
        """Flip body bytes or truncate a snapshot: get_state/resume_from fail; other traces work."""
        path = tmp_path / "runs.db"
        graph = approval()
        policy = gx.CheckpointPolicy(every_step=True)
        async with gx.SQLiteStore(path) as store:
            ex = gx.GraphExecutor(store=store, policy=policy)
            for trace_id in ("t-bad", "t-good"):
                await leave_at_barrier(ex, graph, trace_id, {"pad": PAD})

        with contextlib.closing(sqlite3.connect(path)) as db, db:
            if damage == "body":
                seq, blob = db.execute(
                    "SELECT seq, body FROM checkpoints WHERE trace_id = 't-bad' "
                    "ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                flipped = bytearray(blob)
                flipped[len(flipped) // 2] ^= 0xFF
                db.execute(
                    "UPDATE checkpoints SET body = ? WHERE trace_id = 't-bad' AND seq = ?",
                    (bytes(flipped), seq),
                )
            else:
                seq, blob = db.execute(
                    "SELECT seq, snapshot FROM checkpoints WHERE trace_id = 't-bad' "
                    "AND kind = 'base' ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                db.execute(
                    "UPDATE checkpoints SET snapshot = ? WHERE trace_id = 't-bad' AND seq = ?",
                    (blob[: len(blob) // 2], seq),
                )

        async with gx.SQLiteStore(path) as store:
            ex = gx.GraphExecutor(store=store, policy=policy)
            with pytest.raises(gx.CheckpointError) as got:
                await ex.get_state("t-bad")
            with pytest.raises(gx.CheckpointError) as resumed_bad:
                async with ex.resume_from(graph, "t-bad"):
                    pytest.fail("the checkpoint is damaged")  # pragma: no cover
            for exc in (got.value, resumed_bad.value):
                assert (exc.trace_id, exc.seq) == ("t-bad", seq)
                assert "'t-bad'" in str(exc)
                assert f"seq {seq}" in str(exc)
                assert "damaged" in str(exc)

            async with ex.resume_from(graph, "t-good") as resumed:
                await consume(resumed)
            assert resumed.result.state == {
                "pad": PAD,
                "draft": "hello",
                "approve": APPROVED,
                "sent": True,
            }
