"""Building graphs: validation in ``build()``, the structural hash, immutability, Mermaid, and
how node callables are classified (sync or async, with or without ``ctx``)."""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

import graphexec as gx

import _hashed_graph  # isort: skip  (a helper module next to this file)

TESTS = Path(__file__).parent


def noop(state: Any) -> None:
    """A node that changes nothing."""


def other_noop(state: Any) -> dict[str, Any]:
    """Another node, with a different body."""
    return {"touched": True}


def is_big(state: Any) -> bool:
    """An edge condition."""
    return bool(state.get("n", 0) > 1)


def is_small(state: Any) -> bool:
    """Another edge condition."""
    return bool(state.get("n", 0) <= 1)


def describe(fn: Callable[..., Any]) -> str:
    """How graphexec names a callable in its messages."""
    return f"{fn.__module__}.{fn.__qualname__}"


def invalid(builder: gx.GraphBuilder) -> gx.InvalidGraph:
    """Build, expecting InvalidGraph; return the exception."""
    with pytest.raises(gx.InvalidGraph) as info:
        builder.build()
    return info.value


def assert_problems(builder: gx.GraphBuilder, expected: list[str]) -> None:
    """``build()`` fails with exactly these problems, each also in the message."""
    exc = invalid(builder)
    assert expected == exc.problems
    for problem in expected:
        assert f"- {problem}" in str(exc)
    assert str(exc).startswith(f"graph {builder.name!r} is invalid:")


class TestValidationStructure:
    """Problems with names, start, end and edges."""

    def test_valid_graph_builds(self) -> None:
        """A well-formed graph builds into a Graph."""
        graph = (
            gx.GraphBuilder("ok")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        assert isinstance(graph, gx.Graph)
        assert ["a", "b"] == list(graph.nodes)

    def test_single_node_graph_builds(self) -> None:
        """One node that is both start and end is a valid graph."""
        graph = gx.GraphBuilder("one").node("a", noop).start("a").end("a").build()
        assert "a" == graph.start
        assert frozenset({"a"}) == graph.ends

    def test_unknown_edge_target(self) -> None:
        """An edge to a node that does not exist is named with its target."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b")
            .edge("a", "zz", when=is_big)
            .start("a")
            .end("b")
        )
        assert_problems(
            builder, [f"edge a -> zz when {describe(is_big)}: unknown target node 'zz'"]
        )

    def test_unknown_edge_source(self) -> None:
        """An edge from a node that does not exist is named with its source."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b")
            .edge("ghost", "b")
            .start("a")
            .end("b")
        )
        assert_problems(builder, ["edge ghost -> b: unknown source node 'ghost'"])

    def test_duplicate_node_names(self) -> None:
        """A name declared twice is reported with how many times."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .barrier("b")
            .edge("a", "b")
            .start("a")
            .end("b")
        )
        assert_problems(builder, ["duplicate node name 'b' (declared 2 times)"])

    def test_no_start(self) -> None:
        """A graph without .start() is refused."""
        builder = gx.GraphBuilder("g").node("a", noop).end("a")
        assert_problems(builder, ["no start node: call .start(name)"])

    def test_unknown_start(self) -> None:
        """A start that is not a node is named."""
        builder = gx.GraphBuilder("g").node("a", noop).start("nope").end("a")
        assert_problems(builder, ["start node 'nope' is not a node of the graph"])

    def test_more_than_one_start(self) -> None:
        """Two different start nodes are both named."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b")
            .start("a")
            .start("b")
            .end("b")
        )
        assert_problems(builder, ["more than one start node: 'a', 'b'"])

    def test_no_end(self) -> None:
        """A graph without .end() is refused."""
        builder = gx.GraphBuilder("g").node("a", noop).start("a")
        assert_problems(builder, ["no end node: call .end(name, ...)"])

    def test_unknown_end(self) -> None:
        """An end that is not a node is named."""
        builder = gx.GraphBuilder("g").node("a", noop).start("a").end("a", "zz")
        assert_problems(builder, ["end node 'zz' is not a node of the graph"])

    def test_unreachable_node(self) -> None:
        """A node no path from the start leads to is named, with the start."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .node("island", noop)
            .edge("a", "b")
            .edge("island", "b")
            .start("a")
            .end("b")
        )
        assert_problems(builder, ["node 'island' is unreachable from the start node 'a'"])

    def test_no_path_to_end(self) -> None:
        """A node from which no end can be reached is named."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .node("trap", noop)
            .edge("a", "trap", when=is_big)
            .edge("a", "b")
            .start("a")
            .end("b")
        )
        assert_problems(builder, ["node 'trap' has no path to an end node"])

    def test_cycle_with_exit_is_valid(self) -> None:
        """A loop is fine as long as every node can still reach an end."""
        graph = (
            gx.GraphBuilder("loop")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "a", when=is_small)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        assert 2 == len(graph.edges)

    def test_more_than_one_normal_edge(self) -> None:
        """Two unconditional edges out of one node are refused, naming both targets."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .node("c", noop)
            .edge("a", "b")
            .edge("a", "c")
            .start("a")
            .end("b", "c")
        )
        assert_problems(
            builder,
            [
                (
                    "node 'a' has 2 normal edges (to 'b', 'c'); at most one unconditional edge may "
                    "leave a node: give the others when= conditions"
                )
            ],
        )

    def test_more_than_one_fallback_edge(self) -> None:
        """Two fallback edges out of one node are refused."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .node("c", noop)
            .edge("a", "b")
            .fallback("a", "b")
            .fallback("a", "c")
            .start("a")
            .end("b", "c")
        )
        assert_problems(builder, ["node 'a' has more than one fallback edge"])

    def test_duplicate_conditional_edge(self) -> None:
        """The same conditional edge declared twice is named."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b", when=is_big)
            .edge("a", "b", when=is_big)
            .edge("a", "b")
            .start("a")
            .end("b")
        )
        assert_problems(builder, [f"edge a -> b when {describe(is_big)} is declared twice"])

    def test_duplicate_normal_edge(self) -> None:
        """The same normal edge declared twice is a duplicate and two normal edges."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b")
            .edge("a", "b")
            .start("a")
            .end("b")
        )
        assert_problems(
            builder,
            [
                "edge a -> b is declared twice",
                (
                    "node 'a' has 2 normal edges (to 'b', 'b'); at most one unconditional edge may "
                    "leave a node: give the others when= conditions"
                ),
            ],
        )

    def test_edges_out_of_an_end_node(self) -> None:
        """An end node with normal or conditional edges out of it is refused, listing them."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .node("c", noop)
            .edge("a", "b")
            .edge("b", "c", when=is_big)
            .edge("b", "c")
            .fallback("b", "c")
            .start("a")
            .end("b", "c")
        )
        assert_problems(
            builder,
            [
                (
                    f"end node 'b' has outgoing edges (b -> c when {describe(is_big)}; b -> c); "
                    "an end node finishes the run after it executes"
                )
            ],
        )

    async def test_fallback_out_of_an_end_node(self) -> None:
        """An end node may have a fallback edge (as in DESIGN): taken only on gx.Fallback."""

        def refund(state: Any) -> Any:
            return gx.Fallback("card declined") if state["fail"] else {"refunded": True}

        graph = (
            gx.GraphBuilder("g")
            .node("refund", refund)
            .node("decline", lambda state: {"declined": True})
            .fallback("refund", "decline")
            .start("refund")
            .end("refund", "decline")
            .build()
        )
        ex = gx.GraphExecutor()
        assert {"fail": False, "refunded": True} == (await ex.execute(graph, {"fail": False})).state
        assert {"fail": True, "declined": True} == (await ex.execute(graph, {"fail": True})).state

    def test_bad_node_name(self) -> None:
        """Empty names and names with '#' (reserved for barrier ids) are refused."""
        builder = (
            gx.GraphBuilder("g")
            .node("", noop)
            .node("a#1", noop)
            .node("a", noop)
            .edge("a", "a#1")
            .start("a")
            .end("a#1")
        )
        assert_problems(
            builder,
            [
                "node names must be non-empty strings, got ''",
                "node name 'a#1' must not contain '#'",
            ],
        )

    def test_many_problems_reported_at_once(self) -> None:
        """Every problem found is reported in one InvalidGraph, one line each."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .parallel("p", {"x": noop}, on_error="sometimes")  # type: ignore[arg-type]  # on purpose: build() refuses it
            .node("a", noop)
            .edge("a", "p")
            .edge("p", "nowhere")
            .start("a")
        )
        exc = invalid(builder)
        assert [
            "node 'p': on_error must be one of fail_fast, collect, continue, got 'sometimes'",
            "duplicate node name 'a' (declared 2 times)",
            "no end node: call .end(name, ...)",
            "edge p -> nowhere: unknown target node 'nowhere'",
        ] == exc.problems
        assert "graph 'g' is invalid:\n" + "\n".join(f"- {p}" for p in exc.problems) == str(exc)

    def test_invalid_graph_is_a_graph_error_and_value_error(self) -> None:
        """InvalidGraph can be caught as GraphError or as ValueError."""
        exc = invalid(gx.GraphBuilder("g").node("a", noop))
        assert isinstance(exc, gx.GraphError)
        assert isinstance(exc, ValueError)


# -- callables with the wrong shape --------------------------------------------------------


def sync_zero() -> None:
    """No arguments."""


async def async_zero() -> None:
    """No arguments."""


def sync_three(state: Any, ctx: Any, extra: Any) -> None:
    """Three required arguments."""


async def async_three(state: Any, ctx: Any, extra: Any) -> None:
    """Three required arguments."""


def sync_kwonly(state: Any, *, flavour: str) -> None:
    """A required keyword-only argument."""


async def async_kwonly(state: Any, *, flavour: str) -> None:
    """A required keyword-only argument."""


class TestCallableShape:
    """Node, branch, map and prompt callables are checked at build time."""

    @pytest.mark.parametrize(
        ("fn", "count"),
        [(sync_zero, 0), (async_zero, 0), (sync_three, 3), (async_three, 3)],
        ids=["sync-0", "async-0", "sync-3", "async-3"],
    )
    def test_wrong_arity(self, fn: Callable[..., Any], count: int) -> None:
        """A node taking 0 or 3 required arguments is refused, naming node and function."""
        builder = gx.GraphBuilder("g").node("a", fn).start("a").end("a")
        assert_problems(
            builder,
            [
                (
                    f"node 'a' ({describe(fn)}) takes {count} positional argument(s); "
                    "it must take (state) or (state, ctx)"
                )
            ],
        )

    @pytest.mark.parametrize("fn", [sync_kwonly, async_kwonly], ids=["sync", "async"])
    def test_required_keyword_only(self, fn: Callable[..., Any]) -> None:
        """A required keyword-only argument is refused: graphexec passes positionals only."""
        builder = gx.GraphBuilder("g").node("a", fn).start("a").end("a")
        assert_problems(
            builder,
            [
                (
                    f"node 'a' ({describe(fn)}) has a required keyword-only argument 'flavour'; "
                    "graphexec passes only positional arguments"
                )
            ],
        )

    def test_not_callable(self) -> None:
        """A node that is not callable is refused, naming its type."""
        builder = gx.GraphBuilder("g").node("a", 42).start("a").end("a")  # type: ignore[arg-type]  # on purpose: build() refuses it
        assert_problems(builder, ["node 'a' is not callable (got int)"])

    def test_bad_branch(self) -> None:
        """A parallel branch with the wrong shape names the branch and the node."""
        builder = (
            gx.GraphBuilder("g").parallel("p", {"ok": noop, "bad": sync_zero}).start("p").end("p")
        )
        assert_problems(
            builder,
            [
                (
                    f"branch 'bad' of node 'p' ({describe(sync_zero)}) takes 0 positional "
                    "argument(s); it must take (state) or (state, ctx)"
                )
            ],
        )

    def test_empty_parallel(self) -> None:
        """A parallel node needs at least one branch."""
        builder = gx.GraphBuilder("g").parallel("p", {}).start("p").end("p")
        assert_problems(builder, ["parallel node 'p' needs a non-empty mapping of branches"])

    def test_bad_map_function(self) -> None:
        """A map function with the wrong shape is described as taking an item."""
        builder = (
            gx.GraphBuilder("g").map("m", sync_three, over="docs", into="out").start("m").end("m")
        )
        assert_problems(
            builder,
            [
                (
                    f"map node 'm' ({describe(sync_three)}) takes 3 positional argument(s); "
                    "it must take (item) or (item, ctx)"
                )
            ],
        )

    def test_bad_prompt(self) -> None:
        """A barrier prompt takes exactly the state."""
        builder = (
            gx.GraphBuilder("g")
            .barrier("ok", prompt=sync_three)  # type: ignore[arg-type]  # on purpose: build() refuses it
            .start("ok")
            .end("ok")
        )
        assert_problems(
            builder,
            [
                (
                    f"prompt of barrier 'ok' ({describe(sync_three)}) takes 3 positional "
                    "argument(s); it must take (state)"
                )
            ],
        )

    @pytest.mark.parametrize(
        "fn",
        [
            lambda state: None,
            lambda state, ctx: None,
            lambda state, ctx=None, extra=1: None,
            lambda *args: None,
            lambda state, *rest, flavour="x": None,
        ],
        ids=["state", "state-ctx", "defaults", "varargs", "kw-default"],
    )
    def test_accepted_shapes(self, fn: Callable[..., Any]) -> None:
        """(state), (state, ctx), extra defaults and *args are all accepted."""
        graph = gx.GraphBuilder("g").node("a", fn).start("a").end("a").build()
        assert ["a"] == list(graph.nodes)


class TestValidationOptions:
    """Problems with the options of parallel, map and barrier nodes."""

    def test_bad_on_error(self) -> None:
        """on_error outside fail_fast/collect/continue is refused, naming the node."""
        builder = (
            gx.GraphBuilder("g")
            .parallel("p", {"x": noop}, on_error="ignore")  # type: ignore[arg-type]  # on purpose: build() refuses it
            .start("p")
            .end("p")
        )
        assert_problems(
            builder,
            ["node 'p': on_error must be one of fail_fast, collect, continue, got 'ignore'"],
        )

    def test_bad_on_error_for_map(self) -> None:
        """Map nodes check on_error too."""
        builder = (
            gx.GraphBuilder("g")
            .map("m", noop, over="docs", into="out", on_error="retry")  # type: ignore[arg-type]  # on purpose: build() refuses it
            .start("m")
            .end("m")
        )
        assert_problems(
            builder,
            ["node 'm': on_error must be one of fail_fast, collect, continue, got 'retry'"],
        )

    def test_bad_barrier_default(self) -> None:
        """A barrier default other than approve/reject/skip is refused."""
        builder = (
            gx.GraphBuilder("g")
            .barrier("ok", default="maybe")  # type: ignore[arg-type]  # on purpose: build() refuses it
            .start("ok")
            .end("ok")
        )
        assert_problems(
            builder, ["barrier 'ok': default must be one of approve, reject, skip, got 'maybe'"]
        )

    @pytest.mark.parametrize("timeout", [0, -5.0])
    def test_bad_barrier_timeout(self, timeout: float) -> None:
        """A barrier timeout must be positive (or None)."""
        builder = gx.GraphBuilder("g").barrier("ok", timeout=timeout).start("ok").end("ok")
        assert_problems(builder, ["barrier 'ok': timeout must be > 0 seconds or None"])

    @pytest.mark.parametrize("limit", [0, -1])
    def test_bad_max_concurrency(self, limit: int) -> None:
        """A map's max_concurrency must be at least 1."""
        builder = (
            gx.GraphBuilder("g")
            .map("m", noop, over="docs", into="out", max_concurrency=limit)
            .start("m")
            .end("m")
        )
        assert_problems(builder, ["map node 'm': max_concurrency must be >= 1"])

    def test_bad_map_keys(self) -> None:
        """A map's over= and into= must be state keys."""
        builder = gx.GraphBuilder("g").map("m", noop, over="", into="out").start("m").end("m")
        assert_problems(builder, ["map node 'm': over= must be a state key"])

    def test_bad_condition_and_reducer(self) -> None:
        """A non-callable when= or reducer is named."""
        builder = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("b", noop)
            .edge("a", "b", when="yes")  # type: ignore[arg-type]  # on purpose: not callable
            .reducer("log", "append")  # type: ignore[arg-type]  # on purpose: a name
            .start("a")
            .end("b")
        )
        assert_problems(
            builder,
            ["edge a -> b: when= must be callable", "reducer for key 'log' is not callable"],
        )


class Typed(msgspec.Struct):
    """A typed state for the validation tests."""

    docs: list[str] = []
    summaries: Annotated[list[str], gx.reducers.append] = []
    verdict: dict[str, Any] = {}
    count: int = 0


class TestValidationTypedState:
    """With state=SomeStruct, keys named by the graph must be fields."""

    def test_typed_graph_builds(self) -> None:
        """Reducers from Annotated fields and from .reducer() are both kept."""
        graph = (
            gx.GraphBuilder("g", state=Typed)
            .map("m", noop, over="docs", into="summaries")
            .barrier("ok", record="verdict")
            .edge("m", "ok")
            .reducer("count", gx.reducers.add)
            .start("m")
            .end("ok")
            .build()
        )
        assert Typed is graph.state_type
        assert {"summaries": gx.reducers.append, "count": gx.reducers.add} == dict(graph.reducers)

    def test_reducer_for_unknown_field(self) -> None:
        """A reducer for a key the Struct does not have is named."""
        builder = (
            gx.GraphBuilder("g", state=Typed)
            .node("a", noop)
            .reducer("nope", gx.reducers.add)
            .start("a")
            .end("a")
        )
        assert_problems(builder, ["reducer for key 'nope': Typed has no such field"])

    def test_map_over_and_into_not_fields(self) -> None:
        """A map's over= and into= must be fields of the Struct."""
        builder = (
            gx.GraphBuilder("g", state=Typed)
            .map("m", noop, over="papers", into="notes")
            .start("m")
            .end("m")
        )
        assert_problems(
            builder,
            [
                "map node 'm': over='papers' is not a field of Typed",
                "map node 'm': into='notes' is not a field of Typed",
            ],
        )

    def test_barrier_record_not_a_field(self) -> None:
        """A barrier records its decision into a field; by default the one named like it."""
        builder = (
            gx.GraphBuilder("g", state=Typed)
            .barrier("approve")
            .barrier("check", record="outcome")
            .edge("approve", "check")
            .start("approve")
            .end("check")
        )
        assert_problems(
            builder,
            [
                "barrier 'approve' records into 'approve', which is not a field of Typed",
                "barrier 'check' records into 'outcome', which is not a field of Typed",
            ],
        )

    @pytest.mark.parametrize("state", [dict, int, "Typed"])
    def test_state_not_a_struct(self, state: Any) -> None:
        """state= must be a msgspec.Struct subclass."""
        builder = gx.GraphBuilder("g", state=state).node("a", noop).start("a").end("a")
        assert_problems(builder, [f"state= must be a msgspec.Struct subclass, got {state!r}"])


class TestHash:
    """Graph.hash: a stable structural hash."""

    def test_identical_builds_hash_equal(self) -> None:
        """Building the same graph twice gives the same hash."""
        assert _hashed_graph.build().hash == _hashed_graph.build().hash

    def test_hash_is_hex_sha256(self) -> None:
        """The hash is a 64-character hex digest."""
        h = _hashed_graph.build().hash
        assert 64 == len(h)
        assert set(h) <= set("0123456789abcdef")

    def test_stable_across_processes(self) -> None:
        """Another interpreter (other hash seed) computes the same hash for the same graph."""
        code = (
            "import importlib, sys\n"
            f"sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]\n"
            f"print(importlib.import_module({_hashed_graph.__name__!r}).build().hash)\n"
        )
        hashes = set()
        for seed in ("0", "12345"):
            out = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
                env={**os.environ, "PYTHONHASHSEED": seed},
            )
            hashes.add(out.stdout.strip())
        assert {_hashed_graph.build().hash} == hashes

    @staticmethod
    def base(
        *,
        fn: Callable[..., Any] = noop,
        b_kind: str = "node",
        when: Callable[[Any], bool] = is_big,
        reducer: Callable[[Any, Any], Any] = gx.reducers.append,
        side_effects: bool = False,
        extra_edge: bool = False,
    ) -> gx.Graph:
        """A small graph with one knob per structural part."""
        builder = gx.GraphBuilder("h").node("a", fn, side_effects=side_effects)
        if b_kind == "node":
            builder.node("b", fn)
        else:
            builder.parallel("b", {"x": fn})
        builder.node("c", fn).edge("a", "b", when=when).edge("a", "c").edge("b", "c")
        if extra_edge:
            builder.fallback("a", "b")
        return builder.reducer("log", reducer).start("a").end("c").build()

    def test_function_body_does_not_change_hash(self) -> None:
        """Swapping a node's function (same structure) keeps the hash."""
        assert self.base().hash == self.base(fn=other_noop).hash

    @pytest.mark.parametrize(
        "change",
        [
            {"b_kind": "parallel"},
            {"when": is_small},
            {"reducer": gx.reducers.union},
            {"side_effects": True},
            {"extra_edge": True},
        ],
        ids=["node-kind", "condition", "reducer", "side-effects", "edge"],
    )
    def test_structural_change_changes_hash(self, change: dict[str, Any]) -> None:
        """A different kind, condition, reducer, side-effect flag or edge changes the hash."""
        assert self.base().hash != self.base(**change).hash

    def test_edge_target_changes_hash(self) -> None:
        """Re-pointing an edge changes the hash."""

        def build(target: str) -> gx.Graph:
            return (
                gx.GraphBuilder("h")
                .node("a", noop)
                .node("b", noop)
                .node("c", noop)
                .edge("a", target, when=is_big)
                .edge("a", "b")
                .edge("b", "c")
                .start("a")
                .end("c")
                .build()
            )

        assert build("b").hash != build("c").hash


class TestGraphObject:
    """The built Graph is frozen."""

    def test_setattr_raises(self) -> None:
        """Assigning an attribute of a Graph raises AttributeError."""
        graph = _hashed_graph.build()
        with pytest.raises(AttributeError, match="immutable"):
            graph.name = "other"
        with pytest.raises(AttributeError):
            graph.hash = "0" * 64
        with pytest.raises(AttributeError):
            graph.brand_new = 1
        assert "hashed" == graph.name

    def test_delattr_raises(self) -> None:
        """Deleting an attribute of a Graph raises AttributeError too."""
        graph = _hashed_graph.build()
        with pytest.raises(AttributeError):
            del graph.start
        assert "classify" == graph.start

    def test_collections_are_read_only(self) -> None:
        """nodes and reducers are read-only mappings, edges a tuple, node specs frozen."""
        graph = _hashed_graph.build()
        with pytest.raises(TypeError):
            graph.nodes["x"] = graph.nodes["classify"]  # type: ignore[index]  # the point of the test
        with pytest.raises(TypeError):
            graph.reducers["x"] = gx.reducers.add  # type: ignore[index]  # the point of the test
        assert isinstance(graph.edges, tuple)
        with pytest.raises(AttributeError):
            graph.nodes["refund"].side_effects = False  # type: ignore[misc]  # the point of the test

    def test_builder_changes_after_build_do_not_leak(self) -> None:
        """Declaring more on the builder after build() leaves the built graph as it was."""
        builder = gx.GraphBuilder("g").node("a", noop).start("a").end("a")
        graph = builder.build()
        builder.node("b", noop).reducer("log", gx.reducers.append)
        assert ["a"] == list(graph.nodes)
        assert {} == dict(graph.reducers)


class TestMermaid:
    """Graph.to_mermaid()."""

    def test_mermaid_lines(self) -> None:
        """Nodes by kind, conditional, normal and fallback edges, start and end markers."""
        graph = (
            gx.GraphBuilder("m")
            .node("classify", noop)
            .parallel("research", {"orders": noop, "policy": noop})
            .barrier("approve")
            .node("refund", noop)
            .node("decline", noop)
            .edge("classify", "research")
            .edge("research", "approve")
            .edge("approve", "refund", when=is_big)
            .edge("approve", "decline")
            .fallback("refund", "decline")
            .start("classify")
            .end("decline")
            .build()
        )
        expected = (
            "flowchart TD\n"
            "    __start__([start])\n"
            '    n_classify["classify"]\n'
            '    n_research[["research"]]\n'
            '    n_approve{{"approve"}}\n'
            '    n_refund["refund"]\n'
            '    n_decline["decline"]\n'
            "    __start__ --> n_classify\n"
            "    n_classify --> n_research\n"
            "    n_research --> n_approve\n"
            '    n_approve -- "is_big" --> n_refund\n'
            "    n_approve --> n_decline\n"
            "    n_refund -. fallback .-> n_decline\n"
            "    __end__([end])\n"
            "    n_decline --> __end__\n"
        )
        assert expected == graph.to_mermaid()

    def test_mermaid_map_and_odd_names(self) -> None:
        """Map nodes are marked, and names that are not identifiers get safe ids."""
        graph = (
            gx.GraphBuilder("m")
            .map("sum-up docs", noop, over="docs", into="out")
            .node('say "hi"', noop)
            .edge("sum-up docs", 'say "hi"')
            .start("sum-up docs")
            .end('say "hi"')
            .build()
        )
        lines = graph.to_mermaid().splitlines()
        assert '    n_sum_up_docs[["sum-up docs (map)"]]' in lines
        assert "    n_say__hi_[\"say 'hi'\"]" in lines
        assert "    n_sum_up_docs --> n_say__hi_" in lines


# -- sync/async and ctx detection ----------------------------------------------------------


def sync_state(state: Any) -> dict[str, Any]:
    """Sync, state only."""
    return {"sync_state": threading.get_ident()}


def sync_ctx(state: Any, ctx: gx.NodeContext) -> dict[str, Any]:
    """Sync, with ctx."""
    return {"sync_ctx": [type(ctx).__name__, ctx.node, threading.get_ident()]}


async def async_state(state: Any) -> dict[str, Any]:
    """Async, state only."""
    return {"async_state": threading.get_ident()}


async def async_ctx(state: Any, ctx: gx.NodeContext) -> dict[str, Any]:
    """Async, with ctx."""
    return {"async_ctx": [type(ctx).__name__, ctx.node, threading.get_ident()]}


class AsyncCallable:
    """An object with an async __call__(state)."""

    async def __call__(self, state: Any) -> dict[str, Any]:
        return {"async_object": threading.get_ident()}


class AsyncCallableCtx:
    """An object with an async __call__(state, ctx)."""

    async def __call__(self, state: Any, ctx: gx.NodeContext) -> dict[str, Any]:
        return {"async_object_ctx": [type(ctx).__name__, ctx.node, threading.get_ident()]}


class SyncCallable:
    """An object with a sync __call__(state)."""

    def __call__(self, state: Any) -> dict[str, Any]:
        return {"sync_object": threading.get_ident()}


def prefixed(prefix: str, state: Any) -> dict[str, Any]:
    """Sync; bound with functools.partial to take only the state."""
    return {prefix: threading.get_ident()}


async def async_prefixed(prefix: str, state: Any, ctx: gx.NodeContext) -> dict[str, Any]:
    """Async with ctx; bound with functools.partial."""
    return {prefix: [type(ctx).__name__, ctx.node, threading.get_ident()]}


class Methods:
    """Bound methods as nodes."""

    def plain(self, state: Any) -> dict[str, Any]:
        return {"method": threading.get_ident()}

    async def with_ctx(self, state: Any, ctx: gx.NodeContext) -> dict[str, Any]:
        return {"async_method_ctx": [type(ctx).__name__, ctx.node, threading.get_ident()]}


KINDS: list[tuple[str, Callable[..., Any], bool, bool]] = [
    ("sync_state", sync_state, False, False),
    ("sync_ctx", sync_ctx, False, True),
    ("async_state", async_state, True, False),
    ("async_ctx", async_ctx, True, True),
    ("async_object", AsyncCallable(), True, False),
    ("async_object_ctx", AsyncCallableCtx(), True, True),
    ("sync_object", SyncCallable(), False, False),
    ("partial", functools.partial(prefixed, "partial"), False, False),
    ("async_partial_ctx", functools.partial(async_prefixed, "async_partial_ctx"), True, True),
    ("method", Methods().plain, False, False),
    ("async_method_ctx", Methods().with_ctx, True, True),
]


class TestCallableKinds:
    """Sync vs async and (state) vs (state, ctx) are detected once, at build time."""

    @pytest.mark.parametrize(
        ("fn", "is_async", "takes_ctx"),
        [k[1:] for k in KINDS],
        ids=[k[0] for k in KINDS],
    )
    def test_detection(self, fn: Callable[..., Any], is_async: bool, takes_ctx: bool) -> None:
        """The built node records whether the callable is async and whether it takes ctx."""
        graph = gx.GraphBuilder("g").node("a", fn).start("a").end("a").build()
        call = graph.nodes["a"].call
        assert call is not None
        assert (is_async, takes_ctx) == (call.is_async, call.takes_ctx)

    async def test_each_kind_runs(self) -> None:
        """Async callables run on the event loop, sync ones in a worker thread, ctx is passed."""
        builder = gx.GraphBuilder("kinds")
        names = [k[0] for k in KINDS]
        for name, fn, _is_async, _takes_ctx in KINDS:
            builder.node(name, fn)
        for a, b in itertools.pairwise(names):
            builder.edge(a, b)
        graph = builder.start(names[0]).end(names[-1]).build()

        result = await gx.GraphExecutor().execute(graph)

        loop_thread = threading.get_ident()
        for name, _fn, is_async, takes_ctx in KINDS:
            value = result.state[name]
            if takes_ctx:
                assert ["NodeContext", name] == value[:2], name
                value = value[2]
            assert (value == loop_thread) is is_async, name

    async def test_inline_sync_runs_on_the_loop_thread(self) -> None:
        """A sync node declared inline=True runs in the event loop's thread."""
        graph = (
            gx.GraphBuilder("g")
            .node("sync_state", sync_state, inline=True)
            .start("sync_state")
            .end("sync_state")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph)
        assert threading.get_ident() == result.state["sync_state"]


def test_mermaid_labels_lambda_conditions_by_line() -> None:
    """A lambda condition is labelled ``lambda@<line>`` (no angle brackets for Mermaid)."""

    async def a(state: gx.typing.State) -> None:
        return None

    cond = lambda s: True
    graph = (
        gx.GraphBuilder("g")
        .node("a", a)
        .node("b", a)
        .edge("a", "b", when=cond)
        .edge("a", "b")
        .start("a")
        .end("b")
        .build()
    )
    line = cond.__code__.co_firstlineno
    assert f'    n_a -- "lambda@{line}" --> n_b' in graph.to_mermaid().splitlines()
