"""GraphExecutor: results, how nodes are called, errors, and the lifecycle of a streamed run."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import msgspec
import pytest

import graphexec as gx

State = Mapping[str, Any]
StreamEvents = Callable[..., Awaitable[tuple[list[gx.GraphEvent], gx.Run]]]


async def noop(s: State) -> None:
    return None


def chain(*nodes: tuple[str, Callable[..., Any]], name: str = "g") -> gx.Graph:
    """A straight line of nodes, start to end."""
    b = gx.GraphBuilder(name)
    for node, fn in nodes:
        b.node(node, fn)
    for (src, _), (dst, _) in itertools.pairwise(nodes):
        b.edge(src, dst)
    return b.start(nodes[0][0]).end(nodes[-1][0]).build()


def barrier_then_a() -> gx.Graph:
    """A barrier "approve" followed by a plain node "a"."""
    return (
        gx.GraphBuilder("g")
        .barrier("approve")
        .node("a", noop)
        .edge("approve", "a")
        .start("approve")
        .end("a")
        .build()
    )


class SlowNode:
    """An async node that sleeps ``seconds`` and records whether it was cancelled."""

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = seconds
        self.cancelled = False
        self.finished = False

    async def __call__(self, s: State) -> dict[str, Any]:
        try:
            await anyio.sleep(self.seconds)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished = True
        return {"slow": "done"}


class TestResult:
    async def test_execute_returns_a_graph_result(self) -> None:
        """execute() returns trace id, final state, status, steps, duration and execution log."""

        async def a(s: State) -> dict[str, Any]:
            await anyio.sleep(0.001)
            return {"a": 1}

        async def b(s: State) -> dict[str, Any]:
            return {"b": s["a"] + 1}

        before, wall_before = time.perf_counter(), time.time()
        result = await gx.GraphExecutor().execute(chain(("a", a), ("b", b)), {"x": 0})
        after, wall_after = time.perf_counter(), time.time()
        assert isinstance(result, gx.GraphResult)
        assert 32 == len(result.trace_id)
        assert ({"x": 0, "a": 1, "b": 2}, "completed", 2) == (
            result.state,
            result.status,
            result.steps,
        )
        assert 0 < result.duration <= after - before
        assert result.error is None
        assert [(1, "a", True), (2, "b", True)] == [
            (e.step, e.node, e.success) for e in result.execution_log
        ]
        first, second = result.execution_log
        # wall-clock times (time.time()), one offset per run: within the call, in order
        slack = 0.05  # the offset is read once, from two clocks
        assert wall_before - slack <= first.start <= first.end <= second.start <= second.end
        assert second.end <= wall_after + slack
        assert msgspec.json.decode(msgspec.json.encode(first)) == {
            "step": 1,
            "node": "a",
            "start": first.start,
            "end": first.end,
            "success": True,
            "attempt": 1,
        }
        assert first.end - first.start >= 0.001

    async def test_custom_trace_id(self) -> None:
        """A trace_id given to execute() is the run's trace id."""
        result = await gx.GraphExecutor().execute(chain(("a", noop)), trace_id="conv-42")
        assert "conv-42" == result.trace_id

    async def test_each_run_gets_a_new_trace_id(self) -> None:
        """Without a trace_id every run gets a fresh one."""
        ex = gx.GraphExecutor()
        graph = chain(("a", noop))
        assert (await ex.execute(graph)).trace_id != (await ex.execute(graph)).trace_id

    async def test_caller_state_is_not_mutated(self) -> None:
        """The run works on its own copy of the initial state."""

        async def a(s: State) -> dict[str, Any]:
            return {"items": "x", "n": 1}

        graph = (
            gx.GraphBuilder("g")
            .node("a", a)
            .reducer("items", gx.reducers.append)
            .start("a")
            .end("a")
            .build()
        )
        initial: dict[str, Any] = {"items": ["w"]}
        result = await gx.GraphExecutor().execute(graph, initial)
        assert {"items": ["w"]} == initial
        assert {"items": ["w", "x"], "n": 1} == result.state

    async def test_execution_log_can_be_turned_off(self) -> None:
        """GraphExecutor(execution_log=False) keeps no log."""
        result = await gx.GraphExecutor(execution_log=False).execute(
            chain(("a", noop), ("b", noop))
        )
        assert ([], 2) == (result.execution_log, result.steps)

    async def test_execute_without_state(self) -> None:
        """execute(graph) starts from an empty state."""

        async def a(s: State) -> dict[str, Any]:
            return {"keys": sorted(s)}

        result = await gx.GraphExecutor().execute(chain(("a", a)))
        assert {"keys": []} == result.state


class TestNodeCalls:
    async def test_sync_nodes_run_in_a_worker_thread(self) -> None:
        """A sync node runs in a worker thread, not the event loop's thread."""
        seen: list[int] = []

        def a(s: State) -> None:
            seen.append(threading.get_ident())

        await gx.GraphExecutor().execute(chain(("a", a)))
        assert [threading.get_ident()] != seen
        assert 1 == len(seen)

    async def test_inline_sync_nodes_run_in_the_loop_thread(self) -> None:
        """A sync node declared inline=True runs in the event loop's thread."""
        seen: list[int] = []

        def a(s: State) -> None:
            seen.append(threading.get_ident())

        graph = gx.GraphBuilder("g").node("a", a, inline=True).start("a").end("a").build()
        await gx.GraphExecutor().execute(graph)
        assert [threading.get_ident()] == seen

    @pytest.mark.parametrize("inline", [False, True])
    async def test_node_with_and_without_ctx(self, inline: bool) -> None:
        """fn(state) gets only the state; fn(state, ctx) also gets a NodeContext."""
        got: list[Any] = []

        def one(s: State) -> dict[str, Any]:
            got.append(dict(s))
            return {"one": 1}

        def two(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            got.append(ctx)
            return {"two": 2}

        async def three(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            got.append(ctx)
            return {"three": 3}

        graph = (
            gx.GraphBuilder("g")
            .node("one", one, inline=inline)
            .node("two", two, inline=inline)
            .node("three", three)
            .edge("one", "two")
            .edge("two", "three")
            .start("one")
            .end("three")
            .build()
        )
        result = await gx.GraphExecutor().execute(graph, {"x": 0})
        assert {"x": 0, "one": 1, "two": 2, "three": 3} == result.state
        assert {"x": 0} == got[0]
        assert [gx.NodeContext, gx.NodeContext] == [type(c) for c in got[1:]]

    async def test_ctx_fields(self) -> None:
        """ctx carries trace id, step, node, span id and a stable idempotency key."""
        got: list[gx.NodeContext] = []

        async def a(s: State, ctx: gx.NodeContext) -> None:
            got.append(ctx)

        def b(s: State, ctx: gx.NodeContext) -> None:
            got.append(ctx)

        await gx.GraphExecutor().execute(chain(("a", a), ("b", b)), trace_id="tr")
        assert [
            ("tr", 1, "a", "a@1", "tr:a:1", None),
            ("tr", 2, "b", "b@2", "tr:b:2", None),
        ] == [(c.trace_id, c.step, c.node, c.span_id, c.idempotency_key, c.branch) for c in got]

    async def test_nodes_see_a_read_only_state(self) -> None:
        """A node cannot change the state by mutating what it receives."""

        async def a(s: State) -> None:
            s["x"] = 1  # type: ignore[index]  # the point of the test

        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(chain(("a", a)), {"x": 0})
        assert isinstance(info.value.cause, TypeError)


class TestErrors:
    async def test_node_that_raises(self) -> None:
        """A node's exception becomes NodeExecutionFailed with node, cause, trace id and step."""
        boom = ValueError("boom")

        async def bad(s: State) -> None:
            raise boom

        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(chain(("a", noop), ("bad", bad)), trace_id="t")
        exc = info.value
        assert ("bad", boom, "t", 2) == (exc.node, exc.cause, exc.trace_id, exc.step)
        assert exc.__cause__ is boom
        assert isinstance(exc, gx.GraphError)
        assert "boom" in str(exc)

    async def test_sync_node_that_raises(self) -> None:
        """A sync node's exception, raised in its worker thread, is the cause too."""
        boom = KeyError("k")

        def bad(s: State) -> None:
            raise boom

        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor().execute(chain(("bad", bad)))
        assert info.value.cause is boom

    async def test_execute_refuses_barriers_without_decisions(self) -> None:
        """execute() on a graph with barriers and no decisions= is InvalidGraph."""
        graph = (
            gx.GraphBuilder("g")
            .barrier("approve")
            .node("a", noop)
            .edge("approve", "a")
            .start("approve")
            .end("a")
            .build()
        )
        with pytest.raises(gx.InvalidGraph, match="execute_stream"):
            await gx.GraphExecutor().execute(graph)
        result = await gx.GraphExecutor().execute(graph, decisions={"approve": gx.Approve()})
        assert "approve" == result.state["approve"]["decision"]

    async def test_execute_with_a_decision_missing_for_a_later_occurrence(self) -> None:
        """execute() reaching a barrier occurrence nobody decided is InvalidGraph, not a hang."""

        async def count(s: State) -> dict[str, Any]:
            return {"n": s["n"] + 1}

        graph = (
            gx.GraphBuilder("g")
            .node("count", count)
            .barrier("approve")
            .node("done", noop)
            .edge("count", "approve")
            .edge("approve", "count", when=lambda s: s["n"] < 2)
            .edge("approve", "done")
            .start("count")
            .end("done")
            .build()
        )
        with anyio.fail_after(5):
            with pytest.raises(gx.InvalidGraph, match="approve#2") as info:
                await gx.GraphExecutor().execute(
                    graph, {"n": 0}, decisions={"approve#1": gx.Approve()}
                )
        assert "approve" == info.value.node

    async def test_decisions_for_an_unknown_node(self) -> None:
        """decisions= naming a node that does not exist is NodeNotFound."""
        graph = barrier_then_a()
        with pytest.raises(gx.NodeNotFound, match="nope"):
            await gx.GraphExecutor().execute(graph, decisions={"nope#1": gx.Approve()})

    async def test_decisions_for_a_node_that_is_not_a_barrier(self) -> None:
        """decisions= naming a plain node is InvalidDecision."""
        graph = barrier_then_a()
        with pytest.raises(gx.InvalidDecision, match="'a'"):
            await gx.GraphExecutor().execute(graph, decisions={"a": gx.Approve()})

    @pytest.mark.parametrize("returned", [42, ["k", "v"], "text", ("k", "v")])
    async def test_node_returning_a_non_mapping(self, returned: Any) -> None:
        """A node returning anything but None, a mapping or a directive is StateError."""

        async def bad(s: State) -> Any:
            return returned

        with pytest.raises(gx.StateError) as info:
            await gx.GraphExecutor().execute(chain(("bad", bad)), trace_id="t")
        assert ("bad", "t", 1) == (info.value.node, info.value.trace_id, info.value.step)
        assert type(returned).__name__ in str(info.value)

    async def test_node_returning_a_non_str_key(self) -> None:
        """A node writing a key that is not a str is StateError."""

        async def bad(s: State) -> Any:
            return {1: "one"}

        with pytest.raises(gx.StateError, match="non-str key") as info:
            await gx.GraphExecutor().execute(chain(("bad", bad)))
        assert "bad" == info.value.node

    @pytest.mark.parametrize("state", [[("k", 1)], "text", {1: "one"}])
    async def test_bad_initial_state(self, state: Any) -> None:
        """An initial state that is not a mapping of str keys is StateError before anything runs."""
        ran: list[int] = []

        async def a(s: State) -> None:
            ran.append(1)

        with pytest.raises(gx.StateError):
            await gx.GraphExecutor().execute(chain(("a", a)), state)
        with pytest.raises(gx.StateError):
            async with gx.GraphExecutor().execute_stream(chain(("a", a)), state):
                pass  # pragma: no cover - entering raises
        assert [] == ran

    async def test_execute_needs_a_built_graph(self) -> None:
        """Passing a GraphBuilder (not built) to execute() is InvalidGraph."""
        builder = gx.GraphBuilder("g").node("a", noop).start("a").end("a")
        with pytest.raises(gx.InvalidGraph, match="GraphBuilder"):
            await gx.GraphExecutor().execute(builder)  # type: ignore[arg-type]  # on purpose

    def test_executor_arguments_are_checked(self) -> None:
        """GraphExecutor rejects max_steps < 1, event_buffer < 1 and an unknown on_graph_change."""
        with pytest.raises(ValueError, match="max_steps"):
            gx.GraphExecutor(max_steps=0)
        with pytest.raises(ValueError, match="event_buffer"):
            gx.GraphExecutor(event_buffer=0)
        with pytest.raises(ValueError, match="on_graph_change"):
            gx.GraphExecutor(on_graph_change="ignore")  # type: ignore[arg-type]  # on purpose

    async def test_resume_needs_a_store(self) -> None:
        """resume_from() on an executor without a store is StoreRequired naming the call."""
        with pytest.raises(gx.StoreRequired, match=r"resume_from\(\) needs a checkpoint store"):
            async with gx.GraphExecutor().resume_from(chain(("a", noop)), "t"):
                pass  # pragma: no cover - entering raises

    async def test_reading_calls_need_a_store(self) -> None:
        """get_state, history, runs and fork without a store are StoreRequired, not InvalidGraph."""
        ex = gx.GraphExecutor()
        for call in (ex.get_state("t"), ex.history("t"), ex.runs()):
            with pytest.raises(gx.StoreRequired) as info:
                await call
            assert not isinstance(info.value, gx.InvalidGraph)
            assert isinstance(info.value, gx.UsageError)

    async def test_resume_unknown_trace(self) -> None:
        """resume_from() of a trace the store does not have is RunNotFound on entry."""
        ex = gx.GraphExecutor(store=gx.MemoryStore())
        with pytest.raises(gx.RunNotFound) as info:
            async with ex.resume_from(chain(("a", noop)), "missing"):
                pass  # pragma: no cover - entering raises
        assert "missing" == info.value.trace_id

    async def test_resume_finished_run(self) -> None:
        """resume_from() of a completed run is RunFinished on entry."""
        ex = gx.GraphExecutor(store=gx.MemoryStore())
        graph = chain(("a", noop))
        await ex.execute(graph, trace_id="t")
        with pytest.raises(gx.RunFinished):
            async with ex.resume_from(graph, "t"):
                pass  # pragma: no cover - entering raises

    async def test_resume_while_another_driver_holds_the_run(self) -> None:
        """resume_from() of a run another driver is running is RunLocked on entry (a run
        waiting at a barrier holds no lease: tests/checkpoint/test_leases.py)."""
        ex = gx.GraphExecutor(store=gx.MemoryStore())
        go = anyio.Event()

        async def slow(s: State) -> None:
            await go.wait()

        graph = chain(("slow", slow), ("a", noop))
        async with ex.execute_stream(graph, trace_id="t") as run:
            async for event in run:
                if isinstance(event, gx.NodeStart) and event.node == "slow":
                    with pytest.raises(gx.RunLocked, match="is driven by pid"):
                        async with ex.resume_from(graph, "t"):
                            pass  # pragma: no cover - entering raises
                    go.set()
        assert "completed" == run.result.status

    async def test_resume_on_a_graph_without_the_waiting_barrier(self) -> None:
        """resume_from() with a graph that lost the barrier the run waits at is GraphChanged."""
        ex = gx.GraphExecutor(store=gx.MemoryStore())
        waiting = (
            gx.GraphBuilder("g")
            .barrier("approve")
            .node("a", noop)
            .edge("approve", "a")
            .start("approve")
            .end("a")
            .build()
        )
        async with ex.execute_stream(waiting, trace_id="t") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        assert "waiting" == run.result.status
        with pytest.raises(gx.GraphChanged, match="approve"):
            async with ex.resume_from(chain(("a", noop)), "t"):
                pass  # pragma: no cover - entering raises

    async def test_handle_misuse_raises_at_the_call(self) -> None:
        """Deciding a node that is not a barrier, or an unknown node, raises at the call."""
        async with gx.GraphExecutor().execute_stream(chain(("a", SlowNode(0.01)))) as run:
            with pytest.raises(gx.InvalidDecision):
                await run.handle.approve("a#1")
            with pytest.raises(gx.NodeNotFound):
                await run.handle.approve("nope#1")
            async for _ in run:
                pass
        with pytest.raises(gx.RunFinished):
            await run.handle.approve("a#1")

    async def test_every_error_is_a_graph_error(self) -> None:
        """Every exception class in gx.exceptions (but the warning and the retry signals nodes
        raise) derives from GraphError."""
        signals = ("GraphChangedWarning", "NonRetryable", "RetryAfter")
        names = [n for n in gx.exceptions.__all__ if n not in signals]
        assert all(issubclass(getattr(gx, n), gx.GraphError) for n in names)
        assert issubclass(gx.GraphChangedWarning, UserWarning)


class TestStream:
    async def test_failed_run_ends_with_graph_failed(self, stream_events: StreamEvents) -> None:
        """A node failing mid-stream ends with GraphFailed carrying the state at that point."""
        boom = RuntimeError("boom")

        async def a(s: State) -> dict[str, Any]:
            return {"a": 1}

        async def bad(s: State) -> None:
            raise boom

        graph = chain(("a", a), ("bad", bad))
        events, run = await stream_events(graph, {}, trace_id="t")
        error = run.result.error
        assert isinstance(error, gx.NodeExecutionFailed)
        assert error.cause is boom
        assert [
            gx.GraphStart(
                trace_id="t", step=0, graph="g", graph_hash=graph.hash, node="a", input={}
            ),
            gx.NodeStart(trace_id="t", step=1, node="a", span_id="a@1", kind="node"),
            gx.StateChanged(trace_id="t", step=1, node="a", span_id="a@1", key="a", delta=1),
            gx.NodeEnd(
                trace_id="t",
                step=1,
                node="a",
                span_id="a@1",
                ok=True,
                duration=0.0,
                next_node="bad",
            ),
            gx.NodeStart(trace_id="t", step=2, node="bad", span_id="bad@2", kind="node"),
            gx.NodeEnd(trace_id="t", step=2, node="bad", span_id="bad@2", ok=False, duration=0.0),
            gx.GraphFailed(
                trace_id="t",
                step=1,
                error=gx.ErrorInfo(type="NodeExecutionFailed", message=str(error), node="bad"),
                state={"a": 1},
            ),
        ] == events
        result = run.result
        assert ("failed", {"a": 1}, 1) == (result.status, result.state, result.steps)
        assert [(1, "a", True), (2, "bad", False)] == [
            (e.step, e.node, e.success) for e in result.execution_log
        ]

    async def test_handle_cancel(self, stream_events: StreamEvents) -> None:
        """handle.cancel() ends the run: GraphFailed(status="cancelled"), error Cancelled."""
        slow = SlowNode()
        graph = chain(("slow", slow))
        events: list[gx.GraphEvent] = []
        with anyio.fail_after(2):
            async with gx.GraphExecutor().execute_stream(graph, {}, trace_id="t") as run:
                async for event in run:
                    events.append(event)
                    if isinstance(event, gx.NodeStart):
                        await run.handle.cancel()
        assert slow.cancelled
        result = run.result
        assert ("cancelled", {}, 0) == (result.status, result.state, result.steps)
        assert isinstance(result.error, gx.Cancelled)
        assert "t" == result.error.trace_id
        assert [
            # Without a store the ids are 1, 2, 3... (segment 0).
            gx.GraphStart(
                trace_id="t",
                step=0,
                event_id=1,
                graph="g",
                graph_hash=graph.hash,
                node="slow",
                input={},
            ),
            gx.NodeStart(
                trace_id="t", step=1, event_id=2, node="slow", span_id="slow@1", kind="node"
            ),
            gx.GraphFailed(
                trace_id="t",
                step=0,
                event_id=3,
                error=gx.ErrorInfo(type="Cancelled", message=str(result.error)),
                state={},
                status="cancelled",
            ),
        ] == events

    async def test_leaving_early_cancels_the_run(self) -> None:
        """Breaking out of the stream cancels the run promptly; its slow node is cancelled."""
        slow = SlowNode()
        started = time.perf_counter()
        async with gx.GraphExecutor().execute_stream(chain(("slow", slow))) as run:
            async for event in run:
                if isinstance(event, gx.NodeStart):
                    break
        assert time.perf_counter() - started < 1.0
        assert (True, False) == (slow.cancelled, slow.finished)
        assert "cancelled" == run.result.status
        assert isinstance(run.result.error, gx.Cancelled)

    async def test_leaving_without_reading_cancels_the_run(self) -> None:
        """Leaving the block without reading any event cancels the run."""
        slow = SlowNode()
        with anyio.fail_after(2):
            async with gx.GraphExecutor().execute_stream(chain(("a", noop), ("slow", slow))) as run:
                pass
        assert "cancelled" == run.result.status

    async def test_leaving_during_a_thread_node_keeps_the_checkpoint_consistent(self) -> None:
        """Leaving while a sync node runs in its thread: the store agrees with run.result."""

        def tokens(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            for i in range(20):
                ctx.emit(i)
                time.sleep(0.002)
            return {"n": 20}

        graph = chain(("a", noop), ("tokens", tokens))
        ex = gx.GraphExecutor(store=gx.MemoryStore())
        with anyio.fail_after(5):
            async with ex.execute_stream(graph, {}, trace_id="t") as run:
                async for event in run:
                    if isinstance(event, gx.Custom):
                        break
        saved = await ex.get_state("t")
        result = run.result
        # The thread is abandoned, not waited for: its update is discarded, in the result and
        # in the store alike.
        assert {} == result.state
        assert (result.state, result.status, result.steps) == (
            saved.state,
            saved.status,
            saved.step,
        )

    @pytest.mark.parametrize("how", ["handle", "leave", "scope"])
    async def test_no_node_starts_after_a_cancel_during_a_thread_node(self, how: str) -> None:
        """Cancelling (handle.cancel(), leaving the stream, an outer cancel scope) while a sync
        node runs in its worker thread gives control back at once (the thread is still
        blocked), no node starts after it, and the thread's result is discarded."""
        release = threading.Event()
        done = threading.Event()
        started: list[str] = []

        running = threading.Event()

        def blocked(s: State) -> dict[str, Any]:
            started.append("blocked")
            running.set()
            release.wait(10)
            done.set()
            return {"blocked": "returned"}

        def after(s: State) -> dict[str, Any]:
            started.append("after")
            return {"after": True}

        graph = chain(("blocked", blocked), ("after", after))
        ex = gx.GraphExecutor(store=gx.MemoryStore())
        with anyio.fail_after(5):  # a cancel that waited for the thread would hang here
            with anyio.CancelScope() as outer:
                async with ex.execute_stream(graph, {}, trace_id="t") as run:
                    async for event in run:
                        if isinstance(event, gx.NodeStart):
                            assert await anyio.to_thread.run_sync(running.wait, 5)
                            if how == "handle":
                                await run.handle.cancel()
                            elif how == "leave":
                                break
                            else:
                                outer.cancel()
        assert not done.is_set()  # control came back while the thread was still blocked
        release.set()
        await anyio.to_thread.run_sync(done.wait, 5)
        await anyio.sleep(0.05)  # give a wrongly started next node the chance to show
        assert ["blocked"] == started
        assert "cancelled" == run.result.status
        assert {} == run.result.state
        saved = await ex.get_state("t")
        assert ({}, "blocked", 0) == (saved.state, saved.next_node, saved.step)

    async def test_consumer_exception_propagates_and_cancels(self) -> None:
        """An exception in the consumer's body leaves the block as itself; the run is cancelled."""
        slow = SlowNode()
        with anyio.fail_after(2), pytest.raises(KeyError, match="consumer"):
            async with gx.GraphExecutor().execute_stream(chain(("slow", slow))) as run:
                async for event in run:
                    if isinstance(event, gx.NodeStart):
                        raise KeyError("consumer")
        assert slow.cancelled
        assert "cancelled" == run.result.status

    async def test_result_before_the_end_raises(self) -> None:
        """run.result while the run is still going is a RuntimeError."""
        async with gx.GraphExecutor().execute_stream(chain(("slow", SlowNode(0.01)))) as run:
            with pytest.raises(RuntimeError, match="still going"):
                run.result  # noqa: B018 - the property raises
            events = [event async for event in run]
        assert isinstance(events[-1], gx.GraphComplete)
        assert "completed" == run.result.status
        assert {"slow": "done"} == run.result.state

    async def test_stream_result_matches_execute(self, stream_events: StreamEvents) -> None:
        """A streamed run's result and GraphComplete event carry the same data as execute()."""

        async def a(s: State) -> dict[str, Any]:
            return {"a": 1}

        graph = chain(("a", a))
        events, run = await stream_events(graph, {}, trace_id="t")
        done = events[-1]
        assert isinstance(done, gx.GraphComplete)
        assert (run.result.state, run.result.steps) == (done.state, done.steps)
        assert "t" == run.trace_id == run.handle.trace_id
        assert "completed" == run.handle.status


def test_runs_on_trio() -> None:
    """The same run works on the trio backend."""
    pytest.importorskip("trio")
    seen: list[int] = []

    async def a(s: State) -> dict[str, Any]:
        await anyio.sleep(0.001)
        return {"a": 1}

    def b(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
        seen.append(threading.get_ident())
        ctx.emit("tok")
        return {"b": 2}

    graph = chain(("a", a), ("b", b))

    async def main() -> tuple[gx.GraphResult, list[gx.GraphEvent], gx.GraphResult]:
        ex = gx.GraphExecutor()
        result = await ex.execute(graph)
        async with ex.execute_stream(graph) as run:
            events = [event async for event in run]
        return result, events, run.result

    result, events, streamed = anyio.run(main, backend="trio")
    assert {"a": 1, "b": 2} == result.state == streamed.state
    assert "tok" in [e.data for e in events if isinstance(e, gx.Custom)]
    assert threading.get_ident() not in seen


def test_checkpoints_and_barriers_on_trio() -> None:
    """On trio, a run checkpoints to a MemoryStore, waits at a barrier, and resumes from it."""
    pytest.importorskip("trio")

    async def a(s: State) -> dict[str, Any]:
        return {"a": 1}

    graph = (
        gx.GraphBuilder("trio")
        .node("a", a)
        .barrier("ok")
        .node("b", a)
        .edge("a", "ok")
        .edge("ok", "b")
        .start("a")
        .end("b")
        .build()
    )

    async def main() -> tuple[str, gx.GraphResult]:
        ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
        async with ex.execute_stream(graph, trace_id="t") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        left = run.result.status
        async with ex.resume_from(graph, "t") as again:
            async for event in again:
                if isinstance(event, gx.BarrierWaiting):
                    await again.handle.approve(event.barrier_id)
        return left, again.result

    left, result = anyio.run(main, backend="trio")
    assert "waiting" == left
    assert "completed" == result.status
    assert "approve" == result.state["ok"]["decision"]
