"""Barriers inside child runs (map items, subgraph nodes, graph branches), in one process:
path ids, several waiting at once, decisions in any order, early, by wildcard over a path
pattern, through the store; get_state; misuse refused at the call."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphexec as gx

State = Mapping[str, Any]
ITEMS = 5


def item_graph() -> gx.Graph:
    """prep -> approve -> act (approved: n + 1) or skip (None)."""
    return (
        gx.GraphBuilder("tool")
        .node("prep", lambda s: {"n": s["i"] * 10}, inline=True)
        .barrier("approve", prompt=lambda s: {"call": s["i"]})
        .node("act", lambda s: {"out": s["n"] + 1}, inline=True)
        .node("skip", lambda s: {"out": None}, inline=True)
        .edge("prep", "approve")
        .edge("approve", "act", when=lambda s: s["approve"]["decision"] == "approve")
        .edge("approve", "skip")
        .start("prep")
        .end("act", "skip")
        .build()
    )


def agent() -> gx.Graph:
    return (
        gx.GraphBuilder("agent")
        .map("tools", item_graph(), over="calls", into="results", output="out")
        .start("tools")
        .end("tools")
        .build()
    )


def calls(n: int = ITEMS) -> dict[str, Any]:
    return {"calls": [{"i": i} for i in range(n)]}


def reference(verdicts: Mapping[int, str]) -> list[int | None]:
    return [i * 10 + 1 if verdicts[i] == "approve" else None for i in sorted(verdicts)]


def decision(verdict: str) -> gx.Decision:
    return gx.Approve() if verdict == "approve" else gx.Reject("no")


class TestWaitingTogether:
    """Every item waits at once, each with its own path id."""

    @settings(max_examples=20, deadline=None)
    @given(
        order=st.permutations(range(ITEMS)),
        verdicts=st.lists(st.sampled_from(["approve", "reject"]), min_size=ITEMS, max_size=ITEMS),
    )
    async def test_decisions_in_any_order_give_the_reference_state(
        self, order: list[int], verdicts: list[str]
    ) -> None:
        waiting: list[gx.BarrierWaiting] = []
        async with gx.GraphExecutor().execute_stream(agent(), calls()) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    waiting.append(event)
                    if len(waiting) == ITEMS:
                        for i in order:
                            await run.handle.decide(f"tools[{i}]/approve#1", decision(verdicts[i]))
        assert sorted(e.barrier_id for e in waiting) == [
            f"tools[{i}]/approve#1" for i in range(ITEMS)
        ]
        assert {e.node for e in waiting} == {f"tools[{i}]/approve" for i in range(ITEMS)}
        assert sorted(e.prompt["call"] for e in waiting) == list(range(ITEMS))
        assert run.result is not None and run.result.status == "completed"
        all_at_once = await gx.GraphExecutor().execute(
            agent(),
            calls(),
            decisions={f"tools[{i}]/approve#1": decision(verdicts[i]) for i in range(ITEMS)},
        )
        assert run.result.state == all_at_once.state
        assert run.result.state["results"] == reference(dict(enumerate(verdicts)))

    async def test_resolved_events_name_the_path(self) -> None:
        resolved: list[gx.BarrierResolved] = []
        async with gx.GraphExecutor().execute_stream(agent(), calls(2)) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.approve(event.barrier_id)
                if isinstance(event, gx.BarrierResolved):
                    resolved.append(event)
        assert sorted((e.barrier_id, e.decision, e.by) for e in resolved) == [
            ("tools[0]/approve#1", "approve", "human"),
            ("tools[1]/approve#1", "approve", "human"),
        ]


class TestEarlyAndWildcard:
    """Decisions given before the children exist, exact or over a path pattern."""

    async def test_exact_beats_a_path_wildcard(self) -> None:
        result = await gx.GraphExecutor().execute(
            agent(),
            calls(),
            decisions={"tools[*]/approve": gx.Approve(), "tools[2]/approve#1": gx.Reject("no")},
        )
        assert result.state["results"] == [1, 11, None, 31, 41]

    async def test_handle_wildcard_decides_every_waiting_and_later_item(self) -> None:
        async with gx.GraphExecutor().execute_stream(agent(), calls(3)) as run:
            await run.handle.decide_node("tools[*]/approve", gx.Approve())
            async for _event in run:
                pass
        assert run.result is not None and run.result.state["results"] == [1, 11, 21]

    async def test_a_subgraph_node_and_a_graph_branch_wait_too(self) -> None:
        g = (
            gx.GraphBuilder("p")
            .subgraph("one", item_graph(), input=lambda s: {"i": 1}, output={"a": "out"})
            .parallel("both", {"x": item_graph(), "y": lambda s: {"y": 1}})
            .edge("one", "both")
            .start("one")
            .end("both")
            .build()
        )
        seen: list[str] = []
        async with gx.GraphExecutor().execute_stream(g, {"i": 2}) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    seen.append(event.barrier_id)
                    await run.handle.approve(event.barrier_id)
        assert seen == ["one/approve#1", "both[x]/approve#1"]
        assert run.result is not None
        assert run.result.state["a"] == 11
        assert run.result.state["x"]["out"] == 21


class TestRefused:
    """Misuse is refused at the call, naming what is wrong."""

    async def test_bad_paths_and_ids(self) -> None:
        async with gx.GraphExecutor().execute_stream(agent(), calls(2)) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
            handle = run.handle
            with pytest.raises(gx.NodeNotFound, match="'nope\\[1\\]' is not a child graph"):
                await handle.approve("nope[1]/approve#1")
            with pytest.raises(gx.NodeNotFound, match="has no node 'later'"):
                await handle.approve("tools[1]/later#1")
            with pytest.raises(gx.InvalidDecision, match="not a barrier"):
                await handle.approve("tools[1]/act#1")
            with pytest.raises(gx.InvalidDecision, match="is not a barrier id"):
                await handle.approve("tools[1]/approve")
            await handle.approve("tools[0]/approve#1")
            await handle.approve("tools[1]/approve#1")
        with pytest.raises(gx.NodeNotFound, match="'tools\\[x\\]' is not a child graph"):
            await gx.GraphExecutor().execute(
                agent(), calls(), decisions={"tools[x]/act": gx.Approve()}
            )

    async def test_a_second_decision_for_a_waiting_child_barrier(self) -> None:
        async with gx.GraphExecutor().execute_stream(agent(), calls(1)) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.approve(event.barrier_id)
                    with pytest.raises(gx.InvalidDecision, match="already"):
                        await run.handle.approve(event.barrier_id)


class TestWithAStore:
    """Leaving while children wait, deciding through the store, resuming."""

    async def test_leave_decide_through_the_store_and_resume(self, tmp_path: Path) -> None:
        async with gx.SQLiteStore(tmp_path / "runs.db") as store:
            ex = gx.GraphExecutor(store=store, decision_poll_interval=0.01)
            waiting = 0
            async with ex.execute_stream(agent(), calls(3), trace_id="t") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        waiting += 1
                        if waiting == 3:
                            break
            assert run.result is not None and run.result.status == "waiting"
            state = await ex.get_state("t")
            assert state.status == "waiting"
            assert state.pending_barrier is not None
            assert state.pending_barrier.barrier_id == "tools[0]/approve#1"
            assert [(p.barrier_id, p.node, p.prompt) for p in state.pending_barriers] == [
                (f"tools[{i}]/approve#1", f"tools[{i}]/approve", {"call": i}) for i in range(3)
            ]
            await store.submit_decision("t", "tools[2]/approve#1", gx.Reject("no"))
            rewaits: list[str] = []
            async with ex.resume_from(agent(), "t") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        rewaits.append(event.barrier_id)
                        if len(rewaits) == 2:
                            # From "another process": through the store, while it waits.
                            await store.submit_decision("t", "tools[0]/approve#1", gx.Approve())
                            await store.submit_decision("t", "tools[1]/approve#1", gx.Approve())
            assert sorted(rewaits) == ["tools[0]/approve#1", "tools[1]/approve#1"]
            assert run.result is not None and run.result.status == "completed"
            assert run.result.state["results"] == [1, 11, None]

    async def test_the_store_checks_path_ids_against_the_graphs_barrier_paths(
        self, tmp_path: Path
    ) -> None:
        async with gx.SQLiteStore(tmp_path / "runs.db") as store:
            ex = gx.GraphExecutor(store=store, decision_poll_interval=0.01)
            async with ex.execute_stream(agent(), calls(2), trace_id="t") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        break
            with pytest.raises(gx.InvalidDecision, match="not a barrier node"):
                await store.submit_decision("t", "tools[1]/act#1", gx.Approve())
            with pytest.raises(gx.InvalidDecision, match="not a barrier node"):
                await store.submit_decision("t", "other[1]/approve#1", gx.Approve())
            await store.submit_decision(
                "t", "tools[*]/approve", gx.Reject("all"), every_occurrence=True
            )
            async with ex.resume_from(agent(), "t") as run:
                async for _event in run:
                    pass
            assert run.result is not None and run.result.state["results"] == [None, None]

    async def test_nested_children_wait_and_resume_with_nested_path_ids(
        self, tmp_path: Path
    ) -> None:
        inner = (
            gx.GraphBuilder("inner")
            .map("tools", item_graph(), over="calls", into="results", output="out")
            .start("tools")
            .end("tools")
            .build()
        )
        g = (
            gx.GraphBuilder("outer")
            .subgraph("agent", inner, output=["results"])
            .start("agent")
            .end("agent")
            .build()
        )
        async with gx.SQLiteStore(tmp_path / "runs.db") as store:
            ex = gx.GraphExecutor(store=store, decision_poll_interval=0.01)
            ids: list[str] = []
            async with ex.execute_stream(g, calls(2), trace_id="n") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        ids.append(event.barrier_id)
                        if len(ids) == 1:
                            await run.handle.approve(event.barrier_id)
                        else:
                            break
            assert sorted(ids) == ["agent/tools[0]/approve#1", "agent/tools[1]/approve#1"]
            state = await ex.get_state("n")
            left = ids[1:]
            assert [p.barrier_id for p in state.pending_barriers] == left
            rewaits: list[str] = []
            async with ex.resume_from(g, "n") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        rewaits.append(event.barrier_id)
                        await store.submit_decision("n", event.barrier_id, gx.Reject("no"))
            assert rewaits == left
            assert run.result is not None and run.result.status == "completed"
            approved = int(ids[0].split("[")[1][0])
            assert run.result.state["results"] == [
                i * 10 + 1 if i == approved else None for i in range(2)
            ]

    async def test_an_early_edit_is_checked_against_the_childs_typed_state(self) -> None:
        class Tool(msgspec.Struct):
            i: int
            n: int = 0
            out: int | None = None
            approve: dict[str, Any] = {}

        child = (
            gx.GraphBuilder("typed-tool", state=Tool)
            .barrier("approve")
            .node("act", lambda s: {"out": s.n + 1}, inline=True)
            .edge("approve", "act")
            .start("approve")
            .end("act")
            .build()
        )
        g = (
            gx.GraphBuilder("p")
            .map("tools", child, over="calls", into="results", output="out")
            .start("tools")
            .end("tools")
            .build()
        )
        with pytest.raises(gx.StateError, match="'n'"):
            await gx.GraphExecutor().execute(
                g, calls(1), decisions={"tools[0]/approve#1": gx.Edit({"n": "ten"})}
            )
        result = await gx.GraphExecutor().execute(
            g, calls(2), decisions={"tools[*]/approve": gx.Edit({"n": 10})}
        )
        assert result.state["results"] == [11, 11]

    async def test_a_paused_child_node_waits_with_its_path_id(self) -> None:
        tries: list[int] = []

        def flaky(s: State) -> dict[str, Any]:
            tries.append(1)
            if len(tries) == 1:
                raise ValueError("first")
            return {"ok": True}

        child = (
            gx.GraphBuilder("c")
            .node("call", flaky, inline=True, on_failure="pause")
            .start("call")
            .end("call")
            .build()
        )
        g = gx.GraphBuilder("p").subgraph("sub", child, output=["ok"]).start("sub").end("sub")
        paused: list[tuple[str, str]] = []
        async with gx.GraphExecutor().execute_stream(g.build(), {}) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    paused.append((event.barrier_id, event.node))
                    await run.handle.approve(event.barrier_id)  # Approve: retry
        assert paused == [("sub/call#1", "sub/call")]
        assert run.result is not None and run.result.state == {"ok": True}
        assert len(tries) == 2
