"""The event stream: the exact sequence, the wire form, ids, ctx.emit and backpressure."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

import graphexec as gx

State = Mapping[str, Any]
StreamEvents = Callable[..., Awaitable[tuple[list[gx.GraphEvent], gx.Run]]]
Normalise = Callable[[list[gx.GraphEvent]], list[gx.GraphEvent]]


async def noop(s: State) -> None:
    return None


async def every_kind_of_event() -> list[gx.GraphEvent]:
    """One run touching every event type but GraphFailed, plus a failed run's events."""

    async def classify(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
        await ctx.emit({"token": "hel", "n": 1})
        return {"kind": "refund", "messages": ["hi"]}

    async def orders(s: State) -> dict[str, Any]:
        return {"orders": [1, 2]}

    async def policy(s: State) -> dict[str, Any]:
        raise ValueError("policy service down")

    async def risky(s: State) -> gx.Fallback:
        return gx.Fallback("flaky")

    graph = (
        gx.GraphBuilder("all")
        .node("classify", classify)
        .parallel("research", {"orders": orders, "policy": policy}, on_error="continue")
        .node("risky", risky)
        .barrier("approve", prompt=lambda s: {"question": "refund?", "kind": s["kind"]})
        .node("done", noop)
        .node("safe", noop)
        .edge("classify", "research")
        .edge("research", "risky")
        .edge("risky", "approve")
        .fallback("risky", "safe")
        .edge("safe", "approve")
        .edge("approve", "done")
        .reducer("messages", gx.reducers.append)
        .start("classify")
        .end("done")
        .build()
    )
    ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
    events: list[gx.GraphEvent] = []
    async with ex.execute_stream(graph, {"ticket": "t-1"}) as run:
        async for event in run:
            events.append(event)
            if isinstance(event, gx.BarrierWaiting):
                await run.handle.reject(event.barrier_id, "too much")

    async def bad(s: State) -> None:
        raise RuntimeError("bad")

    failing = (
        gx.GraphBuilder("f")
        .node(
            "bad",
            bad,
            retry=gx.Retry(attempts=2, backoff=0.0, jitter=False),  # NodeRetry
            breaker=gx.CircuitBreaker(failures=1, cooldown=60.0),  # CircuitChanged
        )
        .start("bad")
        .end("bad")
        .build()
    )
    async with gx.GraphExecutor().execute_stream(failing) as run:
        events.extend([event async for event in run])

    # NodeInvalidated: a resume (invalidate_on_resume) after a node's fingerprint changed.
    def versioned(v: str) -> gx.Graph:
        b = gx.GraphBuilder("inv").node("a", noop, fingerprint=v).barrier("ok").edge("a", "ok")
        return b.start("a").end("ok").build()

    store = gx.MemoryStore()
    async with gx.GraphExecutor(store=store).execute_stream(versioned("v1"), trace_id="i") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                break
    await store.submit_decision("i", "ok#1", gx.Approve())
    async with gx.GraphExecutor(store=store, invalidate_on_resume=True).resume_from(
        versioned("v2"), "i"
    ) as run:
        events.extend([e async for e in run if isinstance(e, gx.NodeInvalidated)])

    started = anyio.Event()

    async def slow(s: State) -> None:
        started.set()
        await anyio.sleep_forever()

    sleeper = gx.GraphBuilder("slow").node("slow", slow).start("slow").end("slow").build()
    mstore = gx.MemoryStore()
    async with gx.GraphExecutor(store=mstore) as manager:  # left while the run works
        trace_id = await manager.start(sleeper)
        await started.wait()
    events.extend([e async for e in gx.GraphExecutor(store=mstore).events(trace_id)])
    return events


class TestSequence:
    async def test_complete_sequence_of_a_small_graph(self, stream_events: StreamEvents) -> None:
        """A two-node run sends exactly these events, in this order."""

        async def draft(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            ctx.emit("Hel")
            ctx.emit("lo")
            return {"text": "Hello", "messages": "drafted"}

        def review(s: State) -> dict[str, Any]:
            return {"messages": ["reviewed", "ok"]}

        graph = (
            gx.GraphBuilder("small")
            .node("draft", draft)
            .node("review", review)
            .edge("draft", "review")
            .reducer("messages", gx.reducers.append)
            .start("draft")
            .end("review")
            .build()
        )
        events, run = await stream_events(graph, {"messages": []}, trace_id="t")
        final = {"messages": ["drafted", "reviewed", "ok"], "text": "Hello"}
        assert [
            gx.GraphStart(
                trace_id="t",
                step=0,
                graph="small",
                graph_hash=graph.hash,
                node="draft",
                input={"messages": []},
            ),
            gx.NodeStart(trace_id="t", step=1, node="draft", span_id="draft@1", kind="node"),
            gx.Custom(trace_id="t", step=1, node="draft", span_id="draft@1", data="Hel"),
            gx.Custom(trace_id="t", step=1, node="draft", span_id="draft@1", data="lo"),
            gx.StateChanged(
                trace_id="t", step=1, node="draft", span_id="draft@1", key="text", delta="Hello"
            ),
            gx.StateChanged(
                trace_id="t",
                step=1,
                node="draft",
                span_id="draft@1",
                key="messages",
                reducer="append",
                delta="drafted",
            ),
            gx.NodeEnd(
                trace_id="t",
                step=1,
                node="draft",
                span_id="draft@1",
                ok=True,
                duration=0.0,
                next_node="review",
            ),
            gx.NodeStart(trace_id="t", step=2, node="review", span_id="review@2", kind="node"),
            gx.StateChanged(
                trace_id="t",
                step=2,
                node="review",
                span_id="review@2",
                key="messages",
                reducer="append",
                delta=["reviewed", "ok"],
            ),
            gx.NodeEnd(
                trace_id="t", step=2, node="review", span_id="review@2", ok=True, duration=0.0
            ),
            gx.GraphComplete(trace_id="t", step=2, state=final, steps=2, duration=0.0),
        ] == events
        assert final == run.result.state

    async def test_node_returning_none_changes_nothing(self, stream_events: StreamEvents) -> None:
        """A node returning None sends no StateChanged."""
        graph = gx.GraphBuilder("g").node("a", noop).start("a").end("a").build()
        events, _ = await stream_events(graph, {"x": 1}, trace_id="t")
        assert [
            gx.GraphStart(
                trace_id="t", step=0, graph="g", graph_hash=graph.hash, node="a", input={"x": 1}
            ),
            gx.NodeStart(trace_id="t", step=1, node="a", span_id="a@1", kind="node"),
            gx.NodeEnd(trace_id="t", step=1, node="a", span_id="a@1", ok=True, duration=0.0),
            gx.GraphComplete(trace_id="t", step=1, state={"x": 1}, steps=1, duration=0.0),
        ] == events


class TestWireForm:
    async def test_every_event_round_trips_through_json(self) -> None:
        """Every event encodes to JSON as it is and decodes back to an equal GraphEvent."""
        events = await every_kind_of_event()
        kinds = {type(e) for e in events}
        assert set(gx.GraphEvent.__args__) == kinds
        for event in events:
            data = msgspec.json.encode(event)
            assert event == msgspec.json.decode(data, type=gx.GraphEvent)

    async def test_wire_form_is_tagged(self) -> None:
        """The JSON form names the event type in a "type" field."""
        events = await every_kind_of_event()
        for event in events:
            wire = msgspec.json.decode(msgspec.json.encode(event))
            assert type(event).__name__ == wire["type"]

    async def test_every_event_has_trace_id_and_step_and_node_events_a_span(self) -> None:
        """Every event carries trace_id and step; node events carry span_id "<node>@<step>"."""
        events = await every_kind_of_event()
        traces = [e.trace_id for e in events]
        assert 4 == len(set(traces))
        assert all(isinstance(e.step, int) and e.step >= 0 for e in events)
        with_span = [e for e in events if hasattr(e, "span_id")]
        assert {
            gx.NodeStart,
            gx.NodeEnd,
            gx.StateChanged,
            gx.ParallelStarted,
            gx.BranchCompleted,
            gx.ParallelCompleted,
            gx.Custom,
            gx.ObservedError,
            gx.NodeInvalidated,
            gx.NodeRetry,
        } == {type(e) for e in with_span}
        for event in with_span:
            assert hasattr(event, "node")  # every event with a span has a node (narrows the union)
            assert f"{event.node}@{event.step}" == event.span_id


class TestEmit:
    @pytest.mark.parametrize("kind", ["async", "thread", "inline"])
    async def test_emit_sends_custom_events_in_order(
        self, kind: str, stream_events: StreamEvents
    ) -> None:
        """ctx.emit sends Custom events in order between the node's NodeStart and NodeEnd."""
        threads: list[int] = []

        async def async_node(s: State, ctx: gx.NodeContext) -> None:
            for i in range(5):
                ctx.emit(i)
                await anyio.lowlevel.checkpoint()

        def sync_node(s: State, ctx: gx.NodeContext) -> None:
            threads.append(threading.get_ident())
            for i in range(5):
                ctx.emit(i)

        fn = async_node if kind == "async" else sync_node
        graph = (
            gx.GraphBuilder("g")
            .node("a", noop)
            .node("tok", fn, inline=kind == "inline")
            .edge("a", "tok")
            .start("a")
            .end("tok")
            .build()
        )
        events, _ = await stream_events(graph, trace_id="t")
        assert [
            gx.NodeStart(trace_id="t", step=2, node="tok", span_id="tok@2", kind="node"),
            *[
                gx.Custom(trace_id="t", step=2, node="tok", span_id="tok@2", data=i)
                for i in range(5)
            ],
            gx.NodeEnd(trace_id="t", step=2, node="tok", span_id="tok@2", ok=True, duration=0.0),
        ] == events[3:-1]
        if kind == "thread":
            assert threading.get_ident() not in threads
        elif kind == "inline":
            assert [threading.get_ident()] == threads

    async def test_emit_without_a_consumer_is_dropped(self) -> None:
        """ctx.emit under execute() (no stream) is accepted and goes nowhere."""

        async def a(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            await ctx.emit("x")
            ctx.emit("y")
            return {"ok": True}

        graph = gx.GraphBuilder("g").node("a", a).start("a").end("a").build()
        assert {"ok": True} == (await gx.GraphExecutor().execute(graph)).state


class TestBackpressure:
    async def test_slow_consumer_holds_the_producer_back(self) -> None:
        """With a small buffer and a slow consumer, no token is lost and the node waits."""
        buffer = 2
        progress = 0
        ahead: list[int] = []

        async def tokens(s: State, ctx: gx.NodeContext) -> None:
            nonlocal progress
            for i in range(50):
                await ctx.emit(i)
                progress = i + 1

        graph = gx.GraphBuilder("g").node("tok", tokens).start("tok").end("tok").build()
        received: list[Any] = []
        async with gx.GraphExecutor(event_buffer=buffer).execute_stream(graph) as run:
            async for event in run:
                if isinstance(event, gx.Custom):
                    received.append(event.data)
                    ahead.append(progress - (event.data + 1))
                await anyio.sleep(0.01)
        assert list(range(50)) == received
        assert max(ahead) <= buffer + 1
        assert "completed" == run.result.status

    async def test_sync_node_in_a_thread_is_held_back(self) -> None:
        """A sync node emitting from its worker thread blocks while the buffer is full."""
        buffer = 2
        progress = 0
        ahead: list[int] = []

        def tokens(s: State, ctx: gx.NodeContext) -> None:
            nonlocal progress
            for i in range(20):
                ctx.emit(i)
                progress = i + 1

        graph = gx.GraphBuilder("g").node("tok", tokens).start("tok").end("tok").build()
        received: list[Any] = []
        async with gx.GraphExecutor(event_buffer=buffer).execute_stream(graph) as run:
            async for event in run:
                if isinstance(event, gx.Custom):
                    received.append(event.data)
                    ahead.append(progress - (event.data + 1))
                await anyio.sleep(0.01)
        assert list(range(20)) == received
        assert max(ahead) <= buffer + 1

    async def test_emit_without_await_keeps_order(self) -> None:
        """ctx.emit without await never blocks the node, and every event still arrives in order."""

        async def tokens(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            for i in range(50):
                ctx.emit(i)
            return {"sent": 50}

        graph = gx.GraphBuilder("g").node("tok", tokens).start("tok").end("tok").build()
        async with gx.GraphExecutor(event_buffer=2).execute_stream(graph) as run:
            events = []
            async for event in run:
                events.append(event)
                await anyio.sleep(0.001)
        assert list(range(50)) == [e.data for e in events if isinstance(e, gx.Custom)]
        assert [gx.NodeStart, *[gx.Custom] * 50, gx.StateChanged, gx.NodeEnd] == [
            type(e) for e in events[1:-1]
        ]

    async def test_awaited_emit_waits_for_room(self) -> None:
        """await ctx.emit(x) returns only once x is in the consumer's buffer."""
        emitted: list[int] = []

        async def tokens(s: State, ctx: gx.NodeContext) -> None:
            for i in range(10):
                await ctx.emit(i)
                emitted.append(i)

        graph = gx.GraphBuilder("g").node("tok", tokens).start("tok").end("tok").build()
        async with gx.GraphExecutor(event_buffer=1).execute_stream(graph) as run:
            async for event in run:
                if isinstance(event, gx.NodeStart):
                    # The consumer stalls: the node fills the one-slot buffer and waits.
                    await anyio.sleep(0.05)
                    assert len(emitted) <= 1
        assert list(range(10)) == emitted

    async def test_events_after_the_consumer_left_are_not_an_error(self) -> None:
        """A node still emitting after the consumer broke out does not fail or hang."""
        finished = threading.Event()
        errors: list[BaseException] = []

        def tokens(s: State, ctx: gx.NodeContext) -> None:
            try:
                for i in range(30):
                    ctx.emit(i)
                    time.sleep(0.001)
            except BaseException as exc:  # pragma: no cover - the failure being tested for
                errors.append(exc)
                raise
            finished.set()

        graph = gx.GraphBuilder("g").node("tok", tokens).start("tok").end("tok").build()
        with anyio.fail_after(5):
            async with gx.GraphExecutor(event_buffer=1).execute_stream(graph) as run:
                async for event in run:
                    if isinstance(event, gx.Custom):
                        break
        # The cancel abandoned the thread (it runs on): it must still end without an error.
        assert await anyio.to_thread.run_sync(finished.wait, 5)
        assert [] == errors
        assert run.result.error is None or isinstance(run.result.error, gx.Cancelled)
