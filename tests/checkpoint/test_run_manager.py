"""The run manager and the event log in one process, against every store: ``async with
GraphExecutor``, ``start``, ``decide``, ``cancel``, ``recover``, ``events`` and event ids."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

import graphexec as gx
from graphexec._eventcodec import read_events
from graphexec.checkpoint import CheckpointStore
from graphexec.checkpoint._leases import this_process
from graphexec.checkpoint._record import EventBatch, Lease


def approval(calls: list[str] | None = None, *, hang: anyio.Event | None = None) -> gx.Graph:
    """``draft -> approve (barrier) -> send``; ``draft`` emits two tokens."""

    async def draft(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
        await ctx.emit("Hel")
        await ctx.emit("lo")
        if hang is not None:
            hang.set()
            await anyio.sleep_forever()
        return {"text": "Hello"}

    async def send(state: Mapping[str, Any]) -> dict[str, Any]:
        if calls is not None:
            calls.append("send")
        return {"sent": True}

    return (
        gx.GraphBuilder("approval")
        .node("draft", draft)
        .barrier("approve", prompt=lambda s: {"text": s["text"]})
        .node("send", send, side_effects=True)
        .edge("draft", "approve")
        .edge("approve", "send")
        .start("draft")
        .end("send")
        .build()
    )


async def tail(
    ex: gx.GraphExecutor, trace_id: str, after: int | None = None
) -> list[gx.GraphEvent]:
    with anyio.fail_after(10):
        return [e async for e in ex.events(trace_id, after=after)]


class TestStart:
    async def test_start_drives_a_run_without_a_consumer(self, store: CheckpointStore) -> None:
        """start() returns the trace id once the run is in the store; the run goes on, waits,
        takes ex.decide, and its tail ends with GraphComplete."""
        graph = approval()
        async with gx.GraphExecutor(store=store, graphs=[graph]) as ex:
            trace_id = await ex.start(graph, {}, trace_id="t1")
            assert trace_id == "t1"
            assert (await store.get_run("t1")) is not None
            seen: list[gx.GraphEvent] = []
            with anyio.fail_after(10):
                async for event in ex.events("t1"):
                    seen.append(event)
                    if isinstance(event, gx.BarrierWaiting):
                        await ex.decide("t1", event.barrier_id, gx.Approve())
        assert isinstance(seen[-1], gx.GraphComplete)
        assert [e.data for e in seen if isinstance(e, gx.Custom)] == ["Hel", "lo"]
        ids = [e.event_id for e in seen]
        assert ids == [(1 << 32) | n for n in range(1, len(seen) + 1)]
        # What was recorded is what the live tail saw.
        assert await tail(gx.GraphExecutor(store=store), "t1") == seen

    async def test_start_needs_the_async_with_block(self, store: CheckpointStore) -> None:
        """start() outside `async with` says what to do."""
        with pytest.raises(gx.GraphError, match="async with gx.GraphExecutor"):
            await gx.GraphExecutor(store=store).start(approval())

    async def test_leaving_the_block_interrupts_and_recover_finishes(
        self, store: CheckpointStore
    ) -> None:
        """Shutdown records a working run as "interrupted" (not "cancelled") and ends its tail
        with GraphInterrupted; recover() in a new executor resumes it; ids keep increasing."""
        started = anyio.Event()
        async with gx.GraphExecutor(store=store) as ex:
            await ex.start(approval(hang=started), {}, trace_id="t2")
            await started.wait()
        info = await store.get_run("t2")
        assert info is not None and info.status == "interrupted"
        assert info.lease is None  # the interrupt checkpoint released it
        found = await gx.GraphExecutor(store=store).runs(status="interrupted")
        assert [r.trace_id for r in found] == ["t2"]
        before = await tail(gx.GraphExecutor(store=store), "t2")
        assert isinstance(before[-1], gx.GraphInterrupted)

        graph = approval()
        async with gx.GraphExecutor(store=store, graphs=[graph]) as ex:
            assert await ex.recover() == ["t2"]
            assert await ex.recover() == []  # already driven here
            after: list[gx.GraphEvent] = []
            with anyio.fail_after(10):
                async for event in ex.events("t2", after=before[-1].event_id):
                    after.append(event)
                    if isinstance(event, gx.BarrierWaiting):
                        await ex.decide("t2", event.barrier_id, gx.Approve())
        assert after[0].event_id > before[-1].event_id
        assert isinstance(after[-1], gx.GraphComplete)
        assert (await store.get_run("t2")).status == "completed"  # type: ignore[union-attr]
        everything = await tail(gx.GraphExecutor(store=store), "t2")
        assert everything == before + after

    async def test_a_waiting_run_stays_waiting_at_shutdown(self, store: CheckpointStore) -> None:
        """A run waiting at a barrier when the block ends stays "waiting"; recover() leaves it
        alone until its decision arrives, then finishes it."""
        calls: list[str] = []
        graph = approval(calls)
        async with gx.GraphExecutor(store=store, graphs=[graph]) as ex:
            await ex.start(graph, {}, trace_id="t3")
            with anyio.fail_after(10):
                async for event in ex.events("t3"):
                    if isinstance(event, gx.BarrierWaiting):
                        break
        assert (await store.get_run("t3")).status == "waiting"  # type: ignore[union-attr]
        async with gx.GraphExecutor(store=store, graphs=[graph]) as ex:
            assert await ex.recover() == []
            await ex.decide("t3", "approve#1", gx.Approve())  # no driver: through the store
            assert await ex.recover() == ["t3"]
            events = await tail(ex, "t3")
        assert isinstance(events[-1], gx.GraphComplete)
        assert calls == ["send"]


class TestCancel:
    async def test_cancel_a_live_run(self, store: CheckpointStore) -> None:
        """ex.cancel on a run this process drives cancels it; its tail ends with GraphFailed."""
        started = anyio.Event()
        async with gx.GraphExecutor(store=store) as ex:
            await ex.start(approval(hang=started), {}, trace_id="c1")
            await started.wait()
            await ex.cancel("c1")
            events = await tail(ex, "c1")
        assert isinstance(events[-1], gx.GraphFailed) and events[-1].status == "cancelled"
        assert (await store.get_run("c1")).status == "cancelled"  # type: ignore[union-attr]

    async def test_cancel_a_run_no_one_drives(self, store: CheckpointStore) -> None:
        """A waiting run with no driver is recorded cancelled at once, with a GraphFailed event
        for its tail; a resume then asks again at the same barrier."""
        graph = approval()
        ex = gx.GraphExecutor(store=store)
        async with ex.execute_stream(graph, {}, trace_id="c2") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        await ex.cancel("c2")
        state = await ex.get_state("c2")
        assert (state.status, state.pending_barrier is not None) == ("cancelled", True)
        events = await tail(ex, "c2")
        assert isinstance(events[-1], gx.GraphFailed) and events[-1].status == "cancelled"
        assert events[-1].event_id >> 32 == 2  # its own segment
        await ex.cancel("c2")  # already cancelled: nothing to do

    async def test_cancel_request_through_the_store(self, store: CheckpointStore) -> None:
        """A run driven by another executor (its lease held) gets a request it takes at its
        next poll."""
        started = anyio.Event()
        async with gx.GraphExecutor(store=store, decision_poll_interval=0.02) as driver:
            await driver.start(approval(hang=started), {}, trace_id="c3")
            await started.wait()
            await gx.GraphExecutor(store=store).cancel("c3")  # not live there: the store
            events = await tail(driver, "c3")
        assert isinstance(events[-1], gx.GraphFailed) and events[-1].status == "cancelled"

    async def test_cancel_unknown_and_completed_runs(self, store: CheckpointStore) -> None:
        """Cancelling an unknown trace is RunNotFound; a completed one RunFinished."""
        ex = gx.GraphExecutor(store=store)
        with pytest.raises(gx.RunNotFound):
            await ex.cancel("nope")
        await ex.execute(approval(), {}, trace_id="done", decisions={"approve": gx.Approve()})
        with pytest.raises(gx.RunFinished):
            await ex.cancel("done")


class TestEventLog:
    async def test_execute_records_its_events(self, store: CheckpointStore) -> None:
        """A run driven by execute() (no consumer) records its events too."""
        ex = gx.GraphExecutor(store=store)
        await ex.execute(approval(), {}, trace_id="e1", decisions={"approve": gx.Approve()})
        events = await tail(ex, "e1")
        assert isinstance(events[0], gx.GraphStart) and isinstance(events[-1], gx.GraphComplete)
        assert any(isinstance(e, gx.CheckpointSaved) for e in events)

    async def test_stream_consumer_and_record_agree(self, store: CheckpointStore) -> None:
        """The consumer of execute_stream and a later reader see the same events and ids; a
        reader that reconnects with after= gets exactly the rest."""
        ex = gx.GraphExecutor(store=store)
        seen, _ = await gx.testing.collect(
            ex, approval(), {}, trace_id="e2", decide=lambda e: gx.Approve()
        )
        assert await tail(ex, "e2") == seen
        assert await tail(ex, "e2", after=seen[4].event_id) == seen[5:]
        assert await tail(ex, "e2", after=seen[-1].event_id) == []

    async def test_custom_events_can_be_left_out_of_the_record(
        self, store: CheckpointStore
    ) -> None:
        """record_custom_events=False: the consumer gets the tokens, the record does not."""
        ex = gx.GraphExecutor(store=store, record_custom_events=False)
        seen, _ = await gx.testing.collect(
            ex, approval(), {}, trace_id="e3", decide=lambda e: gx.Approve()
        )
        assert any(isinstance(e, gx.Custom) for e in seen)
        assert await tail(ex, "e3") == [e for e in seen if not isinstance(e, gx.Custom)]

    async def test_no_record_without_record_events(self, store: CheckpointStore) -> None:
        """record_events=False records nothing."""
        ex = gx.GraphExecutor(store=store, record_events=False)
        await ex.execute(approval(), {}, trace_id="e4", decisions={"approve": gx.Approve()})
        assert await store.events_after("e4", 0) == []

    async def test_prune_deletes_the_events(self, store: CheckpointStore) -> None:
        """prune() removes a run's events with it."""
        ex = gx.GraphExecutor(store=store)
        await ex.execute(approval(), {}, trace_id="e5", decisions={"approve": gx.Approve()})
        assert await store.events_after("e5", 0)
        assert await store.prune(older_than=gx.checkpoint._record.now() + 1) == ["e5"]
        assert await store.events_after("e5", 0) == []

    async def test_unknown_trace(self, store: CheckpointStore) -> None:
        """events() of a trace the store does not have is RunNotFound."""
        with pytest.raises(gx.RunNotFound):
            await tail(gx.GraphExecutor(store=store), "nope")


class TestStoreContract:
    async def test_segments_increase_per_trace(self, store: CheckpointStore) -> None:
        """next_event_segment hands out 1, 2, 3 per trace."""
        assert [await store.next_event_segment("a") for _ in range(3)] == [1, 2, 3]
        assert await store.next_event_segment("b") == 1

    async def test_events_after_returns_batches_past_the_id(self, store: CheckpointStore) -> None:
        """Batches whose last id is past ``after``, in id order."""
        lease = Lease("w", 30.0, (await store.acquire_lease("t", Lease("w", 30.0))).token)
        for first, last in ((1, 3), (4, 4), (5, 9)):
            await store.append_events(
                "t", EventBatch(first_id=first, last_id=last, data=b"x"), lease=lease
            )
        assert [b.first_id for b in await store.events_after("t", 0)] == [1, 4, 5]
        assert [b.first_id for b in await store.events_after("t", 4)] == [5]
        assert [b.first_id for b in await store.events_after("t", 3)] == [4, 5]
        assert await store.events_after("t", 9) == []
        assert await store.events_after("other", 0) == []


def _batch(n: int) -> EventBatch:
    return EventBatch(first_id=(1 << 32) | n, last_id=(1 << 32) | n, data=b"\x90")


class TestEventFencing:
    """Event appends are fenced by the lease's token, like checkpoint writes."""

    async def test_append_needs_the_writers_token(self, store: CheckpointStore) -> None:
        """The holder appends; after it released (parked at a barrier, or ended) it still
        may, until someone else takes the lease; then LeaseLost and nothing is written. A
        writer that never acquired (token 0) records nothing."""
        host, pid, started = this_process()
        a = Lease("owner-a", 30.0, 0, host, pid, started)
        a = Lease("owner-a", 30.0, (await store.acquire_lease("f", a)).token, host, pid, started)
        await store.append_events("f", _batch(1), lease=a)
        await store.release_lease("f", a.owner)  # parked
        await store.append_events("f", _batch(2), lease=a)
        b = Lease("owner-b", 30.0, 0, host, pid, started)
        b = Lease("owner-b", 30.0, (await store.acquire_lease("f", b)).token, host, pid, started)
        assert b.token == a.token + 1
        with pytest.raises(gx.LeaseLost, match="events not recorded"):
            await store.append_events("f", _batch(3), lease=a)
        await store.release_lease("f", b.owner)  # released by b: a's token is still stale
        with pytest.raises(gx.LeaseLost):
            await store.append_events("f", _batch(3), lease=a)
        with pytest.raises(gx.LeaseLost):
            await store.append_events("f", _batch(3), lease=Lease("tool", 30.0))
        await store.append_events("f", _batch(4), lease=b)
        assert [x.last_id & 0xFFFFFFFF for x in await store.events_after("f", 0)] == [1, 2, 4]

    async def test_a_driver_taken_over_records_no_more_events(self, store: CheckpointStore) -> None:
        """A driver whose lease another executor took (take_over=True) while its node ran:
        its later events (the node's end, its failure) are not recorded; the new owner's are."""
        entered = anyio.Event()
        gate = anyio.Event()

        async def work(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
            await ctx.emit("tick")
            entered.set()
            await gate.wait()
            await ctx.emit("late")  # between checkpoints: the flusher's append is fenced
            await anyio.sleep(0.3)
            return {"n": 1}

        graph = (
            gx.GraphBuilder("fenced")
            .node("work", work)
            .node("done", lambda s: {"ok": True})
            .edge("work", "done")
            .start("work")
            .end("done")
            .build()
        )
        first: list[gx.GraphEvent] = []
        async with gx.GraphExecutor(store=store, lease_ttl=30, event_flush_interval=0.01) as ex1:
            await ex1.start(graph, {}, trace_id="f2")
            with anyio.fail_after(10):
                await entered.wait()
                for _ in range(1000):  # the first driver's tick is recorded
                    if any(isinstance(e, gx.Custom) for e in await read_events(store, "f2", 0)):
                        break
                    await anyio.sleep(0.01)
            ex2 = gx.GraphExecutor(store=store)
            async with ex2.resume_from(graph, "f2", take_over=True) as run:
                first = await read_events(store, "f2", 0)
                gate.set()  # both drivers go on; only ex2 holds the lease
                with anyio.fail_after(10):
                    async for _ in run:
                        pass
            assert run.result.status == "completed"
        # Leaving ex1's block waited for its driver (failed with LeaseLost, or interrupted).
        recorded = await read_events(store, "f2", 0)
        by_segment = {e.event_id >> 32 for e in recorded}
        assert by_segment == {1, 2}
        # The first driver recorded nothing after the takeover (its NodeEnd, its GraphFailed).
        assert [e for e in recorded if e.event_id >> 32 == 1] == [
            e for e in first if e.event_id >> 32 == 1
        ]
        assert not any(
            isinstance(e, (gx.NodeEnd, gx.GraphFailed)) or getattr(e, "data", None) == "late"
            for e in recorded
            if e.event_id >> 32 == 1
        )
        assert any(getattr(e, "data", None) == "late" for e in recorded if e.event_id >> 32 == 2)
        assert isinstance(recorded[-1], gx.GraphComplete)

    async def test_barrier_waiting_is_recorded_while_parked(self, store: CheckpointStore) -> None:
        """The waiting checkpoint parks the lease; BarrierWaiting, delivered after it, is
        recorded anyway (the parked driver's token still stands) before the consumer sees it."""
        ex = gx.GraphExecutor(store=store)
        async with ex.execute_stream(approval(), {}, trace_id="f3") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    info = await store.get_run("f3")
                    assert info is not None and info.lease is None  # parked
                    recorded = await read_events(store, "f3", 0)
                    assert recorded[-1] == event
                    await run.handle.approve(event.barrier_id)
        assert run.result.status == "completed"
        assert isinstance((await tail(ex, "f3"))[-1], gx.GraphComplete)


class TestCancelWithOwners:
    async def test_no_request_for_a_dead_or_parked_owner(self, store: CheckpointStore) -> None:
        """request_cancel records a request only while a live driver holds the lease: a lease
        whose holder on this host is dead, or a released (parked) one, gets none; ex.cancel
        then records the run cancelled itself."""
        host, pid, started = this_process()
        ex = gx.GraphExecutor(store=store)
        async with ex.execute_stream(approval(), {}, trace_id="k1") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        live = Lease("alive", 30.0, 0, host, pid, started)
        await store.acquire_lease("k1", live)
        assert await store.request_cancel("k1") is True
        assert await store.take_cancel_request("k1") is True
        await store.release_lease("k1", "alive")
        assert await store.request_cancel("k1") is False  # parked / released: no driver
        dead = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
        gone = Lease("dead", 3600.0, 0, host, int(dead.stdout.decode()), "x")
        await store.acquire_lease("k1", gone)
        assert await store.request_cancel("k1") is False  # its process is gone
        await ex.cancel("k1")  # marks it cancelled, taking the dead owner's lease
        state = await ex.get_state("k1")
        assert state.status == "cancelled"
        assert await store.take_cancel_request("k1") is False


class TestDecideChecks:
    async def test_decide_through_the_store_uses_the_one_check(
        self, store: CheckpointStore
    ) -> None:
        """ex.decide on a run no one drives here checks the decision with check_request (the
        graph from graphs=: a name that is no node of it is NodeNotFound) before the store's
        own check; a valid one is stored and the run takes it on recover()."""
        graph = approval()
        ex = gx.GraphExecutor(store=store, graphs=[graph])
        async with ex.execute_stream(graph, {}, trace_id="d1") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        with pytest.raises(gx.NodeNotFound):
            await ex.decide("d1", "nosuch#1", gx.Approve())
        with pytest.raises(gx.InvalidDecision):
            await ex.decide("d1", "draft#1", gx.Approve())  # not a barrier
        with pytest.raises(gx.InvalidDecision):
            await ex.decide("d1", "approve", gx.Approve())  # a bare name: every_occurrence only
        await ex.decide("d1", "approve#1", gx.Approve())
        async with ex:
            assert await ex.recover() == ["d1"]
            events = await tail(ex, "d1")
        assert isinstance(events[-1], gx.GraphComplete)

    async def test_recover_sees_a_decision_for_every_occurrence(
        self, store: CheckpointStore
    ) -> None:
        """A waiting run whose node got a decision for every occurrence (stored "approve#*")
        is recovered: the decision arrived."""
        graph = approval()
        ex = gx.GraphExecutor(store=store, graphs=[graph])
        async with ex.execute_stream(graph, {}, trace_id="d2") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        async with ex:
            assert await ex.recover() == []
            await store.submit_decision("d2", "approve", gx.Approve(), every_occurrence=True)
            assert await ex.recover() == ["d2"]
            events = await tail(ex, "d2")
        assert isinstance(events[-1], gx.GraphComplete)


class TestCancelAWaitingRun:
    async def test_a_parked_driver_learns_of_a_cancel_recorded_elsewhere(
        self, store: CheckpointStore
    ) -> None:
        """A run waiting at a barrier has parked its lease: ex.cancel from another executor
        records it cancelled itself; the waiting driver sees that record at its next poll and
        ends its stream with GraphFailed(cancelled), writing nothing over the record."""
        ex1 = gx.GraphExecutor(store=store, decision_poll_interval=0.02)
        seen: list[gx.GraphEvent] = []
        with anyio.fail_after(10):
            async with ex1.execute_stream(approval(), {}, trace_id="w1") as run:
                async for event in run:
                    seen.append(event)
                    if isinstance(event, gx.BarrierWaiting):
                        await gx.GraphExecutor(store=store).cancel("w1")
        assert isinstance(seen[-1], gx.GraphFailed) and seen[-1].status == "cancelled"
        assert run.result.status == "cancelled"
        history = await ex1.history("w1")
        assert [h.trigger for h in history][-1] == "cancel" and history[-1].status == "cancelled"
        recorded = await tail(ex1, "w1")
        failed = [e for e in recorded if isinstance(e, gx.GraphFailed)]
        assert len(failed) == 1 and failed[0].event_id >> 32 == 2  # the canceller's record
