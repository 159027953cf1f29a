"""Subgraphs: a graph as a node (``.subgraph``), a map over a graph, graphs as parallel
branches: state mapped in and out, events with their path, errors naming the path, the
child's own reducers, routing and retries, mermaid."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphexec as gx

State = Mapping[str, Any]


def counter_graph(name: str = "child") -> gx.Graph:
    """x -> x + 1, then log x (append reducer), then route on x to "big" or "small"."""
    return (
        gx.GraphBuilder(name)
        .node("inc", lambda s: {"x": s["x"] + 1}, inline=True)
        .node("log", lambda s: {"log": [s["x"]]}, inline=True)
        .node("big", lambda s: {"size": "big"}, inline=True)
        .node("small", lambda s: {"size": "small"}, inline=True)
        .edge("inc", "log")
        .edge("log", "big", when=lambda s: s["x"] > 10)
        .edge("log", "small")
        .reducer("log", gx.reducers.append)
        .start("inc")
        .end("big", "small")
        .build()
    )


def one_node(graph: gx.Graph, **kw: Any) -> gx.Graph:
    return gx.GraphBuilder("parent").subgraph("sub", graph, **kw).start("sub").end("sub").build()


class TestSubgraphNode:
    """A graph as a node of its parent."""

    async def test_default_mapping_copies_state_in_and_nests_final_state_out(self) -> None:
        result = await gx.GraphExecutor().execute(one_node(counter_graph()), {"x": 1})
        assert result.state == {"x": 1, "sub": {"x": 2, "log": [2], "size": "small"}}

    async def test_key_mappings_in_and_out(self) -> None:
        g = one_node(counter_graph(), input={"x": "n"}, output={"total": "x", "kind": "size"})
        result = await gx.GraphExecutor().execute(g, {"n": 10})
        assert result.state == {"n": 10, "total": 11, "kind": "big"}

    async def test_key_name_lists_and_callables(self) -> None:
        g = one_node(counter_graph(), input=["x"], output=["x", "log"])
        result = await gx.GraphExecutor().execute(g, {"x": 3, "other": 1})
        assert result.state == {"x": 4, "other": 1, "log": [4]}
        g2 = one_node(
            counter_graph(),
            input=lambda s: {"x": s["a"] * 2},
            output=lambda final: {"doubled": final["x"]},
        )
        result = await gx.GraphExecutor().execute(g2, {"a": 7})
        assert result.state == {"a": 7, "doubled": 15}

    async def test_output_goes_through_the_parents_reducers(self) -> None:
        g = (
            gx.GraphBuilder("parent")
            .subgraph("sub", counter_graph(), output=["log"])
            .reducer("log", gx.reducers.append)
            .start("sub")
            .end("sub")
            .build()
        )
        result = await gx.GraphExecutor().execute(g, {"x": 1, "log": ["before"]})
        # The child started from a copy ["before"] and appended 2; the parent appends the
        # child's final list.
        assert result.state["log"] == ["before", "before", 2]

    async def test_output_naming_a_key_the_child_lacks_is_a_state_error(self) -> None:
        g = one_node(counter_graph(), output={"y": "nope"})
        with pytest.raises(gx.StateError, match="'nope'") as info:
            await gx.GraphExecutor().execute(g, {"x": 1})
        assert info.value.node == "sub"

    async def test_events_carry_the_childs_path(self) -> None:
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(one_node(counter_graph()), {"x": 1}) as run:
            async for event in run:
                events.append(event)
        starts = [e.node for e in events if isinstance(e, gx.NodeStart)]
        assert starts == ["sub", "sub/inc", "sub/log", "sub/small"]
        spans = [e.span_id for e in events if isinstance(e, gx.NodeEnd)]
        assert spans == ["sub/inc@1", "sub/log@2", "sub/small@3", "sub@1"]
        # One GraphStart and one GraphComplete: the child's own are not forwarded; every
        # event of the child carries the parent's step.
        assert sum(isinstance(e, gx.GraphStart) for e in events) == 1
        assert sum(isinstance(e, gx.GraphComplete) for e in events) == 1
        assert {e.step for e in events if getattr(e, "node", "").startswith("sub/")} == {1}
        assert run.result is not None and run.result.status == "completed"

    async def test_custom_events_from_child_nodes_carry_the_path(self) -> None:
        async def talk(s: State, ctx: gx.NodeContext) -> None:
            await ctx.emit({"token": "hi"})

        def talk_sync(s: State, ctx: gx.NodeContext) -> None:
            ctx.emit({"token": "from a thread"})

        child = (
            gx.GraphBuilder("c")
            .node("talk", talk)
            .node("sync", talk_sync)
            .edge("talk", "sync")
            .start("talk")
            .end("sync")
            .build()
        )
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(one_node(child), {}) as run:
            async for event in run:
                events.append(event)
        custom = [(e.node, e.data) for e in events if isinstance(e, gx.Custom)]
        assert custom == [
            ("sub/talk", {"token": "hi"}),
            ("sub/sync", {"token": "from a thread"}),
        ]

    async def test_a_failing_child_node_names_its_path(self) -> None:
        def boom(s: State) -> None:
            raise ValueError("no search today")

        child = gx.GraphBuilder("c").node("search", boom, inline=True).start("search")
        g = one_node(child.end("search").build())
        with pytest.raises(gx.NodeExecutionFailed, match="sub/search") as info:
            await gx.GraphExecutor().execute(g, {})
        assert info.value.node == "sub/search"
        # The cause is what the node raised (retry filters test it), not the child's error.
        assert isinstance(info.value.cause, ValueError)

    async def test_nested_children_compose_paths(self) -> None:
        def boom(s: State) -> None:
            raise ValueError("deep")

        inner = gx.GraphBuilder("inner").node("search", boom, inline=True)
        inner_g = inner.start("search").end("search").build()
        middle = (
            gx.GraphBuilder("middle")
            .map("tools", inner_g, over="calls", into="out")
            .start("tools")
            .end("tools")
            .build()
        )
        g = one_node(middle)
        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(g, {"calls": [{}, {}, {}]})
        assert info.value.node is not None
        assert info.value.node.startswith("sub/tools[")
        assert info.value.node.endswith("]/search")

    async def test_retry_runs_the_child_again(self) -> None:
        calls: list[int] = []

        def flaky(s: State) -> dict[str, Any]:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("try again")
            return {"ok": True}

        child = gx.GraphBuilder("c").node("call", flaky, inline=True).start("call").end("call")
        g = (
            gx.GraphBuilder("parent")
            .subgraph("sub", child.build(), output=["ok"], retry=gx.Retry(attempts=3, backoff=0))
            .start("sub")
            .end("sub")
            .build()
        )
        result = await gx.GraphExecutor().execute(g, {})
        assert result.state == {"ok": True}
        assert len(calls) == 3

    async def test_child_steps_are_bounded_by_max_steps(self) -> None:
        loop = (
            gx.GraphBuilder("loop")
            .node("again", lambda s: {"n": s.get("n", 0) + 1}, inline=True)
            .node("done", lambda s: None, inline=True)
            .edge("again", "again", when=lambda s: s["n"] < 1000)
            .edge("again", "done")
            .start("again")
            .end("done")
            .build()
        )
        with pytest.raises(gx.NodeExecutionFailed, match="max_steps=5") as info:
            await gx.GraphExecutor().execute(one_node(loop, max_steps=5), {})
        assert isinstance(info.value.cause, gx.StepsExceeded)

    async def test_typed_child_state(self) -> None:
        class Child(msgspec.Struct):
            x: int
            log: list[int] = []

        def inc(s: Child) -> dict[str, Any]:
            return {"x": s.x + 1, "log": [s.x]}

        child = gx.GraphBuilder("typed", state=Child).node("inc", inc, inline=True)
        g = one_node(
            child.start("inc").end("inc").build(),
            input=["x"],
            output=lambda final: {"seen": final.log, "is_struct": isinstance(final, Child)},
        )
        result = await gx.GraphExecutor().execute(g, {"x": 4})
        assert result.state == {"x": 4, "seen": [4], "is_struct": True}
        with pytest.raises(gx.StateError, match="initial state does not fit Child") as info:
            await gx.GraphExecutor().execute(g, {"x": "four"})
        assert info.value.node == "sub"


class TestMapOverGraph:
    """One child run per item."""

    async def test_items_are_child_states_and_results_keep_item_order(self) -> None:
        g = (
            gx.GraphBuilder("parent")
            .map("tools", counter_graph(), over="calls", into="sizes", output="size")
            .start("tools")
            .end("tools")
            .build()
        )
        result = await gx.GraphExecutor().execute(g, {"calls": [{"x": 20}, {"x": 1}]})
        assert result.state["sizes"] == ["big", "small"]

    async def test_non_mapping_items_need_an_input_callable(self) -> None:
        g = (
            gx.GraphBuilder("parent")
            .map("tools", counter_graph(), over="calls", into="xs", output="x")
            .start("tools")
            .end("tools")
            .build()
        )
        with pytest.raises(gx.NodeExecutionFailed, match=r"tools\[0\]"):
            await gx.GraphExecutor().execute(g, {"calls": [5]})
        g2 = (
            gx.GraphBuilder("parent")
            .map(
                "tools",
                counter_graph(),
                over="calls",
                into="xs",
                input=lambda item: {"x": item},
                output=lambda final: final["x"] * 10,
                max_concurrency=2,
            )
            .start("tools")
            .end("tools")
            .build()
        )
        result = await gx.GraphExecutor().execute(g2, {"calls": [5, 6, 7]})
        assert result.state["xs"] == [60, 70, 80]

    async def test_continue_keeps_the_items_that_finished(self) -> None:
        def maybe(s: State) -> dict[str, Any]:
            if s["x"] == 2:
                raise ValueError("two")
            return {"y": s["x"]}

        child = gx.GraphBuilder("c").node("f", maybe, inline=True).start("f").end("f").build()
        g = (
            gx.GraphBuilder("parent")
            .map("tools", child, over="calls", into="ys", output="y", on_error="continue")
            .start("tools")
            .end("tools")
            .build()
        )
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(
            g, {"calls": [{"x": 1}, {"x": 2}, {"x": 3}]}
        ) as run:
            async for event in run:
                events.append(event)
        assert run.result is not None and run.result.state["ys"] == [1, 3]
        observed = [e for e in events if isinstance(e, gx.ObservedError) and e.node == "tools"]
        assert [e.branch for e in observed] == ["tools[1]"]
        child_ends = sorted(e.node for e in events if isinstance(e, gx.NodeEnd) and not e.ok)
        assert child_ends == ["tools[1]/f"]

    @settings(max_examples=25, deadline=None)
    @given(xs=st.lists(st.integers(-50, 50), max_size=6), limit=st.none() | st.integers(1, 3))
    async def test_equals_mapping_the_childs_function(
        self, xs: list[int], limit: int | None
    ) -> None:
        g = (
            gx.GraphBuilder("parent")
            .map(
                "m",
                counter_graph(),
                over="calls",
                into="out",
                input=lambda item: {"x": item},
                output=lambda final: [final["x"], final["size"], final["log"]],
                max_concurrency=limit,
            )
            .start("m")
            .end("m")
            .build()
        )
        result = await gx.GraphExecutor().execute(g, {"calls": xs})
        expected = [[x + 1, "big" if x + 1 > 10 else "small", [x + 1]] for x in xs]
        assert result.state["out"] == expected


class TestGraphBranches:
    """Graphs as branches of a static parallel node."""

    async def test_graph_and_function_branches_merge_in_declaration_order(self) -> None:
        g = (
            gx.GraphBuilder("parent")
            .parallel(
                "research",
                {"deep": counter_graph(), "quick": lambda s: {"quick": s["x"]}},
            )
            .start("research")
            .end("research")
            .build()
        )
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(g, {"x": 1}) as run:
            async for event in run:
                events.append(event)
        assert run.result is not None
        assert run.result.state == {
            "x": 1,
            "deep": {"x": 2, "log": [2], "size": "small"},
            "quick": 1,
        }
        nodes = [e.node for e in events if isinstance(e, gx.NodeStart)]
        assert nodes == [
            "research",
            "research[deep]/inc",
            "research[deep]/log",
            "research[deep]/small",
        ]


class TestDeclaring:
    """What build() refuses, the hash, mermaid."""

    def test_a_non_graph_child_and_bad_mappings_are_refused(self) -> None:
        with pytest.raises(gx.InvalidGraph, match="expected a built gx.Graph"):
            gx.GraphBuilder("p").subgraph("s", "nope").start("s").end("s").build()  # type: ignore[arg-type]
        with pytest.raises(gx.InvalidGraph, match="input= takes key names as a list"):
            one_node(counter_graph(), input="x")
        with pytest.raises(gx.InvalidGraph, match="output= is a key name or a callable"):
            gx.GraphBuilder("p").map("m", counter_graph(), over="a", into="b", output=["x"]).start(
                "m"
            ).end("m").build()
        with pytest.raises(gx.InvalidGraph, match="input= and output= apply when"):
            gx.GraphBuilder("p").map("m", lambda item: item, over="a", into="b", output="x").start(
                "m"
            ).end("m").build()

    def test_the_hash_covers_the_child_graph(self) -> None:
        assert one_node(counter_graph("a")).hash != one_node(counter_graph("b")).hash
        assert one_node(counter_graph("a")).hash == one_node(counter_graph("a")).hash

    def test_mermaid_draws_child_graphs_as_subgraph_blocks(self) -> None:
        g = (
            gx.GraphBuilder("parent")
            .subgraph("sub", counter_graph())
            .map("tools", counter_graph(), over="calls", into="out")
            .parallel("par", {"g": counter_graph(), "f": lambda s: None})
            .edge("sub", "tools")
            .edge("tools", "par")
            .start("sub")
            .end("par")
            .build()
        )
        text = g.to_mermaid()
        assert '    subgraph n_sub["sub"]' in text
        assert "        n_sub__inc --> n_sub__log" in text
        assert '    subgraph n_tools["tools (map)"]' in text
        assert '        subgraph n_par__g_["g"]' in text
        assert "            n_par__g_log -- " in text
        assert text.count("\n    end\n") == 3
        assert "    n_sub --> n_tools" in text
