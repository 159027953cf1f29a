"""Parallel and map nodes: concurrency, merge order, conflicts, failure policies, events."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypedDict

import anyio
import pytest

import graphexec as gx
from graphexec._spec import OnError

State = Mapping[str, Any]
StreamEvents = Callable[..., Awaitable[tuple[list[gx.GraphEvent], gx.Run]]]


class Where(TypedDict):
    """The fields every event of one node's span carries."""

    trace_id: str
    step: int
    node: str
    span_id: str


def branches_sorted(events: list[gx.GraphEvent]) -> list[gx.GraphEvent]:
    """The events with those of concurrent branches (between ParallelStarted and
    ParallelCompleted) sorted by branch name, each branch's own events kept in order: the
    interleaving of branches is the scheduler's (trio shuffles it), not graphexec's."""
    starts = [i for i, e in enumerate(events) if isinstance(e, gx.ParallelStarted)]
    ends = [i for i, e in enumerate(events) if isinstance(e, gx.ParallelCompleted)]
    out = list(events)
    for a, b in zip(starts, ends, strict=True):
        out[a + 1 : b] = sorted(events[a + 1 : b], key=lambda e: getattr(e, "branch", "") or "")
    return out


def fan(
    branches: Mapping[str, Callable[..., Any]],
    *,
    on_error: OnError = "fail_fast",
    reducers: Mapping[str, Callable[[Any, Any], Any]] | None = None,
) -> gx.Graph:
    """A graph that is one parallel node "p"."""
    b = gx.GraphBuilder("fan").parallel("p", branches, on_error=on_error)
    for key, fn in (reducers or {}).items():
        b.reducer(key, fn)
    return b.start("p").end("p").build()


def mapper(fn: Callable[..., Any], *, max_concurrency: int | None = None) -> gx.Graph:
    """A graph that is one map node "m" over state["items"] into state["out"]."""
    return (
        gx.GraphBuilder("map")
        .map("m", fn, over="items", into="out", max_concurrency=max_concurrency)
        .start("m")
        .end("m")
        .build()
    )


class Sleeper:
    """An async branch that sleeps, then writes ``{key: value}``; records a cancellation."""

    def __init__(self, seconds: float, key: str, value: Any) -> None:
        self.seconds = seconds
        self.key = key
        self.value = value
        self.cancelled = False
        self.finished = False

    async def __call__(self, s: State) -> dict[str, Any]:
        try:
            await anyio.sleep(self.seconds)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished = True
        return {self.key: self.value}


class Failer:
    """An async branch that sleeps, then raises its ``error``."""

    def __init__(self, seconds: float, error: Exception) -> None:
        self.seconds = seconds
        self.error = error

    async def __call__(self, s: State) -> None:
        await anyio.sleep(self.seconds)
        raise self.error


class TestParallel:
    async def test_branches_run_concurrently(self) -> None:
        """Ten branches sleeping 50 ms each finish together, far sooner than one after another."""
        branches = {f"b{i}": Sleeper(0.05, f"k{i}", i) for i in range(10)}
        started = time.perf_counter()
        result = await gx.GraphExecutor().execute(fan(branches))
        assert time.perf_counter() - started < 0.4
        assert {f"k{i}": i for i in range(10)} == result.state
        assert 1 == result.steps

    async def test_merge_order_is_declaration_order(self) -> None:
        """An append-reduced key gets the branches' values in declaration order, not finish order."""
        branches = {
            "slow": Sleeper(0.03, "log", "slow"),
            "mid": Sleeper(0.015, "log", "mid"),
            "fast": Sleeper(0.0, "log", "fast"),
        }
        graph = fan(branches, reducers={"log": gx.reducers.append})
        result = await gx.GraphExecutor().execute(graph, {"log": ["start"]})
        assert {"log": ["start", "slow", "mid", "fast"]} == result.state

    async def test_branches_see_the_same_state(self) -> None:
        """Every branch sees the state from before the parallel node, not its siblings' writes."""
        seen: dict[str, dict[str, Any]] = {}

        async def one(s: State) -> dict[str, Any]:
            seen["one"] = dict(s)
            return {"one": 1}

        async def two(s: State) -> dict[str, Any]:
            await anyio.sleep(0.01)
            seen["two"] = dict(s)
            return {"two": 2}

        result = await gx.GraphExecutor().execute(fan({"one": one, "two": two}), {"x": 0})
        assert {"one": {"x": 0}, "two": {"x": 0}} == seen
        assert {"x": 0, "one": 1, "two": 2} == result.state

    async def test_events(self, stream_events: StreamEvents) -> None:
        """ParallelStarted, a BranchCompleted per branch, ParallelCompleted, then the deltas."""

        async def a(s: State) -> dict[str, Any]:
            return {"a": 1}

        async def b(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            ctx.emit("from b")
            return {"b": 2}

        graph = fan({"a": a, "b": b})
        events, _ = await stream_events(graph, trace_id="t")
        common: Where = {"trace_id": "t", "step": 1, "node": "p", "span_id": "p@1"}
        assert branches_sorted(
            [
                gx.GraphStart(trace_id="t", step=0, graph="fan", graph_hash=graph.hash, node="p"),
                gx.NodeStart(**common, kind="parallel"),
                gx.ParallelStarted(**common, branches=["a", "b"]),
                gx.BranchCompleted(**common, branch="a", ok=True, duration=0.0),
                gx.Custom(**common, data="from b", branch="b"),
                gx.BranchCompleted(**common, branch="b", ok=True, duration=0.0),
                gx.ParallelCompleted(**common, ok=True),
                gx.StateChanged(**common, key="a", delta=1),
                gx.StateChanged(**common, key="b", delta=2),
                gx.NodeEnd(**common, ok=True, duration=0.0),
                gx.GraphComplete(
                    trace_id="t", step=1, state={"a": 1, "b": 2}, steps=1, duration=0.0
                ),
            ]
        ) == branches_sorted(events)

    async def test_same_key_without_reducer_is_a_conflict(self) -> None:
        """Two branches writing one key that has no reducer is StateError naming key and branches."""
        branches = {
            "left": Sleeper(0.0, "answer", 1),
            "middle": Sleeper(0.0, "other", 2),
            "right": Sleeper(0.0, "answer", 3),
        }
        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(fan(branches), trace_id="t")
        exc = info.value
        assert ("answer", ["left", "right"], "p", "t") == (
            exc.key,
            exc.branches,
            exc.node,
            exc.trace_id,
        )
        for name in ("'answer'", "'left'", "'right'"):
            assert name in str(exc)

    async def test_same_key_with_reducer_is_merged(self) -> None:
        """Two branches writing one key with a reducer are combined through it."""
        branches = {"left": Sleeper(0.0, "total", 1), "right": Sleeper(0.0, "total", 3)}
        graph = fan(branches, reducers={"total": gx.reducers.add})
        assert {"total": 14} == (await gx.GraphExecutor().execute(graph, {"total": 10})).state

    async def test_sync_branches_run_in_worker_threads(self) -> None:
        """Sync branch functions run in worker threads, concurrently."""
        threads: dict[str, int] = {}
        # Each branch waits for the other two: this only returns if all three run at once.
        meet = threading.Barrier(3, timeout=5)

        def make(name: str) -> Callable[[State], dict[str, Any]]:
            def branch(s: State) -> dict[str, Any]:
                threads[name] = threading.get_ident()
                meet.wait()
                return {name: True}

            return branch

        result = await gx.GraphExecutor().execute(fan({n: make(n) for n in ("x", "y", "z")}))
        assert {"x": True, "y": True, "z": True} == result.state
        assert threading.get_ident() not in threads.values()
        assert 3 == len(set(threads.values()))

    @pytest.mark.parametrize(
        "directive", [gx.Goto("p"), gx.End(), gx.Fallback("no")], ids=["goto", "end", "fallback"]
    )
    async def test_branch_returning_a_directive(self, directive: Any) -> None:
        """A branch returning Goto, End or Fallback is StateError naming the branch."""

        async def bad(s: State) -> Any:
            return directive

        graph = fan({"ok": Sleeper(0.0, "k", 1), "bad": bad})
        with pytest.raises(gx.StateError, match="'bad'") as info:
            await gx.GraphExecutor().execute(graph)
        assert "p" == info.value.node

    async def test_branch_ctx(self) -> None:
        """A branch's ctx names the parallel node, its branch, and a per-branch idempotency key."""
        got: list[gx.NodeContext] = []

        async def one(s: State, ctx: gx.NodeContext) -> None:
            got.append(ctx)

        await gx.GraphExecutor().execute(fan({"one": one}), trace_id="t")
        ctx = got[0]
        assert ("t", 1, "p", "p@1", "one", "t:p:1:one") == (
            ctx.trace_id,
            ctx.step,
            ctx.node,
            ctx.span_id,
            ctx.branch,
            ctx.idempotency_key,
        )


class TestFailures:
    async def test_fail_fast_cancels_siblings(self, stream_events: StreamEvents) -> None:
        """fail_fast: the first failure cancels the siblings and raises NodeExecutionFailed."""
        boom = ValueError("boom")
        slow = Sleeper(5.0, "slow", True)
        graph = fan({"slow": slow, "bad": Failer(0.01, boom)}, on_error="fail_fast")
        started = time.perf_counter()
        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(graph, trace_id="t")
        assert time.perf_counter() - started < 1.0
        assert (True, False) == (slow.cancelled, slow.finished)
        exc = info.value
        assert (boom, {"bad": boom}, "p", "t", 1) == (
            exc.cause,
            exc.failures,
            exc.node,
            exc.trace_id,
            exc.step,
        )

    async def test_fail_fast_is_the_default(self) -> None:
        """Without on_error, a failing branch cancels its siblings."""
        slow = Sleeper(5.0, "slow", True)
        graph = fan({"slow": slow, "bad": Failer(0.0, RuntimeError("x"))})
        with anyio.fail_after(2), pytest.raises(gx.NodeExecutionFailed):
            await gx.GraphExecutor().execute(graph)
        assert slow.cancelled

    async def test_fail_fast_events(self, stream_events: StreamEvents) -> None:
        """fail_fast sends the failed branch's BranchCompleted, ParallelCompleted, GraphFailed."""
        graph = fan({"slow": Sleeper(5.0, "slow", True), "bad": Failer(0.0, ValueError("v"))})
        events, run = await stream_events(graph, trace_id="t")
        common: Where = {"trace_id": "t", "step": 1, "node": "p", "span_id": "p@1"}
        error = run.result.error
        assert error is not None
        assert [
            gx.GraphStart(trace_id="t", step=0, graph="fan", graph_hash=graph.hash, node="p"),
            gx.NodeStart(**common, kind="parallel"),
            gx.ParallelStarted(**common, branches=["slow", "bad"]),
            gx.BranchCompleted(
                **common, branch="bad", ok=False, duration=0.0, error="ValueError: v"
            ),
            gx.ParallelCompleted(**common, ok=False, failed=["bad"]),
            gx.NodeEnd(**common, ok=False, duration=0.0),
            gx.GraphFailed(
                trace_id="t",
                step=0,
                error=gx.ErrorInfo(type="NodeExecutionFailed", message=str(error), node="p"),
                state={},
            ),
        ] == events

    async def test_collect_waits_for_all_and_raises_every_failure(self) -> None:
        """collect: every branch runs to its end; one error carries all failures."""
        first, second = ValueError("first"), KeyError("second")
        slow = Sleeper(0.05, "slow", True)
        graph = fan(
            {"a": Failer(0.0, first), "slow": slow, "b": Failer(0.01, second)},
            on_error="collect",
        )
        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(graph)
        assert (True, False) == (slow.finished, slow.cancelled)
        exc = info.value
        assert {"a": first, "b": second} == exc.failures
        assert isinstance(exc.cause, ExceptionGroup)
        assert [first, second] == list(exc.cause.exceptions)
        assert "'a'" in str(exc) or "a:" in str(exc)

    async def test_continue_keeps_successes_and_observes_failures(
        self, stream_events: StreamEvents
    ) -> None:
        """continue: successful branches' deltas are kept; one ObservedError per failed branch."""

        async def ok(s: State) -> dict[str, Any]:
            return {"ok": 1}

        async def bad1(s: State) -> None:
            raise ValueError("one")

        async def bad2(s: State) -> None:
            raise KeyError("two")

        graph = fan({"bad1": bad1, "ok": ok, "bad2": bad2}, on_error="continue")
        events, run = await stream_events(graph, {"x": 0}, trace_id="t")
        common: Where = {"trace_id": "t", "step": 1, "node": "p", "span_id": "p@1"}
        assert branches_sorted(
            [
                gx.GraphStart(
                    trace_id="t",
                    step=0,
                    graph="fan",
                    graph_hash=graph.hash,
                    node="p",
                    input={"x": 0},
                ),
                gx.NodeStart(**common, kind="parallel"),
                gx.ParallelStarted(**common, branches=["bad1", "ok", "bad2"]),
                gx.BranchCompleted(
                    **common, branch="bad1", ok=False, duration=0.0, error="ValueError: one"
                ),
                gx.BranchCompleted(**common, branch="ok", ok=True, duration=0.0),
                gx.BranchCompleted(
                    **common, branch="bad2", ok=False, duration=0.0, error="KeyError: 'two'"
                ),
                gx.ParallelCompleted(**common, ok=False, failed=["bad1", "bad2"]),
                gx.ObservedError(
                    **common,
                    error=gx.ErrorInfo(type="ValueError", message="one", node="p"),
                    branch="bad1",
                ),
                gx.ObservedError(
                    **common,
                    error=gx.ErrorInfo(type="KeyError", message="'two'", node="p"),
                    branch="bad2",
                ),
                gx.StateChanged(**common, key="ok", delta=1),
                gx.NodeEnd(**common, ok=True, duration=0.0),
                gx.GraphComplete(
                    trace_id="t", step=1, state={"x": 0, "ok": 1}, steps=1, duration=0.0
                ),
            ]
        ) == branches_sorted(events)
        assert "completed" == run.result.status


class TestMap:
    async def test_results_in_item_order(self) -> None:
        """Map results are appended to `into` in item order, whatever order they finish in."""

        async def slow_first(item: int) -> int:
            await anyio.sleep(0.005 * (5 - item))
            return item * 10

        result = await gx.GraphExecutor().execute(
            mapper(slow_first), {"items": [0, 1, 2, 3, 4], "out": [-1]}
        )
        assert [-1, 0, 10, 20, 30, 40] == result.state["out"]

    async def test_max_concurrency(self) -> None:
        """No more than max_concurrency items run at once."""
        running = 0
        most = 0

        async def item_fn(item: int) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await anyio.sleep(0.01)
            running -= 1
            return item

        graph = mapper(item_fn, max_concurrency=3)
        result = await gx.GraphExecutor().execute(graph, {"items": list(range(10))})
        assert 3 == most
        assert list(range(10)) == result.state["out"]

    async def test_over_an_empty_list(self, stream_events: StreamEvents) -> None:
        """A map over an empty list runs nothing and leaves `into` an empty list."""
        calls: list[Any] = []

        async def item_fn(item: Any) -> Any:
            calls.append(item)  # pragma: no cover - never called

        events, run = await stream_events(mapper(item_fn), {"items": []}, trace_id="t")
        assert ([], {"items": [], "out": []}) == (calls, run.result.state)
        started = next(e for e in events if isinstance(e, gx.ParallelStarted))
        assert [] == started.branches

    async def test_over_a_missing_key(self) -> None:
        """A map over a key not in the state runs nothing."""

        async def item_fn(item: Any) -> Any:
            return item  # pragma: no cover - never called

        result = await gx.GraphExecutor().execute(mapper(item_fn), {})
        assert {"out": []} == result.state

    @pytest.mark.parametrize("items", [5, "abc", {"a": 1}], ids=["int", "str", "dict"])
    async def test_over_a_non_list(self, items: Any) -> None:
        """A map over something that is not a list is StateError naming the key."""

        async def item_fn(item: Any) -> Any:
            return item  # pragma: no cover - never called

        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(mapper(item_fn), {"items": items})
        assert ("items", "m") == (info.value.key, info.value.node)

    async def test_ctx_branch_names(self, stream_events: StreamEvents) -> None:
        """A map fn taking ctx sees branch names "<node>[i]"; events use the same names."""
        got: list[tuple[str | None, str, str]] = []

        async def item_fn(item: str, ctx: gx.NodeContext) -> str:
            got.append((ctx.branch, ctx.node, ctx.idempotency_key))
            return item.upper()

        events, run = await stream_events(mapper(item_fn), {"items": ["a", "b"]}, trace_id="t")
        assert [("m[0]", "m", "t:m:1:m[0]"), ("m[1]", "m", "t:m:1:m[1]")] == sorted(got)
        assert ["A", "B"] == run.result.state["out"]
        started = next(e for e in events if isinstance(e, gx.ParallelStarted))
        assert ["m[0]", "m[1]"] == started.branches
        done = sorted(e.branch for e in events if isinstance(e, gx.BranchCompleted))
        assert ["m[0]", "m[1]"] == done

    async def test_sync_map_fn_runs_in_threads(self) -> None:
        """A sync map fn runs in worker threads."""
        threads: list[int] = []

        def item_fn(item: int) -> int:
            threads.append(threading.get_ident())
            return item + 1

        result = await gx.GraphExecutor().execute(mapper(item_fn), {"items": [1, 2, 3]})
        assert [2, 3, 4] == result.state["out"]
        assert threading.get_ident() not in threads

    async def test_item_failure(self) -> None:
        """A failing item fails the map node (fail_fast) with the item's branch name."""
        boom = ValueError("boom")

        async def item_fn(item: int) -> int:
            if item == 2:
                raise boom
            return item

        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(mapper(item_fn), {"items": [1, 2, 3]})
        assert ({"m[1]": boom}, boom) == (info.value.failures, info.value.cause)
