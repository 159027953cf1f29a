"""Forking a run from one of its checkpoints.

Store-independent behaviour runs on MemoryStore and SQLiteStore (the ``stores`` fixture in
conftest.py); "another process" is a second SQLiteStore on the same file (MemoryStore: the same
object), and "a restart" closes the SQLiteStore and opens a new one on the same path. Shared
graphs and helpers: ``_resume_kit.py``.
"""

from __future__ import annotations

import msgspec
import pytest

import graphexec as gx
from graphexec.checkpoint._record import (
    ParentRef,
)

from _resume_kit import (  # isort: skip
    Stores,
    PAD,
    chain,
    approval,
    consume,
    leave_at_barrier,
)


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
            event_id=(1 << 32) | 1,  # the fork's first driver
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

    async def test_a_fork_refuses_a_trace_id_the_store_has(self, stores: Stores) -> None:
        """new_trace_id naming an existing trace: RunExists with its status, nothing written to
        either trace, and the existing trace's lease given back (it still resumes)."""
        graph = approval()
        ex = stores.executor()
        await leave_at_barrier(ex, graph, "t-src")
        await leave_at_barrier(ex, graph, "t-busy")
        before = await ex.history("t-busy")
        seq = (await ex.history("t-src"))[-1].seq
        with pytest.raises(gx.RunExists, match="'t-busy' already has checkpoints") as caught:
            async with ex.fork(graph, "t-src", seq, new_trace_id="t-busy"):
                pass
        assert caught.value.status == "waiting" and caught.value.trace_id == "t-busy"
        assert await ex.history("t-busy") == before
        assert (await ex.get_state("t-busy")).status == "waiting"
        assert (await ex.runs(status="waiting"))[0].lease is None

    async def test_a_fork_asks_again_at_its_barriers(self, stores: Stores) -> None:
        """The source's decisions (a wildcard here, and an unused exact one) stay with the
        source: a fork from before the barrier waits there."""
        graph = approval()
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(
            graph,
            {},
            trace_id="t-src",
            decisions={"approve": gx.Approve(), "approve#2": gx.Reject("later")},
        )
        seq = next(h.seq for h in await ex.history("t-src") if h.next_node == "approve")
        async with ex.fork(graph, "t-src", seq) as fork:
            async for event in fork:
                if isinstance(event, gx.BarrierWaiting):
                    assert "approve#1" == event.barrier_id
                    await fork.handle.reject(event.barrier_id, "second thoughts")
        assert fork.result.state["sent"] is False

    async def test_a_fork_takes_decisions(self, stores: Stores) -> None:
        """fork(decisions=...) decides the fork's barriers up front, checked like execute's."""
        graph = approval()
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(graph, {}, trace_id="t-src", decisions={"approve": gx.Approve()})
        seq = next(h.seq for h in await ex.history("t-src") if h.next_node == "approve")
        async with ex.fork(
            graph, "t-src", seq, decisions={"approve#1": gx.Reject("no")}, new_trace_id="t-f"
        ) as fork:
            events = await consume(fork)
        assert [] == [e for e in events if isinstance(e, gx.BarrierWaiting)]
        assert fork.result.state["approve"]["decision"] == "reject"
        with pytest.raises(gx.InvalidDecision, match="not a barrier"):
            async with ex.fork(graph, "t-src", seq, decisions={"draft": gx.Approve()}):
                pass
        assert {r.trace_id for r in await ex.runs()} == {"t-src", "t-f"}

    async def test_a_bad_fork_update_names_the_fork(self, stores: Stores) -> None:
        """On typed state, an update that does not fit says it came from the fork update (not
        from "node None"), and no fork is started."""

        class Doc(msgspec.Struct):
            n: int = 0

        graph = (
            gx.GraphBuilder("typed", state=Doc)
            .node("a", lambda s: {"n": s.n + 1}, inline=True)
            .node("b", lambda s: {"n": s.n + 1}, inline=True)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(graph, Doc(), trace_id="t")
        seq = next(h.seq for h in await ex.history("t") if h.next_node == "b")
        with pytest.raises(gx.StateError) as caught:
            async with ex.fork(graph, "t", seq, update={"n": "many"}):
                pass
        message = str(caught.value)
        assert f"fork update of trace 't' seq {seq} wrote key 'n'" in message
        assert "None" not in message
        with pytest.raises(
            gx.StateError, match=f"fork update of trace 't' seq {seq} wrote unknown"
        ):
            async with ex.fork(graph, "t", seq, update={"m": 1}):
                pass
        assert ["t"] == [r.trace_id for r in await ex.runs()]
