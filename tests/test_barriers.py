"""Human-in-the-loop barriers: decisions, early and wildcard decisions, timeouts, misuse."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import graphexec as gx
from graphexec._decisions import DefaultAction

APPROVED: Callable[[Any], bool] = lambda s: s["gate"]["decision"] == "approve"
REJECTED: Callable[[Any], bool] = lambda s: s["gate"]["decision"] == "reject"


# -- helpers ----------------------------------------------------------------------------------


def approval_graph(
    *,
    prompt: Callable[[Any], Any] | None = None,
    timeout: float | None = None,
    default: DefaultAction = "reject",
    slow: float = 0.0,
) -> gx.Graph:
    """draft -> gate -> send (approved) | decline (rejected) | skipped (anything else)."""

    async def draft(state: Mapping[str, Any]) -> dict[str, Any]:
        if slow:
            await anyio.sleep(slow)
        return {"text": "hi", "notes": ["drafted"]}

    def send(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"outcome": "sent"}

    def decline(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"outcome": "declined"}

    def skipped(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"outcome": "skipped"}

    return (
        gx.GraphBuilder("approval")
        .node("draft", draft)
        .barrier("gate", prompt=prompt, timeout=timeout, default=default)
        .node("send", send, inline=True)
        .node("decline", decline, inline=True)
        .node("skipped", skipped, inline=True)
        .edge("draft", "gate")
        .edge("gate", "send", when=APPROVED)
        .edge("gate", "decline", when=REJECTED)
        .edge("gate", "skipped")
        .reducer("notes", gx.reducers.append)
        .start("draft")
        .end("send", "decline", "skipped")
        .build()
    )


def loop_graph(n: int, *, prompt: Callable[[Any], Any] | None = None) -> gx.Graph:
    """work -> gate -> yes | no -> check -> (work again while i < n) | done: n occurrences."""

    async def work(state: Mapping[str, Any]) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        i = state["i"] + 1
        return {"i": i, "log": [f"work{i}"]}

    def yes(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"log": [f"yes{state['i']}"]}

    def no(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"log": [f"no{state['i']}:{state['gate']['reason']}"]}

    def check(state: Mapping[str, Any]) -> None:
        return None

    def done(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"log": ["done"]}

    return (
        gx.GraphBuilder(f"loop{n}")
        .node("work", work)
        .barrier("gate", prompt=prompt or (lambda s: {"i": s["i"]}))
        .node("yes", yes, inline=True)
        .node("no", no, inline=True)
        .node("check", check)
        .node("done", done, inline=True)
        .edge("work", "gate")
        .edge("gate", "yes", when=APPROVED)
        .edge("gate", "no")
        .edge("yes", "check")
        .edge("no", "check")
        .edge("check", "work", when=lambda s: s["i"] < n)
        .edge("check", "done")
        .reducer("log", gx.reducers.append)
        .reducer("counter", gx.reducers.add)
        .start("work")
        .end("done")
        .build()
    )


LOOP_STATE: dict[str, Any] = {"i": 0, "counter": 0, "log": []}


def of(events: Sequence[gx.GraphEvent], kind: type[Any]) -> list[Any]:
    """The events of one type, in order."""
    return [e for e in events if isinstance(e, kind)]


def timeless(events: Sequence[gx.GraphEvent]) -> list[gx.GraphEvent]:
    """Events with their durations and ids zeroed, to compare against a literal."""
    return [
        msgspec.structs.replace(e, duration=0.0, event_id=0)
        if hasattr(e, "duration")
        else msgspec.structs.replace(e, event_id=0)
        for e in events
    ]


async def approve_each(
    graph: gx.Graph,
    state: Any,
    decide: Callable[[gx.BarrierWaiting], gx.Decision] | None = None,
    **kw: Any,
) -> tuple[gx.GraphResult, list[gx.GraphEvent]]:
    """Stream a run, answering each BarrierWaiting with ``decide(event)`` (default: approve)."""
    events: list[gx.GraphEvent] = []
    async with gx.GraphExecutor().execute_stream(graph, state, **kw) as run:
        async for event in run:
            events.append(event)
            if isinstance(event, gx.BarrierWaiting):
                decision = decide(event) if decide else gx.Approve()
                await run.handle.decide(event.barrier_id, decision)
    return run.result, events


def record(decision: str, reason: str | None = None, by: str = "human") -> dict[str, Any]:
    """What a barrier writes under its record key."""
    return {"decision": decision, "reason": reason, "by": by}


# -- each decision kind -----------------------------------------------------------------------


class TestDecisionKinds:
    async def test_approve_streams_the_whole_barrier_lifecycle(self) -> None:
        """Approve: NodeStart, BarrierWaiting, the record delta, BarrierResolved, then routing."""
        graph = approval_graph(prompt=lambda s: f"send {s['text']!r}?")
        result, events = await approve_each(graph, {}, trace_id="t1")
        state = {"text": "hi", "notes": ["drafted"], "gate": record("approve"), "outcome": "sent"}
        assert timeless(events) == [
            gx.GraphStart(
                trace_id="t1",
                step=0,
                graph="approval",
                graph_hash=graph.hash,
                node="draft",
                input={},
            ),
            gx.NodeStart(trace_id="t1", step=1, node="draft", span_id="draft@1", kind="node"),
            gx.StateChanged(
                trace_id="t1", step=1, node="draft", span_id="draft@1", key="text", delta="hi"
            ),
            gx.StateChanged(
                trace_id="t1",
                step=1,
                node="draft",
                span_id="draft@1",
                key="notes",
                delta=["drafted"],
                reducer="append",
            ),
            gx.NodeEnd(
                trace_id="t1",
                step=1,
                node="draft",
                span_id="draft@1",
                ok=True,
                duration=0.0,
                next_node="gate",
            ),
            gx.NodeStart(trace_id="t1", step=2, node="gate", span_id="gate@2", kind="barrier"),
            gx.BarrierWaiting(
                trace_id="t1", step=2, barrier_id="gate#1", node="gate", prompt="send 'hi'?"
            ),
            gx.StateChanged(
                trace_id="t1",
                step=2,
                node="gate",
                span_id="gate@2",
                key="gate",
                delta=record("approve"),
            ),
            gx.BarrierResolved(
                trace_id="t1", step=2, barrier_id="gate#1", node="gate", decision="approve"
            ),
            gx.NodeEnd(
                trace_id="t1",
                step=2,
                node="gate",
                span_id="gate@2",
                ok=True,
                duration=0.0,
                next_node="send",
            ),
            gx.NodeStart(trace_id="t1", step=3, node="send", span_id="send@3", kind="node"),
            gx.StateChanged(
                trace_id="t1",
                step=3,
                node="send",
                span_id="send@3",
                key="outcome",
                delta="sent",
            ),
            gx.NodeEnd(
                trace_id="t1",
                step=3,
                node="send",
                span_id="send@3",
                ok=True,
                duration=0.0,
                next_node=None,
            ),
            gx.GraphComplete(trace_id="t1", step=3, state=state, steps=3, duration=0.0),
        ]
        assert result.status == "completed"
        assert result.state == state

    async def test_reject_records_the_reason_and_routes_on_it(self) -> None:
        """Reject(reason): recorded in the state and the event; the reject edge is taken."""
        result, events = await approve_each(approval_graph(), {}, lambda e: gx.Reject("too big"))
        assert result.state["gate"] == record("reject", "too big")
        assert result.state["outcome"] == "declined"
        [resolved] = of(events, gx.BarrierResolved)
        assert (resolved.decision, resolved.reason, resolved.by) == ("reject", "too big", "human")
        assert resolved.edited is False

    async def test_reject_without_a_reason(self) -> None:
        """handle.reject(id) with no reason records reason None."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(approval_graph(), {}) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.reject(event.barrier_id)
        assert run.result.state["gate"] == record("reject")
        assert run.result.state["outcome"] == "declined"

    async def test_edit_applies_its_update_through_the_reducers_and_approves(self) -> None:
        """Edit(update): the update goes through the reducers (append here), then an approval."""
        result, events = await approve_each(
            approval_graph(), {}, lambda e: gx.Edit({"notes": ["edited"], "text": "hello"})
        )
        assert result.state == {
            "text": "hello",
            "notes": ["drafted", "edited"],
            "gate": record("approve"),
            "outcome": "sent",
        }
        changes = [(e.key, e.delta) for e in of(events, gx.StateChanged) if e.node == "gate"]
        assert changes == [("notes", ["edited"]), ("text", "hello"), ("gate", record("approve"))]
        [resolved] = of(events, gx.BarrierResolved)
        assert (resolved.decision, resolved.edited) == ("approve", True)

    async def test_skip_records_skip_and_takes_the_normal_edge(self) -> None:
        """Skip: recorded as "skip"; no condition matches, so the normal edge is taken."""
        result, events = await approve_each(approval_graph(), {}, lambda e: gx.Skip())
        assert result.state["gate"] == record("skip")
        assert result.state["outcome"] == "skipped"
        [resolved] = of(events, gx.BarrierResolved)
        assert resolved.decision == "skip"

    async def test_record_key_can_be_renamed(self) -> None:
        """record= chooses the state key the decision is written to."""
        graph = (
            gx.GraphBuilder("renamed")
            .barrier("gate", record="verdict")
            .node("after", lambda s: {"seen": s["verdict"]["decision"]}, inline=True)
            .edge("gate", "after")
            .start("gate")
            .end("after")
            .build()
        )
        result, _ = await approve_each(graph, {})
        assert result.state == {"verdict": record("approve"), "seen": "approve"}


# -- early, wildcard and repeated decisions ---------------------------------------------------


class TestEarlyDecisions:
    async def test_a_decision_sent_before_the_barrier_is_kept_and_used(self) -> None:
        """Sent right after GraphStart while a slow node runs: used at once, no BarrierWaiting."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(approval_graph(slow=0.05), {}) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.GraphStart):
                    await run.handle.reject("gate#1", "early")
                    assert run.handle.status == "running"
                    assert run.handle.pending_barrier is None
        assert of(events, gx.BarrierWaiting) == []
        [resolved] = of(events, gx.BarrierResolved)
        assert (resolved.barrier_id, resolved.decision, resolved.by) == (
            "gate#1",
            "reject",
            "human",
        )
        assert run.result.state["outcome"] == "declined"

    async def test_execute_stream_takes_decisions_up_front(self) -> None:
        """execute_stream(decisions=...) primes the run like early handle calls."""
        _, events = await approve_each(
            loop_graph(2), LOOP_STATE, decisions={"gate#1": gx.Approve(), "gate": gx.Reject("w")}
        )
        assert of(events, gx.BarrierWaiting) == []
        assert [(e.barrier_id, e.decision) for e in of(events, gx.BarrierResolved)] == [
            ("gate#1", "approve"),
            ("gate#2", "reject"),
        ]

    @pytest.mark.parametrize("sync", [True, False], ids=["sync-prompt", "async-prompt"])
    async def test_a_decision_sent_while_the_prompt_runs_is_used(self, sync: bool) -> None:
        """The barrier has been reached but is not yet waiting: its decision is still accepted."""
        release = anyio.Event()

        async def slow_prompt(state: Mapping[str, Any]) -> str:
            await release.wait()
            return "late"

        def blocking_prompt(state: Mapping[str, Any]) -> str:
            anyio.from_thread.run(release.wait)
            return "late"

        graph = approval_graph(prompt=blocking_prompt if sync else slow_prompt)
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(graph, {}) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.NodeStart) and event.kind == "barrier":
                    await anyio.sleep(0.01)  # the prompt is running now
                    try:
                        await run.handle.approve("gate#1")
                    finally:
                        release.set()
        assert run.result.state["gate"] == record("approve")
        [resolved] = of(events, gx.BarrierResolved)
        assert resolved.barrier_id == "gate#1"

    async def test_an_early_decision_through_the_store_is_used(self) -> None:
        """store.submit_decision() before the barrier is reached: picked up when it is."""
        store = gx.MemoryStore()
        events: list[gx.GraphEvent] = []
        ex = gx.GraphExecutor(store=store, decision_poll_interval=0.01)
        async with ex.execute_stream(approval_graph(slow=0.05), {}, trace_id="s1") as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.GraphStart):
                    await store.submit_decision("s1", "gate#1", gx.Reject("stored"))
        assert run.result.state["gate"] == record("reject", "stored")
        assert of(events, gx.BarrierWaiting) == []


class TestWildcards:
    async def test_exact_wins_for_its_occurrence_wildcard_serves_the_others(self) -> None:
        """decide_node() covers every occurrence; decide(id) overrides it for that one."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(loop_graph(3), LOOP_STATE) as run:
            await run.handle.decide_node("gate", gx.Approve())
            await run.handle.decide("gate#2", gx.Reject("not this one"))
            async for event in run:
                events.append(event)
        assert of(events, gx.BarrierWaiting) == []
        assert [(e.barrier_id, e.decision, e.reason) for e in of(events, gx.BarrierResolved)] == [
            ("gate#1", "approve", None),
            ("gate#2", "reject", "not this one"),
            ("gate#3", "approve", None),
        ]
        assert run.result.state["log"] == [
            "work1",
            "yes1",
            "work2",
            "no2:not this one",
            "work3",
            "yes3",
            "done",
        ]

    async def test_a_wildcard_sent_while_waiting_resolves_it_and_the_later_ones(self) -> None:
        """A wildcard wakes the waiting barrier and keeps serving later occurrences."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(loop_graph(3), LOOP_STATE) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.decide_node("gate", gx.Reject("all"))
        assert [e.barrier_id for e in of(events, gx.BarrierWaiting)] == ["gate#1"]
        assert [(e.barrier_id, e.reason) for e in of(events, gx.BarrierResolved)] == [
            ("gate#1", "all"),
            ("gate#2", "all"),
            ("gate#3", "all"),
        ]

    async def test_a_second_wildcard_replaces_the_first(self) -> None:
        """decide_node() again for the same node: the newer wildcard is used from then on."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(loop_graph(3), LOOP_STATE) as run:
            await run.handle.approve("gate#1")
            await run.handle.decide_node("gate", gx.Reject("first"))
            await run.handle.decide_node("gate", gx.Reject("second"))
            async for event in run:
                events.append(event)
        assert [e.reason for e in of(events, gx.BarrierResolved)] == [None, "second", "second"]


class TestLoops:
    async def test_each_occurrence_needs_its_own_decision(self) -> None:
        """A barrier reached three times waits three times, as gate#1, gate#2 and gate#3."""
        waiting: list[gx.BarrierWaiting] = []
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(loop_graph(3), LOOP_STATE) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    waiting.append(event)
                    assert run.handle.status == "waiting"
                    assert run.handle.pending_barrier == event.barrier_id
                    n = len(waiting)
                    if n == 2:
                        await run.handle.reject(event.barrier_id, "second")
                    else:
                        await run.handle.approve(event.barrier_id)
        assert [(e.barrier_id, e.prompt) for e in waiting] == [
            ("gate#1", {"i": 1}),
            ("gate#2", {"i": 2}),
            ("gate#3", {"i": 3}),
        ]
        assert [e.barrier_id for e in of(events, gx.BarrierResolved)] == [
            "gate#1",
            "gate#2",
            "gate#3",
        ]
        assert run.result.state["log"] == [
            "work1",
            "yes1",
            "work2",
            "no2:second",
            "work3",
            "yes3",
            "done",
        ]
        assert run.result.state["gate"] == record("approve")

    async def test_a_decision_for_a_later_occurrence_waits_for_it(self) -> None:
        """A decision for gate#2 sent while gate#1 waits does not resolve gate#1."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(loop_graph(2), LOOP_STATE) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting) and event.barrier_id == "gate#1":
                    await run.handle.reject("gate#2", "ahead")
                    await anyio.sleep(0.01)
                    assert run.handle.pending_barrier == "gate#1"
                    await run.handle.approve("gate#1")
        assert [e.barrier_id for e in of(events, gx.BarrierWaiting)] == ["gate#1"]
        assert [(e.barrier_id, e.decision) for e in of(events, gx.BarrierResolved)] == [
            ("gate#1", "approve"),
            ("gate#2", "reject"),
        ]


# -- prompts, deadlines, timeouts, cancel -----------------------------------------------------


class TestPromptsAndTimeouts:
    @pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
    async def test_the_prompt_gets_the_state_and_its_payload_is_sent(self, sync: bool) -> None:
        """prompt(state), sync or async, becomes BarrierWaiting.prompt."""

        def sync_prompt(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"question": f"send {state['text']}?", "notes": list(state["notes"])}

        async def async_prompt(state: Mapping[str, Any]) -> dict[str, Any]:
            await anyio.lowlevel.checkpoint()
            return sync_prompt(state)

        graph = approval_graph(prompt=sync_prompt if sync else async_prompt)
        _, events = await approve_each(graph, {})
        [waiting] = of(events, gx.BarrierWaiting)
        assert waiting.prompt == {"question": "send hi?", "notes": ["drafted"]}
        assert waiting.deadline is None

    async def test_the_prompt_sees_typed_state(self) -> None:
        """With typed state, the prompt receives an instance of the Struct."""

        class Doc(msgspec.Struct):
            text: str = "x"
            gate: dict[str, Any] | None = None

        seen: list[Any] = []

        def prompt(state: Doc) -> str:
            seen.append(state)
            return state.text

        graph = (
            gx.GraphBuilder("typed", state=Doc)
            .barrier("gate", prompt=prompt)
            .node("after", lambda s: None, inline=True)
            .edge("gate", "after")
            .start("gate")
            .end("after")
            .build()
        )
        _, events = await approve_each(graph, Doc(text="typed"))
        assert seen == [Doc(text="typed")]  # before the decision is recorded
        assert of(events, gx.BarrierWaiting)[0].prompt == "typed"

    async def test_a_failing_prompt_fails_the_run(self) -> None:
        """A prompt that raises ends the run with NodeExecutionFailed naming the barrier."""

        def prompt(state: Mapping[str, Any]) -> str:
            raise RuntimeError("no prompt")

        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(approval_graph(prompt=prompt), {}) as run:
            async for event in run:
                events.append(event)
        assert run.result.status == "failed"
        assert isinstance(run.result.error, gx.NodeExecutionFailed)
        assert run.result.error.node == "gate"
        assert of(events, gx.BarrierWaiting) == []

    async def test_a_failing_prompt_closes_its_span_and_uses_no_step(self) -> None:
        """The barrier's NodeStart is closed by a NodeEnd(ok=False) (also in the execution
        log), and the failed barrier does not count as a step: draft is step 1, the gate
        failed at step 2, the run took 1 step."""

        def prompt(state: Mapping[str, Any]) -> str:
            raise RuntimeError("no prompt")

        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(approval_graph(prompt=prompt), {}) as run:
            async for event in run:
                events.append(event)
        [start] = [e for e in of(events, gx.NodeStart) if e.node == "gate"]
        [end] = [e for e in of(events, gx.NodeEnd) if e.node == "gate"]
        assert (2, start.span_id, 2, False) == (start.step, end.span_id, end.step, end.ok)
        assert [("draft", True), ("gate", False)] == [
            (e.node, e.success) for e in run.result.execution_log
        ]
        assert 1 == run.result.steps
        assert run.result.error is not None and 2 == run.result.error.step

    async def test_the_deadline_is_set_from_the_timeout(self) -> None:
        """timeout=30: BarrierWaiting.deadline is wall-clock now + 30 s."""
        before = time.time()
        _, events = await approve_each(approval_graph(timeout=30), {})
        after = time.time()
        [waiting] = of(events, gx.BarrierWaiting)
        assert waiting.deadline is not None
        assert before + 30 <= waiting.deadline <= after + 30

    @pytest.mark.parametrize(
        ("default", "expected", "outcome"),
        [
            ("approve", record("approve", by="timeout"), "sent"),
            ("reject", record("reject", "timed out", by="timeout"), "declined"),
            ("skip", record("skip", by="timeout"), "skipped"),
        ],
    )
    async def test_a_timeout_applies_the_default(
        self, default: DefaultAction, expected: dict[str, Any], outcome: str
    ) -> None:
        """No decision before the deadline: the default action, recorded with by="timeout"."""
        events: list[gx.GraphEvent] = []
        graph = approval_graph(timeout=0.05, default=default)
        async with gx.GraphExecutor().execute_stream(graph, {}) as run:
            async for event in run:
                events.append(event)
        assert run.result.state["gate"] == expected
        assert run.result.state["outcome"] == outcome
        [resolved] = of(events, gx.BarrierResolved)
        assert (resolved.by, resolved.decision) == ("timeout", default)

    async def test_a_decision_before_the_deadline_beats_the_timeout(self) -> None:
        """A human decision in time is recorded as by="human"."""
        result, _ = await approve_each(approval_graph(timeout=5, default="reject"), {})
        assert result.state["gate"] == record("approve")

    async def test_execute_waits_out_a_timeout(self) -> None:
        """execute() with decisions={} and a timeout barrier applies the default."""
        graph = approval_graph(timeout=0.05, default="skip")
        result = await gx.GraphExecutor().execute(graph, {}, decisions={})
        assert result.state["gate"] == record("skip", by="timeout")

    async def test_cancel_while_waiting(self) -> None:
        """handle.cancel() at a barrier: BarrierResolved(by="cancel"), then a cancelled run."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(approval_graph(), {}) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.cancel()
        assert [type(e) for e in events[-2:]] == [gx.BarrierResolved, gx.GraphFailed]
        resolved, failed = events[-2:]
        assert isinstance(resolved, gx.BarrierResolved)
        assert (resolved.barrier_id, resolved.by) == ("gate#1", "cancel")
        assert isinstance(failed, gx.GraphFailed)
        assert failed.status == "cancelled"
        assert failed.error.type == "Cancelled"
        assert run.result.status == "cancelled"
        assert isinstance(run.result.error, gx.Cancelled)
        assert "gate" not in run.result.state
        with pytest.raises(gx.RunFinished):
            await run.handle.approve("gate#1")


# -- misuse is refused at the call ------------------------------------------------------------


class TestBadInput:
    @pytest.mark.parametrize(
        ("call", "error"),
        [
            (lambda h: h.approve("nope#1"), gx.NodeNotFound),
            (lambda h: h.decide_node("nope", gx.Approve()), gx.NodeNotFound),
            (lambda h: h.approve("draft#1"), gx.InvalidDecision),
            (lambda h: h.decide_node("send", gx.Approve()), gx.InvalidDecision),
            (lambda h: h.approve("gate"), gx.InvalidDecision),
            (lambda h: h.approve("gate#0"), gx.InvalidDecision),
            (lambda h: h.approve("gate#x"), gx.InvalidDecision),
            (lambda h: h.approve("gate#-1"), gx.InvalidDecision),
            (lambda h: h.approve("#1"), gx.InvalidDecision),
            (lambda h: h.decide_node("gate#1", gx.Approve()), gx.InvalidDecision),
            (lambda h: h.decide("gate#1", "approve"), gx.InvalidDecision),
        ],
        ids=[
            "unknown-id",
            "unknown-node",
            "not-a-barrier-id",
            "not-a-barrier-node",
            "bare-name",
            "occurrence-0",
            "occurrence-x",
            "occurrence-negative",
            "no-node",
            "wildcard-with-occurrence",
            "not-a-decision",
        ],
    )
    async def test_bad_decisions_are_refused_and_the_barrier_keeps_waiting(
        self, call: Callable[[gx.RunHandle], Any], error: type[gx.GraphError]
    ) -> None:
        """Each bad call raises at once; the waiting barrier is untouched and still decidable."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(approval_graph(), {}) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    with pytest.raises(error):
                        await call(run.handle)
                    assert run.handle.pending_barrier == "gate#1"
                    await run.handle.approve("gate#1")
        assert run.result.state["gate"] == record("approve")

    async def test_a_resolved_occurrence_is_refused_not_carried_over(self) -> None:
        """A decision for gate#1 after it resolved raises; gate#2 still waits for its own."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(loop_graph(2), LOOP_STATE) as run:
            async for event in run:
                events.append(event)
                if isinstance(event, gx.BarrierWaiting) and event.barrier_id == "gate#2":
                    with pytest.raises(gx.InvalidDecision, match="already resolved"):
                        await run.handle.reject("gate#1", "late")
                    await anyio.sleep(0.01)
                    assert run.handle.pending_barrier == "gate#2"
                    await run.handle.approve("gate#2")
                elif isinstance(event, gx.BarrierWaiting):
                    await run.handle.approve(event.barrier_id)
        assert [e.decision for e in of(events, gx.BarrierResolved)] == ["approve", "approve"]
        assert "late" not in str(run.result.state["log"])

    async def test_a_second_exact_decision_for_one_occurrence_is_refused(self) -> None:
        """Two decisions for gate#1 before it is reached: the second raises, the first is used."""
        events: list[gx.GraphEvent] = []
        async with gx.GraphExecutor().execute_stream(approval_graph(slow=0.02), {}) as run:
            await run.handle.approve("gate#1")
            with pytest.raises(gx.InvalidDecision, match="already has a decision"):
                await run.handle.reject("gate#1", "changed my mind")
            async for event in run:
                events.append(event)
        assert run.result.state["gate"] == record("approve")

    async def test_an_edit_that_does_not_fit_the_typed_state_is_refused(self) -> None:
        """An Edit with a wrong type or unknown key raises StateError; a valid one then works."""

        class Order(msgspec.Struct):
            amount: int = 0
            notes: Annotated[list[str], gx.reducers.append] = msgspec.field(default_factory=list)
            gate: dict[str, Any] | None = None

        graph = (
            gx.GraphBuilder("typed-edit", state=Order)
            .barrier("gate")
            .node("after", lambda s: None, inline=True)
            .edge("gate", "after")
            .start("gate")
            .end("after")
            .build()
        )
        async with gx.GraphExecutor().execute_stream(graph, Order(amount=1)) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    with pytest.raises(gx.StateError) as info:
                        await run.handle.decide("gate#1", gx.Edit({"amount": "lots"}))
                    assert info.value.key == "amount"
                    with pytest.raises(gx.StateError):
                        await run.handle.decide("gate#1", gx.Edit({"colour": "red"}))
                    with pytest.raises(gx.StateError):
                        await run.handle.decide_node("gate", gx.Edit({"amount": "lots"}))
                    await anyio.sleep(0.01)
                    assert run.handle.status == "waiting"
                    assert run.handle.pending_barrier == "gate#1"
                    await run.handle.decide("gate#1", gx.Edit({"amount": 7, "notes": "ok"}))
        assert run.result.state == Order(amount=7, notes=["ok"], gate=record("approve"))

    async def test_a_decision_for_a_finished_run_is_refused(self) -> None:
        """Once the run has ended, every decision raises RunFinished (in and after the block)."""
        async with gx.GraphExecutor().execute_stream(approval_graph(), {}) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.approve(event.barrier_id)
                elif isinstance(event, gx.GraphComplete):
                    with pytest.raises(gx.RunFinished):
                        await run.handle.approve("gate#2")
        with pytest.raises(gx.RunFinished):
            await run.handle.decide_node("gate", gx.Approve())
        with pytest.raises(gx.RunFinished):
            await run.handle.approve("gate#1")


# -- several runs, and execute() ---------------------------------------------------------------


async def test_two_waiting_runs_each_get_only_their_own_decisions() -> None:
    """Two runs waiting at once in one process: deciding one leaves the other waiting."""
    ex = gx.GraphExecutor()
    graph = approval_graph()
    b_waiting = anyio.Event()
    a_done = anyio.Event()
    results: dict[str, gx.GraphResult] = {}

    async def run_a() -> None:
        async with ex.execute_stream(graph, {}, trace_id="a") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await b_waiting.wait()
                    assert event.barrier_id == "gate#1"
                    await run.handle.reject("gate#1", "from a")
        results["a"] = run.result
        a_done.set()

    async def run_b() -> None:
        async with ex.execute_stream(graph, {}, trace_id="b") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    b_waiting.set()
                    await a_done.wait()
                    assert run.handle.status == "waiting"
                    assert run.handle.pending_barrier == "gate#1"
                    await run.handle.approve("gate#1")
        results["b"] = run.result

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_a)
            tg.start_soon(run_b)
    assert results["a"].state["gate"] == record("reject", "from a")
    assert results["b"].state["gate"] == record("approve")


class TestExecute:
    async def test_execute_refuses_a_graph_with_barriers_without_decisions(self) -> None:
        """execute() without decisions= raises InvalidGraph pointing at execute_stream."""
        with pytest.raises(gx.InvalidGraph, match="execute_stream"):
            await gx.GraphExecutor().execute(approval_graph(), {})

    async def test_execute_with_decisions_by_id(self) -> None:
        """decisions= keyed by barrier id, one per occurrence."""
        result = await gx.GraphExecutor().execute(
            loop_graph(2), LOOP_STATE, decisions={"gate#1": gx.Reject("r1"), "gate#2": gx.Approve()}
        )
        assert result.state["log"] == ["work1", "no1:r1", "work2", "yes2", "done"]
        assert result.status == "completed"

    async def test_execute_with_decisions_by_node_name(self) -> None:
        """decisions= keyed by node name: every occurrence; an id still wins for its own."""
        result = await gx.GraphExecutor().execute(
            loop_graph(3), LOOP_STATE, decisions={"gate": gx.Approve(), "gate#2": gx.Reject("x")}
        )
        assert result.state["log"] == [
            "work1",
            "yes1",
            "work2",
            "no2:x",
            "work3",
            "yes3",
            "done",
        ]

    async def test_execute_with_an_edit(self) -> None:
        """An Edit given up front is applied through the reducers."""
        result = await gx.GraphExecutor().execute(
            approval_graph(), {}, decisions={"gate": gx.Edit({"notes": ["x"]})}
        )
        assert result.state["notes"] == ["drafted", "x"]
        assert result.state["outcome"] == "sent"

    async def test_execute_fails_at_an_undecided_occurrence(self) -> None:
        """decisions= that miss an occurrence reached: InvalidGraph instead of waiting forever."""
        with pytest.raises(gx.InvalidGraph, match="gate#2"):
            await gx.GraphExecutor().execute(
                loop_graph(2), LOOP_STATE, decisions={"gate#1": gx.Approve()}
            )

    @pytest.mark.parametrize(
        ("decisions", "error"),
        [
            ({"nope": gx.Approve()}, gx.NodeNotFound),
            ({"nope#1": gx.Approve()}, gx.NodeNotFound),
            ({"draft": gx.Approve()}, gx.InvalidDecision),
            ({"gate#0": gx.Approve()}, gx.InvalidDecision),
        ],
    )
    async def test_execute_refuses_bad_decisions(
        self, decisions: dict[str, gx.Decision], error: type[gx.GraphError]
    ) -> None:
        """decisions= naming an unknown node, a non-barrier or a bad id raise before running."""
        with pytest.raises(error):
            await gx.GraphExecutor().execute(approval_graph(), {}, decisions=decisions)

    @pytest.mark.parametrize(
        ("decision", "error"),
        [("approve", gx.InvalidDecision), (gx.Edit({"amount": "lots"}), gx.StateError)],
        ids=["not-a-decision", "edit-does-not-fit"],
    )
    @pytest.mark.parametrize("streaming", [False, True], ids=["execute", "execute_stream"])
    async def test_decisions_up_front_are_checked_like_handle_calls(
        self, decision: Any, error: type[gx.GraphError], streaming: bool
    ) -> None:
        """A non-decision, or an Edit that does not fit the typed state, is refused at the call."""

        class Order(msgspec.Struct):
            amount: int = 0
            gate: dict[str, Any] | None = None

        graph = (
            gx.GraphBuilder("typed-upfront", state=Order)
            .barrier("gate")
            .node("after", lambda s: None, inline=True)
            .edge("gate", "after")
            .start("gate")
            .end("after")
            .build()
        )
        ex = gx.GraphExecutor()
        with pytest.raises(error):
            if streaming:
                async with ex.execute_stream(graph, Order(), decisions={"gate#1": decision}):
                    pytest.fail("the run should not start")
            else:
                await ex.execute(graph, Order(), decisions={"gate": decision})


# -- property: when a decision is sent does not change the outcome -----------------------------

KINDS = st.sampled_from(["approve", "reject", "edit"])


def make_decision(kind: str, amount: int, k: int) -> gx.Decision:
    """Decision number ``k`` of a generated schedule."""
    if kind == "approve":
        return gx.Approve()
    if kind == "reject":
        return gx.Reject(f"r{k}")
    return gx.Edit({"counter": amount, "log": [f"edit{k}"]})


def expected_state(n: int, plan: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """The final state the loop graph reaches under ``plan``, computed by hand."""
    log: list[str] = []
    counter = 0
    for k, (kind, amount) in enumerate(plan, start=1):
        log.append(f"work{k}")
        if kind == "edit":
            counter += amount
            log.append(f"edit{k}")
        log.append(f"no{k}:r{k}" if kind == "reject" else f"yes{k}")
    log.append("done")
    kind, _ = plan[-1]
    gate = record("reject", f"r{n}") if kind == "reject" else record("approve")
    return {"i": n, "counter": counter, "log": log, "gate": gate}


async def run_schedule(
    graph: gx.Graph,
    decisions: Sequence[gx.Decision],
    when: Sequence[int],
    order: Sequence[int],
    upfront: bool,
) -> tuple[Any, list[str], list[str]]:
    """Send decision k (for gate#k) at time ``when[k-1]``: 0 before the run starts, m < k when
    gate#m is reached (NodeStart), k when its own BarrierWaiting arrives; sends at the same
    time go in ``order``. Returns the final state, the waiting ids and the resolved ids."""
    n = len(decisions)
    rank = {k: order.index(k - 1) for k in range(1, n + 1)}

    def due(moment: int) -> list[int]:
        ks = [k for k in range(1, n + 1) if when[k - 1] == moment and moment < k]
        return sorted(ks, key=rank.__getitem__)

    up = {f"gate#{k}": decisions[k - 1] for k in due(0)} if upfront else None
    waiting: list[str] = []
    resolved: list[str] = []
    reached = 0
    async with gx.GraphExecutor(event_buffer=2).execute_stream(
        graph, LOOP_STATE, decisions=up
    ) as run:
        if not upfront:
            for k in due(0):
                await run.handle.decide(f"gate#{k}", decisions[k - 1])
        async for event in run:
            if isinstance(event, gx.NodeStart) and event.kind == "barrier":
                reached += 1
                for k in due(reached):
                    await run.handle.decide(f"gate#{k}", decisions[k - 1])
            elif isinstance(event, gx.BarrierWaiting):
                waiting.append(event.barrier_id)
                k = int(event.barrier_id.partition("#")[2])
                assert k == reached
                if when[k - 1] == k:
                    await run.handle.decide(event.barrier_id, decisions[k - 1])
            elif isinstance(event, gx.BarrierResolved):
                assert event.by == "human"
                resolved.append(event.barrier_id)
    assert run.result.status == "completed", run.result.error
    return run.result.state, waiting, resolved


@settings(max_examples=40, deadline=None)
@given(data=st.data())
async def test_decision_timing_never_changes_the_outcome(data: st.DataObject) -> None:
    """Decisions sent early, ahead of time in any order, or on arrival: same final state."""
    n = data.draw(st.integers(1, 4), label="n")
    plan = data.draw(st.lists(st.tuples(KINDS, st.integers(-5, 5)), min_size=n, max_size=n))
    when = [data.draw(st.integers(0, k), label=f"when gate#{k}") for k in range(1, n + 1)]
    order = data.draw(st.permutations(range(n)), label="order")
    upfront = data.draw(st.booleans(), label="upfront")
    decisions = [make_decision(kind, amount, k) for k, (kind, amount) in enumerate(plan, 1)]
    graph = loop_graph(n)
    ids = [f"gate#{k}" for k in range(1, n + 1)]

    with anyio.fail_after(5):
        reference, ref_waiting, ref_resolved = await run_schedule(
            graph, decisions, list(range(1, n + 1)), list(range(n)), False
        )
        state, waiting, resolved = await run_schedule(graph, decisions, when, order, upfront)

    assert ref_waiting == ref_resolved == resolved == ids
    assert reference == expected_state(n, plan)
    assert state == reference
    # Every decision sent on arrival was waited for; waits come in order, each at most once.
    assert [i for i in ids if i in waiting] == waiting
    assert {f"gate#{k}" for k in range(1, n + 1) if when[k - 1] == k} <= set(waiting)
