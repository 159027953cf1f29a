"""Workers (``gx.Worker``) and queued runs (``ex.start(..., queue=True)``) on real stores.

A queued run is claimed and driven by a worker as a fresh run (GraphStart not resumed, with the
queued input); a run that reaches a barrier with no decision leaves the worker's slot; a
decision from another executor makes a worker finish it; the concurrency limit holds; stopping
a worker hands its runs back at once; ``ex.recover()`` claims the same way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import graphexec as gx
from graphexec.checkpoint import CheckpointStore

from _resume_kit import Stores  # isort: skip  (a helper module next to this file)

pytestmark = pytest.mark.anyio


def approval(name: str = "approval", timeout: float | None = None) -> gx.Graph:
    """draft -> approve (a barrier) -> send."""
    return (
        gx.GraphBuilder(name)
        .node("draft", lambda s: {"text": f"draft of {s['topic']}"})
        .barrier("approve", timeout=timeout, default="reject")
        .node("send", lambda s: {"sent": s["approve"]["decision"] == "approve"})
        .edge("draft", "approve")
        .edge("approve", "send")
        .start("draft")
        .end("send")
        .build()
    )


def gated(name: str, gate: anyio.Event, inside: list[str] | None = None) -> gx.Graph:
    """One node that waits for ``gate`` (noting the runs inside it meanwhile)."""

    async def work(state: dict[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
        if inside is not None:
            inside.append(ctx.trace_id)
        try:
            await gate.wait()
        finally:
            if inside is not None:
                inside.remove(ctx.trace_id)
        return {"done": True}

    return gx.GraphBuilder(name).node("work", work).start("work").end("work").build()


async def until(
    store: CheckpointStore, trace_id: str, check: Callable[[gx.RunInfo], bool], within: float = 10
) -> gx.RunInfo:
    """Poll the runs row of ``trace_id`` until ``check`` holds."""
    deadline = time.monotonic() + within
    while True:
        info = await store.get_run(trace_id)
        if info is not None and check(info):
            return info
        if time.monotonic() > deadline:
            raise AssertionError(f"run {trace_id!r} never got there: {info}")
        await anyio.sleep(0.02)


async def eventually(check: Callable[[], bool], within: float = 10) -> None:
    """Wait until ``check()`` holds."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await anyio.sleep(0.01)
    raise AssertionError("never happened")


def status_is(*wanted: str) -> Callable[[gx.RunInfo], bool]:
    return lambda info: info.status in wanted


@asynccontextmanager
async def working(worker: gx.Worker) -> AsyncIterator[gx.Worker]:
    """``worker.run()`` in the background, stopped (gracefully) on the way out."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        try:
            yield worker
        finally:
            worker.stop()


async def events_of(ex: gx.GraphExecutor, trace_id: str) -> list[gx.GraphEvent]:
    out: list[gx.GraphEvent] = []
    with anyio.fail_after(10):
        async for event in ex.events(trace_id):
            out.append(event)
    return out


async def test_a_queued_run_is_driven_by_a_worker_as_a_fresh_run(stores: Stores) -> None:
    """queue=True records the run queued (no lease, ready now, the input kept); a worker on
    another store object drives it: GraphStart(resumed=False, input), the decision given up
    front used, a "start" record on top of the "queued" one, events readable anywhere."""
    graph = approval()
    ex = gx.GraphExecutor(store=stores.store)
    trace_id = await ex.start(
        graph, {"topic": "tea"}, trace_id="q-1", queue=True, decisions={"approve": gx.Approve()}
    )
    assert trace_id == "q-1"
    info = await stores.store.get_run("q-1")
    assert info is not None and info.status == "queued" and info.lease is None
    assert info.ready_at is not None and info.ready_at <= time.time()
    worker = gx.Worker(stores.other(), [graph], poll_interval=0.05)
    async with working(worker):
        await until(stores.store, "q-1", status_is("completed"))
    events = await events_of(ex, "q-1")
    start = events[0]
    assert isinstance(start, gx.GraphStart)
    assert (start.resumed, start.input, start.turn) == (False, {"topic": "tea"}, 1)
    assert isinstance(events[-1], gx.GraphComplete)
    assert events[-1].state["sent"] is True
    triggers = [(h.status, h.trigger) for h in await ex.history("q-1")]
    assert triggers[:2] == [("queued", "queued"), ("running", "start")]
    assert worker.stats.claimed == 1 and worker.stats.completed == 1
    assert worker.stats.running == 0


async def test_queue_on_a_completed_trace_queues_its_next_turn(stores: Stores) -> None:
    """The trace id of a completed trace queues the conversation's next turn (turn 2, its
    input through the reducers); the id of a queued one is refused with RunExists."""
    graph = approval()
    ex = gx.GraphExecutor(store=stores.store)
    decided = {"approve": gx.Approve()}
    await ex.execute(graph, {"topic": "tea"}, trace_id="conv", decisions=decided)
    await ex.start(graph, {"topic": "coffee"}, trace_id="conv", queue=True, decisions=decided)
    with pytest.raises(gx.RunExists, match="queued"):
        await ex.start(graph, {"topic": "milk"}, trace_id="conv", queue=True)
    async with working(gx.Worker(stores.other(), [graph], poll_interval=0.05)):
        await until(stores.store, "conv", status_is("completed"))
    events = [e for e in await events_of(ex, "conv") if isinstance(e, gx.GraphStart)]
    assert [(e.turn, e.resumed, e.input) for e in events] == [
        (1, False, {"topic": "tea"}),
        (2, False, {"topic": "coffee"}),
    ]
    state = await ex.get_state("conv")
    assert state.state["text"] == "draft of coffee" and state.turn == 2


async def test_a_barrier_frees_the_slot_and_a_decision_from_elsewhere_finishes_it(
    stores: Stores,
) -> None:
    """With one slot: a run that reaches a barrier is left "waiting" without a lease (its
    slot freed: a second run completes meanwhile); ex.decide from another executor makes
    the worker claim it again and finish it."""
    graph = approval()
    gate = anyio.Event()
    gate.set()
    other = gated("other", gate)
    ex = gx.GraphExecutor(store=stores.store)
    await ex.start(graph, {"topic": "tea"}, trace_id="w-1", queue=True)
    worker = gx.Worker(stores.other(), [graph, other], concurrency=1, poll_interval=0.05)
    async with working(worker):
        info = await until(stores.store, "w-1", status_is("waiting"))
        assert info.lease is None and info.pending_barrier == "approve#1"
        await eventually(lambda: worker.stats.waiting == 1 and not worker.running)
        await ex.start(other, {}, trace_id="w-2", queue=True)
        await until(stores.store, "w-2", status_is("completed"))
        assert (await stores.store.get_run("w-1")).status == "waiting"  # type: ignore[union-attr]
        decider = gx.GraphExecutor(store=stores.other(), graphs=[graph])
        await decider.decide("w-1", "approve#1", gx.Approve())
        await until(stores.store, "w-1", status_is("completed"))
    events = await events_of(ex, "w-1")
    waits = [e for e in events if isinstance(e, gx.BarrierWaiting)]
    resolved = [e for e in events if isinstance(e, gx.BarrierResolved)]
    assert [w.barrier_id for w in waits] == ["approve#1"]  # the resumed worker found it decided
    assert [(r.decision, r.by) for r in resolved] == [("approve", "human")]
    last = events[-1]
    assert isinstance(last, gx.GraphComplete) and last.state["sent"] is True
    assert worker.stats.claimed == 3 and worker.stats.completed == 2


async def test_a_barrier_deadline_makes_the_run_ready(stores: Stores) -> None:
    """A run left at a barrier with a timeout is claimed again once the deadline passes and
    takes the default."""
    graph = approval(timeout=0.3)
    ex = gx.GraphExecutor(store=stores.store)
    await ex.start(graph, {"topic": "tea"}, trace_id="t-1", queue=True)
    async with working(gx.Worker(stores.other(), [graph], poll_interval=0.05)):
        info = await until(stores.store, "t-1", status_is("waiting"))
        assert info.ready_at is not None and info.lease is None
        await until(stores.store, "t-1", status_is("completed"))
    state = await ex.get_state("t-1")
    assert state.state["approve"]["by"] == "timeout" and state.state["sent"] is False


async def test_the_concurrency_limit_holds(stores: Stores) -> None:
    """Five queued runs, concurrency 2: never more than two inside a node at once."""
    gate = anyio.Event()
    inside: list[str] = []
    graph = gated("slow", gate, inside)
    ex = gx.GraphExecutor(store=stores.store)
    for i in range(5):
        await ex.start(graph, {}, trace_id=f"c-{i}", queue=True)
    worker = gx.Worker(stores.other(), [graph], concurrency=2, poll_interval=0.05)
    most = 0
    async with working(worker):
        await eventually(lambda: len(inside) == 2)
        for _ in range(20):  # a while with both slots busy: nobody else gets in
            most = max(most, len(inside), worker.stats.running)
            await anyio.sleep(0.01)
        gate.set()
        for i in range(5):
            await until(stores.store, f"c-{i}", status_is("completed"))
    assert most == 2
    assert worker.stats.claimed == 5 and worker.stats.completed == 5


async def test_stop_hands_the_runs_back_at_once(stores: Stores) -> None:
    """worker.stop() records its runs "interrupted" with no lease; a second worker (an hour's
    lease_ttl: no expiry involved) finishes them right away."""
    gate = anyio.Event()
    inside: list[str] = []
    graph = gated("slow", gate, inside)
    ex = gx.GraphExecutor(store=stores.store)
    for i in range(2):
        await ex.start(graph, {}, trace_id=f"s-{i}", queue=True)
    first = gx.Worker(stores.other(), [graph], poll_interval=0.05, lease_ttl=3600)
    async with working(first):
        await eventually(lambda: len(inside) == 2)
    for i in range(2):
        info = await stores.store.get_run(f"s-{i}")
        assert info is not None and info.status == "interrupted" and info.lease is None
    assert first.stats.interrupted == 2 and first.stats.running == 0
    gate.set()
    second = gx.Worker(stores.other(), [graph], poll_interval=0.05, lease_ttl=3600)
    t0 = time.monotonic()
    async with working(second):
        for i in range(2):
            await until(stores.store, f"s-{i}", status_is("completed"))
    assert time.monotonic() - t0 < 5
    assert second.stats.completed == 2


async def test_recover_claims_queued_runs(stores: Stores) -> None:
    """ex.recover() claims as workers do: a queued run is driven in the executor's group."""
    graph = approval()
    ex = gx.GraphExecutor(store=stores.store)
    await ex.start(
        graph, {"topic": "tea"}, trace_id="r-1", queue=True, decisions={"approve": gx.Approve()}
    )
    async with gx.GraphExecutor(store=stores.other(), graphs=[graph]) as other:
        assert await other.recover() == ["r-1"]
        assert await other.recover() == []
        await until(stores.store, "r-1", status_is("completed"))


async def test_a_claimed_run_that_cannot_be_resumed_is_recorded_failed(stores: Stores) -> None:
    """A run whose graph lost the node it continues at is recorded failed (trigger
    "unresumable", the GraphChanged error) instead of being claimed over and over; the
    worker goes on with the next run."""
    old = approval()
    ex = gx.GraphExecutor(store=stores.store)
    await ex.start(old, {"topic": "tea"}, trace_id="u-1", queue=True)
    renamed = (
        gx.GraphBuilder("approval")
        .node("write", lambda s: {"text": "x"})
        .start("write")
        .end("write")
        .build()
    )
    worker = gx.Worker(stores.other(), [renamed], poll_interval=0.05)
    async with working(worker):
        info = await until(stores.store, "u-1", status_is("failed"))
        await ex.start(renamed, {}, trace_id="u-2", queue=True)
        await until(stores.store, "u-2", status_is("completed"))
    assert info.lease is None
    state = await ex.get_state("u-1")
    assert state.error is not None and state.error.type == "GraphChanged"
    assert (await ex.history("u-1"))[-1].trigger == "unresumable"
    assert worker.stats.skipped == 1 and worker.stats.completed == 1


async def test_bad_worker_arguments_are_refused() -> None:
    graph = approval()
    store = gx.MemoryStore()
    with pytest.raises(ValueError, match="concurrency"):
        gx.Worker(store, [graph], concurrency=0)
    with pytest.raises(ValueError, match="poll_interval"):
        gx.Worker(store, [graph], poll_interval=0)
    with pytest.raises(ValueError, match="graphs"):
        gx.Worker(store, [])
    with pytest.raises(gx.StoreRequired):
        await gx.GraphExecutor().start(graph, {}, queue=True)
    worker = gx.Worker(store, [graph], poll_interval=0.01)
    async with working(worker):
        pass
    with pytest.raises(RuntimeError, match="already run"):
        await worker.run()


async def test_a_barrier_inside_a_subgraph_frees_the_slot_too(stores: Stores) -> None:
    """A child run's barrier: the worker leaves once the child waits; the decision for its
    path id ("sub/approve#1") brings the run back and it completes."""
    parent = (
        gx.GraphBuilder("parent")
        .subgraph("sub", approval("child"), output=["sent"])
        .start("sub")
        .end("sub")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store, graphs=[parent])
    await ex.start(parent, {"topic": "tea"}, trace_id="p-1", queue=True)
    worker = gx.Worker(stores.other(), [parent], poll_interval=0.05, decision_poll_interval=0.05)
    async with working(worker):
        info = await until(stores.store, "p-1", status_is("waiting"))
        assert info.pending_barrier == "sub/approve#1"
        await eventually(lambda: worker.stats.waiting == 1 and not worker.running)
        assert (await stores.store.get_run("p-1")).lease is None  # type: ignore[union-attr]
        await ex.decide("p-1", "sub/approve#1", gx.Approve())
        await until(stores.store, "p-1", status_is("completed"))
    assert (await ex.get_state("p-1")).state["sent"] is True


async def test_async_durability_and_cancelling_run(stores: Stores) -> None:
    """With durability="async" a run still leaves at its barrier with the wait committed;
    cancelling worker.run() is as graceful as stop(): the run in hand is interrupted."""
    gate = anyio.Event()
    inside: list[str] = []
    slow = gated("slow", gate, inside)
    graph = approval()
    ex = gx.GraphExecutor(store=stores.store)
    await ex.start(graph, {"topic": "tea"}, trace_id="a-1", queue=True)
    await ex.start(slow, {}, trace_id="a-2", queue=True)
    worker = gx.Worker(
        stores.other(),
        [graph, slow],
        poll_interval=0.05,
        policy=gx.CheckpointPolicy(durability="async"),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)
        await until(stores.store, "a-1", status_is("waiting"))
        await eventually(lambda: inside == ["a-2"])
        tg.cancel_scope.cancel()
    info = await stores.store.get_run("a-2")
    assert info is not None and info.status == "interrupted" and info.lease is None
    assert worker.stats.waiting == 1 and worker.stats.interrupted == 1


async def test_a_decision_while_the_leaving_driver_winds_down_is_not_lost(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decision that lands while the driver that left the run waiting is still known as
    live here (widened to 0.3 s): the worker's claim waits for that driver and drives the run,
    instead of giving the claim back (which left the run waiting with its decision unread)."""
    from graphexec._manager import RunManager

    async def slow_drive(self: RunManager, driver: Any, *, task_status: Any) -> None:
        """RunManager.drive, with the driver still known as live for 0.3 s after it ended."""
        trace_id = driver.trace_id
        self.live[trace_id] = driver
        try:
            await driver.main(task_status=task_status)
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.3)
        finally:
            if self.live.get(trace_id) is driver:
                del self.live[trace_id]

    monkeypatch.setattr(RunManager, "drive", slow_drive)
    graph = approval()
    ex = gx.GraphExecutor(store=stores.store)
    await ex.start(graph, {"topic": "tea"}, trace_id="l-1", queue=True)
    async with working(gx.Worker(stores.other(), [graph], poll_interval=0.05)):
        await until(stores.store, "l-1", status_is("waiting"))
        await ex.decide("l-1", "approve#1", gx.Approve())
        await until(stores.store, "l-1", status_is("completed"))


async def test_a_node_paused_by_its_failure_frees_the_slot(stores: Stores) -> None:
    """on_failure="pause" under a worker: the failed node's wait is left like a barrier's;
    an operator's Approve (from another executor) retries it in a worker, and it succeeds."""
    calls: list[int] = []

    def flaky(state: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("the mail server is down")
        return {"sent": True}

    graph = (
        gx.GraphBuilder("mail")
        .node("send", flaky, inline=True, on_failure="pause")
        .start("send")
        .end("send")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store, graphs=[graph])
    await ex.start(graph, {}, trace_id="m-1", queue=True)
    worker = gx.Worker(stores.other(), [graph], poll_interval=0.05)
    async with working(worker):
        info = await until(stores.store, "m-1", status_is("waiting"))
        assert info.pending_barrier == "send#1" and info.lease is None
        await eventually(lambda: worker.stats.waiting == 1 and not worker.running)
        await ex.decide("m-1", "send#1", gx.Approve())
        await until(stores.store, "m-1", status_is("completed"))
    assert len(calls) == 2 and (await ex.get_state("m-1")).state["sent"] is True


async def test_a_decision_stored_before_the_barrier_is_used_once(stores: Stores) -> None:
    """A decision submitted while the run is queued: the waiting save finds it in its own
    transaction (which also makes the run ready: a claim may race the driver that found it);
    either way the run completes once, with that decision."""
    graph = approval()
    ex = gx.GraphExecutor(store=stores.store, graphs=[graph])
    for i in range(4):
        await ex.start(graph, {"topic": "tea"}, trace_id=f"e-{i}", queue=True)
        await ex.decide(f"e-{i}", "approve#1", gx.Reject("no"))
    worker = gx.Worker(stores.other(), [graph], concurrency=8, poll_interval=0.05)
    async with working(worker):
        for i in range(4):
            await until(stores.store, f"e-{i}", status_is("completed"))
    for i in range(4):
        state = (await ex.get_state(f"e-{i}")).state
        assert state["approve"] == {"decision": "reject", "reason": "no", "by": "human"}
        assert state["sent"] is False
    assert worker.stats.completed == 4 and worker.stats.failed == 0
