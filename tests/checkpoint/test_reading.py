"""Reading runs back: get_state, history, runs() and prune.

Store-independent behaviour runs on MemoryStore and SQLiteStore (the ``stores`` fixture in
conftest.py); "another process" is a second SQLiteStore on the same file (MemoryStore: the same
object), and "a restart" closes the SQLiteStore and opens a new one on the same path. Shared
graphs and helpers: ``_resume_kit.py``.
"""

from __future__ import annotations

import time

import msgspec
import pytest

import graphexec as gx

from _resume_kit import (  # isort: skip
    Stores,
    PAD,
    chain,
    approval,
    APPROVED,
    consume,
    leave_at_barrier,
    leave_at_node,
    saved,
)


class TestGetState:
    """get_state: the run as last checkpointed."""

    async def test_running_run(self, stores: Stores) -> None:
        """While node b runs, get_state shows the checkpoint after a."""
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        graph = chain(delays={"b": 30.0})
        async with ex.execute_stream(graph, {"log": []}, trace_id="t-run") as run:
            async for event in run:
                if isinstance(event, gx.NodeStart) and event.node == "b":
                    state = await ex.get_state("t-run")
                    break
        assert (state.status, state.step, state.next_node, state.pending_barrier) == (
            "running",
            1,
            "b",
            None,
        )
        assert state.state == {"log": ["a"]}
        assert (state.trace_id, state.graph_name, state.graph_hash) == (
            "t-run",
            "chain",
            graph.hash,
        )

    async def test_waiting_and_completed_run_and_after_a_restart(self, stores: Stores) -> None:
        """get_state of a waiting run shows its barrier; of a completed one, the final state."""
        graph = approval()
        ex = stores.executor()
        async with ex.execute_stream(graph, trace_id="t-gs") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    waiting = await ex.get_state("t-gs")
                    await run.handle.approve(event.barrier_id)
        assert (waiting.status, waiting.step, waiting.next_node) == ("waiting", 2, "approve")
        assert waiting.pending_barrier == gx.BarrierInfo(
            barrier_id="approve#1", node="approve", prompt={"text": "hello"}, deadline=None
        )
        assert waiting.state == {"draft": "hello"}
        wire = msgspec.json.decode(msgspec.json.encode(waiting))
        assert wire["pending_barrier"] == {
            "barrier_id": "approve#1",
            "node": "approve",
            "prompt": {"text": "hello"},
            "deadline": None,
        }
        assert (wire["status"], wire["error"], wire["turn"]) == ("waiting", None, 1)
        assert msgspec.json.decode(msgspec.json.encode(waiting), type=gx.RunState) == waiting

        done = await ex.get_state("t-gs")
        assert (done.status, done.step, done.next_node, done.pending_barrier) == (
            "completed",
            3,
            None,
            None,
        )
        assert (
            done.state == run.result.state == {"draft": "hello", "approve": APPROVED, "sent": True}
        )
        assert done.seq == (await ex.history("t-gs"))[-1].seq

        again = await stores.executor(await stores.reopen()).get_state("t-gs")
        assert again == done


class TestHistory:
    """history: every checkpoint, oldest first."""

    async def test_lists_checkpoints_oldest_first(self, stores: Stores) -> None:
        """seq, kind, step, next node, trigger and bytes, matching the CheckpointSaved events."""
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        async with ex.execute_stream(chain(), {"pad": PAD, "log": []}, trace_id="t-h") as run:
            events = await consume(run)
        history = await ex.history("t-h")
        assert [(h.seq, h.kind, h.step, h.next_node, h.trigger, h.status) for h in history] == [
            (1, "base", 0, "a", "start", "running"),
            (2, "delta", 1, "b", "step", "running"),
            (3, "delta", 2, "c", "step", "running"),
            (4, "delta", 3, None, "completion", "completed"),
        ]
        assert [(h.seq, h.kind, h.bytes) for h in history] == [
            (e.seq, e.kind, e.bytes) for e in saved(events)
        ]
        assert history[0].bytes > len(PAD) > max(h.bytes for h in history[1:])
        stamps = [h.created_at for h in history]
        assert stamps == sorted(stamps)
        assert await stores.executor(await stores.reopen()).history("t-h") == history


class TestRunsAndPrune:
    """The runs index, and pruning it."""

    async def _three_runs(self, ex: gx.GraphExecutor) -> None:
        await ex.execute(chain(), trace_id="t-done")
        await leave_at_barrier(ex, approval(), "t-wait")
        await leave_at_node(ex, chain(delays={"b": 30.0}), "t-cancel", "b")

    async def test_runs_by_status(self, stores: Stores) -> None:
        """runs(status=...) lists the runs in that status, most recently updated first."""
        ex = stores.executor()
        await self._three_runs(ex)
        assert [r.trace_id for r in await ex.runs()] == ["t-cancel", "t-wait", "t-done"]
        assert [r.trace_id for r in await ex.runs(status="completed")] == ["t-done"]
        assert [r.trace_id for r in await ex.runs(status="waiting")] == ["t-wait"]
        assert [r.trace_id for r in await ex.runs(status="cancelled")] == ["t-cancel"]
        assert await ex.runs(status="failed") == []
        with pytest.raises(ValueError, match="unknown run status 'bogus'.*interrupted"):
            await ex.runs(status="bogus")
        assert ex.store is not None
        with pytest.raises(ValueError, match="unknown run status"):
            await ex.store.runs(status="Completed")
        assert [r.trace_id for r in await ex.runs(graph_name="approval")] == ["t-wait"]
        waiting = (await ex.runs(status="waiting"))[0]
        assert (waiting.pending_barrier, waiting.next_node) == ("approve#1", "approve")

    async def test_prune_never_removes_waiting_runs(self, stores: Stores) -> None:
        """prune removes finished runs; a waiting run stays and still resumes."""
        ex = stores.executor()
        await self._three_runs(ex)
        with pytest.raises(ValueError, match="waiting"):
            await stores.store.prune(older_than=time.time() + 60, statuses=("waiting",))
        gone = await stores.store.prune(
            older_than=time.time() + 60, statuses=("completed", "failed", "cancelled")
        )
        assert sorted(gone) == ["t-cancel", "t-done"]
        assert [r.trace_id for r in await ex.runs()] == ["t-wait"]
        with pytest.raises(gx.RunNotFound):
            await ex.get_state("t-done")
        async with ex.resume_from(approval(), "t-wait") as resumed:
            await consume(resumed)
        assert resumed.result.state["sent"] is True


# -- decisions through the store --------------------------------------------------------------
