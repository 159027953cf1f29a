"""OpenTelemetry (graphexec.otel): spans per run segment and node attempt, their status, and a
run joined into one trace across processes, read back with the SDK's in-memory exporter."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import graphexec as gx
from graphexec.checkpoint._record import decode_body
from graphexec.otel import OpenTelemetry
from graphexec.testing import FakeClock

from otel_worker import graph as approval_graph  # isort: skip  (a helper next to this file)

WORKER = Path(__file__).with_name("otel_worker.py")
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


class Spans:
    """A tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.telemetry = OpenTelemetry(tracer_provider=self.provider)

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, [s.name for s in self.finished()]
        return found[0]


@pytest.fixture
def spans() -> Iterator[Spans]:
    """A fresh provider and exporter per test (no global provider is set)."""
    s = Spans()
    yield s
    s.provider.shutdown()


def sid(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def tid(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def inc(state: Any) -> dict[str, Any]:
    return {"n": state.get("n", 0) + 1}


def chain() -> gx.Graph:
    return (
        gx.GraphBuilder("otel-chain")
        .node("a", inc)
        .node("b", inc)
        .edge("a", "b")
        .start("a")
        .end("b")
        .build()
    )


class TestOneSegment:
    """A run in one process: one segment span, a child span per node attempt."""

    async def test_a_run_is_a_segment_span_with_a_child_per_node(self, spans: Spans) -> None:
        ex = gx.GraphExecutor(telemetry=spans.telemetry)
        result = await ex.execute(chain(), {"n": 0}, trace_id="t-chain")
        assert result.state == {"n": 2}
        run = spans.one("graphexec.run otel-chain")
        a, b = spans.one("graphexec.node a"), spans.one("graphexec.node b")
        assert run.parent is None
        assert [parent_of(a), parent_of(b)] == [sid(run), sid(run)]
        assert {tid(a), tid(b)} == {tid(run)}
        assert attrs(run) == {
            "graphexec.trace_id": "t-chain",
            "graphexec.graph": "otel-chain",
            "graphexec.graph_hash": chain().hash,
            "graphexec.segment": "start",
            "graphexec.step": 0,
            "graphexec.status": "completed",
            "graphexec.steps": 2,
        }
        assert attrs(b) == {
            "graphexec.trace_id": "t-chain",
            "graphexec.node": "b",
            "graphexec.step": 2,
            "graphexec.span_id": "b@2",
            "graphexec.attempt": 1,
            "graphexec.status": "ok",
        }
        assert run.status.status_code is StatusCode.UNSET
        assert a.status.status_code is StatusCode.UNSET

    async def test_a_failing_node_ends_its_span_and_the_segment_with_error_status(
        self, spans: Spans
    ) -> None:
        async def boom(state: Any) -> None:
            raise ValueError("bad ticket 42")

        g = gx.GraphBuilder("otel-fail").node("a", inc).node("boom", boom).edge("a", "boom")
        ex = gx.GraphExecutor(telemetry=spans.telemetry)
        with pytest.raises(gx.NodeExecutionFailed):
            await ex.execute(g.start("a").end("boom").build(), {})
        node = spans.one("graphexec.node boom")
        run = spans.one("graphexec.run otel-fail")
        assert node.status.status_code is StatusCode.ERROR
        assert "bad ticket 42" in (node.status.description or "")
        assert attrs(node)["error.type"] == "ValueError"
        assert attrs(node)["graphexec.status"] == "failed"
        assert [e.name for e in node.events] == ["exception"]
        assert run.status.status_code is StatusCode.ERROR
        assert attrs(run)["graphexec.status"] == "failed"
        assert attrs(run)["graphexec.error.node"] == "boom"
        assert attrs(run)["graphexec.next_node"] == "boom"
        assert spans.one("graphexec.node a").status.status_code is StatusCode.UNSET

    async def test_each_retry_attempt_is_a_span_of_its_own(self, spans: Spans) -> None:
        calls: list[int] = []

        async def flaky(state: Any, ctx: gx.NodeContext) -> dict[str, Any]:
            calls.append(ctx.attempt)
            if ctx.attempt < 3:
                raise ConnectionError(f"down {ctx.attempt}")
            return {"ok": ctx.attempt}

        g = (
            gx.GraphBuilder("otel-retry")
            .node("flaky", flaky, retry=gx.Retry(attempts=3, backoff=1.0, jitter=False))
            .start("flaky")
            .end("flaky")
            .build()
        )
        ex = gx.GraphExecutor(telemetry=spans.telemetry, clock=FakeClock())
        assert (await ex.execute(g, {})).state == {"ok": 3}
        attempts = spans.named("graphexec.node flaky")
        assert [attrs(s)["graphexec.attempt"] for s in attempts] == [1, 2, 3]
        assert [s.status.status_code for s in attempts] == [
            StatusCode.ERROR,
            StatusCode.ERROR,
            StatusCode.UNSET,
        ]
        assert [attrs(s)["graphexec.span_id"] for s in attempts] == ["flaky@1"] * 3
        run = spans.one("graphexec.run otel-retry")
        retries = [e for e in run.events if e.name == "graphexec.retry"]
        assert [(e.attributes or {}).get("graphexec.attempt") for e in retries] == [1, 2]
        assert [(e.attributes or {}).get("graphexec.retry.wait") for e in retries] == [1.0, 2.0]
        assert run.status.status_code is StatusCode.UNSET

    async def test_branches_and_map_items_are_children_of_their_node(self, spans: Spans) -> None:
        def sync_branch(state: Any) -> dict[str, Any]:
            return {"sync": True}

        async def failing(state: Any) -> None:
            raise RuntimeError("policy service down")

        async def item(x: Any) -> Any:
            return x * 2

        g = (
            gx.GraphBuilder("otel-fan")
            .parallel(
                "research",
                {"sync": sync_branch, "down": failing},
                on_error="continue",
            )
            .map("double", item, over="xs", into="ys")
            .edge("research", "double")
            .start("research")
            .end("double")
            .build()
        )
        ex = gx.GraphExecutor(telemetry=spans.telemetry)
        result = await ex.execute(g, {"xs": [1, 2, 3]})
        assert result.state["ys"] == [2, 4, 6]
        research = spans.one("graphexec.node research")
        double = spans.one("graphexec.node double")
        branches = spans.named("graphexec.branch research")
        items = spans.named("graphexec.branch double")
        assert {parent_of(s) for s in branches} == {sid(research)}
        assert {parent_of(s) for s in items} == {sid(double)}
        by_branch = {attrs(s)["graphexec.branch"]: s for s in branches}
        assert set(by_branch) == {"sync", "down"}
        assert by_branch["down"].status.status_code is StatusCode.ERROR
        assert by_branch["sync"].status.status_code is StatusCode.UNSET
        assert research.status.status_code is StatusCode.UNSET  # the node survived
        assert sorted(attrs(s)["graphexec.branch"] for s in items) == [
            "double[0]",
            "double[1]",
            "double[2]",
        ]

    async def test_spans_the_node_starts_are_children_of_its_attempt(self, spans: Spans) -> None:
        tracer = spans.provider.get_tracer("app")

        async def calls_model(state: Any) -> None:
            with tracer.start_as_current_span("model.call"):
                pass

        def in_thread(state: Any) -> None:
            with tracer.start_as_current_span("tool.call"):
                pass

        g = (
            gx.GraphBuilder("otel-nested")
            .node("model", calls_model)
            .node("tool", in_thread)
            .edge("model", "tool")
            .start("model")
            .end("tool")
            .build()
        )
        await gx.GraphExecutor(telemetry=spans.telemetry).execute(g, {})
        assert parent_of(spans.one("model.call")) == sid(spans.one("graphexec.node model"))
        assert parent_of(spans.one("tool.call")) == sid(spans.one("graphexec.node tool"))

    async def test_the_callers_current_span_is_the_segments_parent(self, spans: Spans) -> None:
        tracer = spans.provider.get_tracer("app")
        with tracer.start_as_current_span("POST /runs"):
            await gx.GraphExecutor(telemetry=spans.telemetry).execute(chain(), {})
        request = spans.one("POST /runs")
        run = spans.one("graphexec.run otel-chain")
        assert parent_of(run) == sid(request)
        assert tid(run) == tid(request)
        # the segment's context is detached when it ends: the caller's is current again
        assert trace.get_current_span() is trace.INVALID_SPAN

    async def test_a_barrier_step_has_waiting_and_resolved_events(self, spans: Spans) -> None:
        ex = gx.GraphExecutor(telemetry=spans.telemetry)
        async with ex.execute_stream(approval_graph(), {}) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.reject(event.barrier_id, "too much")
        barrier = spans.one("graphexec.barrier approve")
        assert [e.name for e in barrier.events] == [
            "graphexec.barrier.waiting",
            "graphexec.barrier.resolved",
        ]
        resolved = dict(barrier.events[1].attributes or {})
        assert resolved["graphexec.barrier_id"] == "approve#1"
        assert resolved["graphexec.decision"] == "reject"
        assert resolved["graphexec.by"] == "human"
        assert attrs(barrier)["graphexec.barrier_id"] == "approve#1"

    async def test_a_cancel_is_not_an_error(self, spans: Spans) -> None:
        async def hangs(state: Any) -> None:
            await anyio.sleep_forever()

        g = gx.GraphBuilder("otel-cancel").node("hangs", hangs).start("hangs").end("hangs")
        ex = gx.GraphExecutor(telemetry=spans.telemetry)
        async with ex.execute_stream(g.build(), {}) as run:
            async for event in run:
                if isinstance(event, gx.NodeStart):
                    await run.handle.cancel()
        assert run.result is not None and run.result.status == "cancelled"
        node = spans.one("graphexec.node hangs")
        segment = spans.one("graphexec.run otel-cancel")
        assert attrs(node)["graphexec.status"] == "cancelled"
        assert attrs(segment)["graphexec.status"] == "cancelled"
        assert node.status.status_code is StatusCode.UNSET
        assert segment.status.status_code is StatusCode.UNSET

    async def test_a_paused_node_has_its_wait_and_decision_on_the_segment(
        self, spans: Spans
    ) -> None:
        async def fails_once(state: Any, ctx: gx.NodeContext) -> dict[str, Any]:
            if not state.get("fixed"):
                raise RuntimeError("ledger locked")
            return {"done": True}

        g = (
            gx.GraphBuilder("otel-pause")
            .node("ship", fails_once, on_failure="pause")
            .start("ship")
            .end("ship")
            .build()
        )
        ex = gx.GraphExecutor(telemetry=spans.telemetry)
        async with ex.execute_stream(g, {}) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.decide(event.barrier_id, gx.Edit({"fixed": True}))
        assert run.result is not None and run.result.status == "completed"
        attempts = spans.named("graphexec.node ship")
        assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
        segment = spans.one("graphexec.run otel-pause")
        events = [(e.name, dict(e.attributes or {})) for e in segment.events]
        assert [name for name, _ in events] == [
            "graphexec.barrier.waiting",
            "graphexec.barrier.resolved",
        ]
        assert events[1][1]["graphexec.barrier_id"] == "ship#1"
        assert events[1][1]["graphexec.edited"] is True

    async def test_without_telemetry_a_node_sees_the_callers_span(self, spans: Spans) -> None:
        seen: list[trace.Span] = []

        async def look(state: Any) -> None:
            seen.append(trace.get_current_span())

        g = gx.GraphBuilder("otel-off").node("look", look).start("look").end("look").build()
        tracer = spans.provider.get_tracer("app")
        with tracer.start_as_current_span("request") as request:
            await gx.GraphExecutor().execute(g, {})
            await gx.GraphExecutor(telemetry=spans.telemetry).execute(g, {})
        assert seen[0] is request
        assert seen[1] is not request
        assert [s.name for s in spans.finished()] == [
            "graphexec.node look",
            "graphexec.run otel-off",
            "request",
        ]


class TestAcrossSegments:
    """The run's first segment's trace context is stored; later segments join its trace."""

    async def test_a_resume_in_another_process_joins_the_same_trace(
        self, spans: Spans, tmp_path: Path
    ) -> None:
        db = tmp_path / "runs.db"
        async with gx.SQLiteStore(db) as store:
            ex = gx.GraphExecutor(store=store, telemetry=spans.telemetry)
            async with ex.execute_stream(approval_graph(), {}, trace_id="conv-7") as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        break
            assert run.result is not None and run.result.status == "waiting"
            first = spans.one("graphexec.run otel-approval")
            assert attrs(first)["graphexec.status"] == "waiting"
            assert attrs(first)["graphexec.barrier_id"] == "approve#1"
            rows = await store.load_chain("conv-7", None)
            stored = decode_body(rows[0]).trace_context
            assert stored is not None
            match = TRACEPARENT.fullmatch(stored)
            assert match is not None, stored
            assert (int(match[1], 16), int(match[2], 16)) == (tid(first), sid(first))
            await store.submit_decision("conv-7", "approve#1", gx.Approve())
        done = await anyio.run_process(
            [sys.executable, str(WORKER), str(db), "conv-7"], check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        line = next(x for x in done.stdout.decode().splitlines() if x.startswith("SPANS "))
        resumed = json.loads(line.removeprefix("SPANS "))
        segment = next(s for s in resumed if s["name"] == "graphexec.run otel-approval")
        assert segment["trace_id"] == tid(first)
        assert segment["parent"] == sid(first)
        assert segment["attributes"]["graphexec.segment"] == "resume"
        assert segment["attributes"]["graphexec.status"] == "completed"
        barrier = next(s for s in resumed if s["name"] == "graphexec.barrier approve")
        assert barrier["events"] == ["graphexec.barrier.resolved"]
        send = next(s for s in resumed if s["name"] == "graphexec.node send")
        assert {barrier["parent"], send["parent"]} == {segment["span_id"]}
        assert {s["trace_id"] for s in resumed} == {tid(first)}

    async def test_a_segment_without_telemetry_keeps_the_stored_context(self, spans: Spans) -> None:
        """Resumed without telemetry (and compacted: new bases), the run still records its
        first segment's context; a later traced segment joins that trace."""
        g = (
            gx.GraphBuilder("otel-three")
            .node("a", inc)
            .barrier("one")
            .node("b", inc)
            .barrier("two")
            .node("c", inc)
            .edge("a", "one")
            .edge("one", "b")
            .edge("b", "two")
            .edge("two", "c")
            .start("a")
            .end("c")
            .build()
        )
        store = gx.MemoryStore()
        policy = gx.CheckpointPolicy(every_step=True, compact_every=1)  # every record a base
        traced = gx.GraphExecutor(store=store, policy=policy, telemetry=spans.telemetry)
        plain = gx.GraphExecutor(store=store, policy=policy)
        async with traced.execute_stream(g, {}, trace_id="three") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        await store.submit_decision("three", "one#1", gx.Approve())
        async with plain.resume_from(g, "three") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        rows = await store.load_chain("three", None)
        assert rows[0].kind == "base" and rows[0].seq > 3  # written by the untraced segment
        first = spans.one("graphexec.run otel-three")
        await store.submit_decision("three", "two#1", gx.Approve())
        async with traced.resume_from(g, "three") as run:
            async for _ in run:
                pass
        assert run.result is not None and run.result.status == "completed"
        segments = spans.named("graphexec.run otel-three")
        assert len(segments) == 2
        assert parent_of(segments[1]) == sid(first)
        assert tid(segments[1]) == tid(first)

    async def test_a_fork_starts_its_own_trace_linked_to_its_source(self, spans: Spans) -> None:
        store = gx.MemoryStore()
        ex = gx.GraphExecutor(store=store, telemetry=spans.telemetry)
        await ex.execute(chain(), {"n": 0}, trace_id="source")
        source = spans.one("graphexec.run otel-chain")
        async with ex.fork(chain(), "source", 1, new_trace_id="forked") as run:
            async for _ in run:
                pass
        fork = next(s for s in spans.named("graphexec.run otel-chain") if s is not source)
        assert attrs(fork)["graphexec.segment"] == "fork"
        assert tid(fork) != tid(source)
        assert fork.parent is None
        assert [(link.context.trace_id, link.context.span_id) for link in fork.links] == [
            (tid(source), sid(source))
        ]

    async def test_a_rerun_links_its_source_and_spans_only_the_nodes_it_runs(
        self, spans: Spans
    ) -> None:
        store = gx.MemoryStore()
        ex = gx.GraphExecutor(store=store, telemetry=spans.telemetry)
        await ex.execute(chain(), {"n": 0}, trace_id="rerun-source")
        source = spans.one("graphexec.run otel-chain")
        async with ex.rerun(chain(), "rerun-source", "b", new_trace_id="rerun-new") as run:
            async for _ in run:
                pass
        assert run.result is not None and run.result.status == "completed"
        rerun = next(s for s in spans.named("graphexec.run otel-chain") if s is not source)
        assert attrs(rerun)["graphexec.segment"] == "rerun"
        assert [(link.context.trace_id, link.context.span_id) for link in rerun.links] == [
            (tid(source), sid(source))
        ]
        # "a" was reused (replayed, not called): no attempt, no span
        ran = [s for s in spans.finished() if tid(s) == tid(rerun) and s is not rerun]
        assert [s.name for s in ran] == ["graphexec.node b"]

    async def test_a_resume_under_a_callers_span_links_it(self, spans: Spans) -> None:
        store = gx.MemoryStore()
        ex = gx.GraphExecutor(store=store, telemetry=spans.telemetry)
        async with ex.execute_stream(approval_graph(), {}, trace_id="linked") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        first = spans.one("graphexec.run otel-approval")
        await store.submit_decision("linked", "approve#1", gx.Approve())
        tracer = spans.provider.get_tracer("app")
        with tracer.start_as_current_span("POST /decisions"):
            async with ex.resume_from(approval_graph(), "linked") as run:
                async for _ in run:
                    pass
        request = spans.one("POST /decisions")
        resumed = [s for s in spans.named("graphexec.run otel-approval") if s is not first]
        assert len(resumed) == 1
        assert parent_of(resumed[0]) == sid(first)
        assert [(link.context.trace_id, link.context.span_id) for link in resumed[0].links] == [
            (tid(request), sid(request))
        ]


_HEX = st.text(alphabet="0123456789abcdef", min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    stored=st.one_of(
        st.text(max_size=80),
        st.builds(lambda t, s, f: f"00-{t}-{s}-{f}", _HEX, _HEX, st.sampled_from(["00", "01"])),
    )
)
def test_any_stored_trace_context_is_joined_or_replaced(stored: str) -> None:
    """A stored value that is a valid traceparent is the segment's parent (and stays the
    recorded one); anything else (damaged, hand-written) is ignored: the segment starts a
    trace of its own and records that instead. Never an error."""
    s = Spans()
    seg = s.telemetry.segment(
        trace_id="t",
        graph="g",
        graph_hash="h",
        kind="resume",
        step=3,
        stored_context=stored,
        linked_context=stored,
    )
    seg.begin()
    seg.end("completed", 3, None, None, None)
    span = s.one("graphexec.run g")
    match = TRACEPARENT.fullmatch(stored)
    valid = match is not None and int(match[1], 16) != 0 and int(match[2], 16) != 0
    if valid:
        assert match is not None
        assert seg.trace_context == stored
        assert (tid(span), parent_of(span)) == (int(match[1], 16), int(match[2], 16))
        assert len(span.links) == 1
    else:
        assert span.parent is None
        assert list(span.links) == []
        assert seg.trace_context is not None
        own = TRACEPARENT.fullmatch(seg.trace_context)
        assert own is not None and int(own[2], 16) == sid(span)
    s.provider.shutdown()


def test_import_graphexec_imports_no_opentelemetry() -> None:
    code = (
        "import sys, graphexec as gx\n"
        "gx.GraphExecutor()\n"
        "assert not any(m.startswith('opentelemetry') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "import graphexec.otel\n"
        "assert 'opentelemetry.trace' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
