"""Resuming a checkpointed run through the executor, and what a resume refuses (a changed graph, a finished run), on every store.

Store-independent behaviour runs on MemoryStore and SQLiteStore (the ``stores`` fixture in
conftest.py); "another process" is a second SQLiteStore on the same file (MemoryStore: the same
object), and "a restart" closes the SQLiteStore and opens a new one on the same path. Shared
graphs and helpers: ``_resume_kit.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest

import graphexec as gx

from _resume_kit import (  # isort: skip
    Stores,
    chain,
    approval,
    loop,
    APPROVED,
    consume,
    leave_at_barrier,
    leave_at_node,
    triggers,
)


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
            trace_id="t1",
            step=1,
            event_id=(2 << 32) | 1,  # the trace's second driver: segment 2
            graph="chain",
            graph_hash=graph.hash,
            node="b",
            resumed=True,
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
            event_id=first.event_id,
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
            event_id=(2 << 32) | 1,
            graph="approval",
            graph_hash=graph.hash,
            node="approve",
            resumed=True,
        )
        waits = [e for e in again if isinstance(e, gx.BarrierWaiting)]
        # The same wait again, with a later id: ids keep increasing across drivers.
        assert [msgspec.structs.replace(e, event_id=0) for e in waits] == [
            msgspec.structs.replace(first, event_id=0)
        ]
        assert waits[0].event_id > first.event_id
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
        assert "flaky API" in state.error.message
        assert (state.error.type, state.error.node) == ("NodeExecutionFailed", "b")
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
        """execute_stream/execute with the trace id of a run that is not finished is
        RunExists (a completed one takes its next turn: test_conversations.py)."""
        graph = approval()
        ex = stores.executor()
        await leave_at_barrier(ex, graph, "t-taken")
        before = await ex.history("t-taken")
        with pytest.raises(gx.RunExists, match="is waiting, not completed"):
            async with ex.execute_stream(graph, trace_id="t-taken"):
                pytest.fail("the trace id is taken")  # pragma: no cover
        with pytest.raises(gx.RunExists, match="decide barrier 'approve#1'"):
            await ex.execute(graph, trace_id="t-taken", decisions={"approve": gx.Approve()})
        assert await ex.history("t-taken") == before
        # the refused start gave its lease back: the run still resumes
        async with ex.resume_from(graph, "t-taken") as resumed:
            await consume(resumed)
        assert resumed.result.status == "completed"


# -- reading runs back ------------------------------------------------------------------------


class TestFailedBarrier:
    """A barrier whose prompt raised is resumed as the same step."""

    async def test_a_barrier_whose_prompt_failed_resumes_as_the_same_step(
        self, stores: Stores
    ) -> None:
        broken = {"on": True}

        async def draft(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"draft": "hello"}

        def prompt(state: Mapping[str, Any]) -> str:
            if broken["on"]:
                raise RuntimeError("no prompt")
            return "ok?"

        graph = (
            gx.GraphBuilder("prompted")
            .node("draft", draft)
            .barrier("approve", prompt=prompt)
            .node("send", lambda s: {"sent": True}, inline=True)
            .edge("draft", "approve")
            .edge("approve", "send")
            .start("draft")
            .end("send")
            .build()
        )
        ex = stores.executor()
        with pytest.raises(gx.NodeExecutionFailed, match="prompt"):
            await ex.execute(graph, {}, trace_id="t-prompt", decisions={})
        saved = await ex.get_state("t-prompt")
        assert ("failed", "approve", 1) == (saved.status, saved.next_node, saved.step)
        broken["on"] = False
        async with ex.resume_from(graph, "t-prompt") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    assert ("approve#1", 2) == (event.barrier_id, event.step)
                    await run.handle.approve(event.barrier_id)
        assert ("completed", 3) == (run.result.status, run.result.steps)

    async def test_an_edit_whose_reducer_raises_leaves_the_barrier_to_ask_again(
        self, stores: Stores
    ) -> None:
        """An Edit whose update a reducer refuses fails the run at the barrier: its span is
        closed, the failure record shows the barrier not reached (nothing half applied), and a
        resume reaches it as the same step and occurrence and asks again."""

        def picky(current: list[str] | None, value: str) -> list[str]:
            if value == "boom":
                raise ValueError("no boom")
            return [*(current or []), value]

        graph = (
            gx.GraphBuilder("edited")
            .node("draft", lambda s: {"notes": "drafted"}, inline=True)
            .barrier("approve")
            .node("send", lambda s: {"sent": True}, inline=True)
            .edge("draft", "approve")
            .edge("approve", "send")
            .reducer("notes", picky)
            .start("draft")
            .end("send")
            .build()
        )
        ex = stores.executor()
        events: list[gx.GraphEvent] = []
        async with ex.execute_stream(graph, {}, trace_id="t-edit") as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.decide(event.barrier_id, gx.Edit({"notes": "boom"}))
        assert "failed" == run.result.status
        ends = [(e.node, e.ok) for e in events if isinstance(e, gx.NodeEnd)]
        assert [("draft", True), ("approve", False)] == ends
        saved = await ex.get_state("t-edit", graph=graph)
        assert ("failed", "approve", 1, None) == (
            saved.status,
            saved.next_node,
            saved.step,
            saved.pending_barrier,
        )
        assert {"notes": ["drafted"]} == saved.state
        async with ex.resume_from(graph, "t-edit") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    assert ("approve#1", 2) == (event.barrier_id, event.step)
                    await run.handle.approve(event.barrier_id)
        assert ("completed", 3) == (run.result.status, run.result.steps)
        assert {"notes": ["drafted"], "sent": True} == {
            k: v for k, v in run.result.state.items() if k != "approve"
        }
