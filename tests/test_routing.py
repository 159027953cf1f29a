"""Routing after a node: conditions, normal and fallback edges, directives, end nodes, loops."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

import graphexec as gx

State = Mapping[str, Any]
StreamEvents = Callable[..., Awaitable[tuple[list[gx.GraphEvent], gx.Run]]]


def visited(result: gx.GraphResult) -> list[str]:
    """The nodes a run executed, in order."""
    return [entry.node for entry in result.execution_log]


async def noop(s: State) -> None:
    return None


class TestConditions:
    async def test_first_condition_that_holds_wins_in_declaration_order(self) -> None:
        """Conditions are tried in declaration order and the first that holds is taken."""
        tried: list[str] = []

        def no(s: State) -> bool:
            tried.append("no")
            return False

        def yes(s: State) -> bool:
            tried.append("yes")
            return True

        def also_yes(s: State) -> bool:
            tried.append("also_yes")
            return True

        graph = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .node("c", noop)
            .node("d", noop)
            .node("e", noop)
            .edge("a", "b", when=no)
            .edge("a", "c", when=yes)
            .edge("a", "d", when=also_yes)
            .edge("a", "e")
            .start("a")
            .end("b", "c", "d", "e")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert ["a", "c"] == visited(result)
        assert ["no", "yes"] == tried

    async def test_normal_edge_when_no_condition_holds(self) -> None:
        """With no condition holding, the normal edge is taken."""
        graph = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .node("c", noop)
            .edge("a", "b")
            .edge("a", "c", when=lambda s: False)
            .start("a")
            .end("b", "c")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert ["a", "b"] == visited(result)

    async def test_fallback_edge_when_nothing_else_matches(self) -> None:
        """With no condition holding and no normal edge, the fallback edge is taken."""
        graph = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .node("c", noop)
            .edge("a", "b", when=lambda s: False)
            .fallback("a", "c")
            .start("a")
            .end("b", "c")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert ["a", "c"] == visited(result)

    async def test_unrouted_lists_every_condition_tried(self) -> None:
        """No edge matching raises Unrouted whose message and .conditions name every condition."""

        def is_big(s: State) -> bool:
            return False

        def is_small(s: State) -> bool:
            return False

        graph = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("big", noop)
            .node("small", noop)
            .edge("a", "big", when=is_big)
            .edge("a", "small", when=is_small)
            .start("a")
            .end("big", "small")
            .build()
        )
        with pytest.raises(gx.Unrouted) as info:
            await gx.GraphExecutor().execute(graph, trace_id="t")
        exc = info.value
        assert 2 == len(exc.conditions)
        assert exc.conditions[0].startswith("a -> big when ")
        assert exc.conditions[0].endswith("is_big")
        assert exc.conditions[1].startswith("a -> small when ")
        assert exc.conditions[1].endswith("is_small")
        for condition in exc.conditions:
            assert condition in str(exc)
        assert ("a", "t", 1) == (exc.node, exc.trace_id, exc.step)

    async def test_predicates_see_the_state_after_the_update(self) -> None:
        """Edge predicates receive the state with the node's update already applied."""
        seen: list[int] = []

        async def grow(s: State) -> dict[str, Any]:
            return {"x": 10}

        def big(s: State) -> bool:
            seen.append(s["x"])
            return bool(s["x"] > 5)

        graph = (
            gx.GraphBuilder("g")
            .node("grow", grow)
            .node("big", noop)
            .node("small", noop)
            .edge("grow", "big", when=big)
            .edge("grow", "small")
            .start("grow")
            .end("big", "small")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph, {"x": 0})
        assert ["grow", "big"] == visited(result)
        assert [10] == seen

    async def test_condition_that_raises_fails_the_node(self) -> None:
        """A predicate that raises becomes NodeExecutionFailed naming the node, with the cause."""
        boom = ZeroDivisionError("nope")

        def broken(s: State) -> bool:
            raise boom

        graph = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b", when=broken)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(graph, trace_id="t")
        assert info.value.cause is boom
        assert ("a", "t", 1) == (info.value.node, info.value.trace_id, info.value.step)


class TestEndNodes:
    async def test_end_node_finishes_the_run_after_it_executes(self) -> None:
        """An end node runs, its update is applied, and then the run completes."""

        async def a(s: State) -> dict[str, Any]:
            return {"a": 1}

        async def b(s: State) -> dict[str, Any]:
            return {"b": 2}

        graph = gx.GraphBuilder("g").node("a", a).node("b", b).edge("a", "b")
        result = await gx.GraphExecutor().execute(graph.start("a").end("b").build())
        assert ("completed", 2, {"a": 1, "b": 2}) == (result.status, result.steps, result.state)
        assert ["a", "b"] == visited(result)

    async def test_start_node_that_is_an_end_node(self) -> None:
        """A one-node graph whose start is also its end runs that node once."""

        async def only(s: State) -> dict[str, Any]:
            return {"n": s["n"] + 1}

        graph = gx.GraphBuilder("g").node("only", only).start("only").end("only").build()
        result = await gx.GraphExecutor().execute(graph, {"n": 0})
        assert ({"n": 1}, 1) == (result.state, result.steps)


class TestDirectives:
    async def test_goto_a_declared_edge_applies_the_update(self) -> None:
        """Goto(target, update=...) applies the update and continues at target, ignoring rules."""

        async def a(s: State) -> gx.Goto:
            return gx.Goto("b", update={"via": "goto"})

        graph = (
            gx.GraphBuilder("g")
            .node("a", a)
            .node("b", noop)
            .node("c", noop)
            .edge("a", "b", when=lambda s: False)
            .edge("a", "c")
            .start("a")
            .end("b", "c")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert ["a", "b"] == visited(result)
        assert {"via": "goto"} == result.state

    async def test_goto_an_undeclared_edge_is_missing_edge(self) -> None:
        """Goto toward a node with no edge from this node raises MissingEdge naming the target."""

        async def a(s: State) -> gx.Goto:
            return gx.Goto("c")

        graph = (
            gx.GraphBuilder("g")
            .node("a", a)
            .node("b", noop)
            .node("c", noop)
            .edge("a", "b")
            .edge("b", "c")
            .start("a")
            .end("c")
            .build()
        )
        with pytest.raises(gx.MissingEdge) as info:
            await gx.GraphExecutor().execute(graph, trace_id="t")
        assert ("c", "a", "t") == (info.value.target, info.value.node, info.value.trace_id)
        assert "'c'" in str(info.value)

    async def test_end_finishes_early_and_applies_the_update(self) -> None:
        """End(update=...) applies the update and completes the run without following edges."""

        async def a(s: State) -> gx.End:
            return gx.End(update={"done": True})

        graph = (
            gx.GraphBuilder("g")
            .node("a", a)
            .node("b", noop)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert ("completed", 1, {"done": True}) == (result.status, result.steps, result.state)
        assert ["a"] == visited(result)

    async def test_fallback_follows_the_fallback_edge_and_is_observed(
        self, stream_events: StreamEvents
    ) -> None:
        """Fallback(reason, update=...) applies the update, emits ObservedError, takes fallback."""

        async def a(s: State) -> gx.Fallback:
            return gx.Fallback("api down", update={"degraded": True})

        graph = (
            gx.GraphBuilder("g")
            .node("a", a)
            .node("b", noop)
            .node("safe", noop)
            .edge("a", "b")
            .fallback("a", "safe")
            .start("a")
            .end("b", "safe")
            .build()
        )
        events, run = await stream_events(graph, {}, trace_id="t")
        assert [
            gx.GraphStart(
                trace_id="t", step=0, graph="g", graph_hash=graph.hash, node="a", input={}
            ),
            gx.NodeStart(trace_id="t", step=1, node="a", span_id="a@1", kind="node"),
            gx.StateChanged(
                trace_id="t", step=1, node="a", span_id="a@1", key="degraded", delta=True
            ),
            gx.ObservedError(
                trace_id="t",
                step=1,
                node="a",
                span_id="a@1",
                error=gx.ErrorInfo(type="Fallback", message="api down", node="a"),
            ),
            gx.NodeEnd(
                trace_id="t",
                step=1,
                node="a",
                span_id="a@1",
                ok=True,
                duration=0.0,
                next_node="safe",
            ),
            gx.NodeStart(trace_id="t", step=2, node="safe", span_id="safe@2", kind="node"),
            gx.NodeEnd(trace_id="t", step=2, node="safe", span_id="safe@2", ok=True, duration=0.0),
            gx.GraphComplete(trace_id="t", step=2, state={"degraded": True}, steps=2, duration=0.0),
        ] == events
        assert ["a", "safe"] == visited(run.result)

    async def test_fallback_without_a_fallback_edge_is_missing_edge(self) -> None:
        """Fallback from a node that declares no fallback edge raises MissingEdge."""

        async def a(s: State) -> gx.Fallback:
            return gx.Fallback("nope")

        graph = gx.GraphBuilder("g").node("a", a).node("b", noop).edge("a", "b")
        with pytest.raises(gx.MissingEdge) as info:
            await gx.GraphExecutor().execute(graph.start("a").end("b").build())
        assert "a" == info.value.node
        assert "fallback" in str(info.value)

    async def test_sync_node_directives(self) -> None:
        """A sync node in a worker thread may return directives too."""

        def a(s: State) -> gx.Goto:
            return gx.Goto("c", update={"k": 1})

        graph = (
            gx.GraphBuilder("g")
            .node("a", a)
            .node("b", noop)
            .node("c", noop)
            .edge("a", "b")
            .edge("a", "c", when=lambda s: False)
            .start("a")
            .end("b", "c")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert (["a", "c"], {"k": 1}) == (visited(result), result.state)


class TestLoops:
    async def test_bounded_loop_runs_until_its_condition_stops_holding(self) -> None:
        """A conditional self-loop repeats the node until the condition fails."""

        async def tick(s: State) -> dict[str, Any]:
            return {"n": s["n"] + 1}

        graph = (
            gx.GraphBuilder("g")
            .node("tick", tick)
            .node("done", noop)
            .edge("tick", "tick", when=lambda s: s["n"] < 3)
            .edge("tick", "done")
            .start("tick")
            .end("done")
            .build()
        )
        result = await gx.GraphExecutor(max_steps=10).execute(graph, {"n": 0})
        assert ["tick", "tick", "tick", "done"] == visited(result)
        assert ({"n": 3}, 4) == (result.state, result.steps)

    async def test_endless_loop_hits_max_steps(self) -> None:
        """A loop that never exits raises StepsExceeded once max_steps steps have run."""
        runs: list[int] = []

        async def spin(s: State) -> None:
            runs.append(1)

        graph = (
            gx.GraphBuilder("g")
            .node("spin", spin)
            .node("done", noop)
            .edge("spin", "spin", when=lambda s: True)
            .edge("spin", "done")
            .start("spin")
            .end("done")
            .build()
        )
        with pytest.raises(gx.StepsExceeded) as info:
            await gx.GraphExecutor(max_steps=5).execute(graph, trace_id="t")
        assert 5 == len(runs)
        assert (5, "spin", "t", 5) == (
            info.value.max_steps,
            info.value.node,
            info.value.trace_id,
            info.value.step,
        )

    async def test_max_steps_counts_the_last_step(self) -> None:
        """A run of exactly max_steps steps completes."""
        graph = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        result = await gx.GraphExecutor(max_steps=2).execute(graph)
        assert 2 == result.steps
        with pytest.raises(gx.StepsExceeded):
            await gx.GraphExecutor(max_steps=1).execute(graph)
