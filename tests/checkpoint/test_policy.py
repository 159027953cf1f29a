"""When checkpoints are written (the policy), base versus delta (compaction), and sync or async durability.

Store-independent behaviour runs on MemoryStore and SQLiteStore (the ``stores`` fixture in
conftest.py); "another process" is a second SQLiteStore on the same file (MemoryStore: the same
object), and "a restart" closes the SQLiteStore and opens a new one on the same path. Shared
graphs and helpers: ``_resume_kit.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import anyio
import pytest

import graphexec as gx

from _resume_kit import (  # isort: skip
    Stores,
    PAD,
    slow,
    chain,
    approval,
    consume,
    leave_at_node,
    triggers,
    saved,
)


class TestPolicy:
    """Which moments write a checkpoint."""

    async def test_every_step(self, stores: Stores) -> None:
        """every_step: one checkpoint per step (the last step's is the completion one)."""
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(chain(names=("a", "b", "c", "d")), trace_id="t")
        assert await triggers(ex, "t") == [
            ("start", 0),
            ("step", 1),
            ("step", 2),
            ("step", 3),
            ("completion", 4),
        ]

    async def test_default_policy_for_fast_nodes(self, stores: Stores) -> None:
        """Default policy, fast nodes: start and completion, plus the barrier's two."""
        ex = stores.executor()
        await ex.execute(chain(names=("a", "b", "c", "d")), trace_id="t-fast")
        assert await triggers(ex, "t-fast") == [("start", 0), ("completion", 4)]
        async with ex.execute_stream(approval(), trace_id="t-bar") as run:
            await consume(run)
        assert await triggers(ex, "t-bar") == [
            ("start", 0),
            ("barrier_waiting", 2),
            ("barrier_resolved", 2),
            ("completion", 3),
        ]

    async def test_declared_side_effects(self, stores: Stores) -> None:
        """A node declared side_effects=True is always followed by a checkpoint."""
        ex = stores.executor()
        await ex.execute(chain(side_effects=["b"]), trace_id="t")
        assert await triggers(ex, "t") == [("start", 0), ("side_effects", 2), ("completion", 3)]

    @pytest.mark.parametrize(
        ("report", "trigger"),
        [({"side_effects": True}, "side_effects"), ({"token_cost": 5000}, "adaptive")],
    )
    async def test_reported_usage(
        self, stores: Stores, report: dict[str, Any], trigger: str
    ) -> None:
        """ctx.report(side_effects=True) or a large token cost makes a checkpoint follow."""

        async def plain(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"log": ["plain"]}

        async def reporting(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
            ctx.report(**report)
            return {"log": ["reporting"]}

        graph = (
            gx.GraphBuilder("report")
            .node("a", plain)
            .node("b", reporting)
            .node("c", plain)
            .edge("a", "b")
            .edge("b", "c")
            .reducer("log", gx.reducers.append)
            .start("a")
            .end("c")
            .build()
        )
        ex = stores.executor()
        await ex.execute(graph, trace_id="t")
        assert await triggers(ex, "t") == [("start", 0), (trigger, 2), ("completion", 3)]

    async def test_small_token_cost_is_not_enough(self, stores: Stores) -> None:
        """Token costs below the threshold write no adaptive checkpoint."""

        async def cheap(state: Mapping[str, Any], ctx: gx.NodeContext) -> None:
            ctx.report(token_cost=100)

        graph = (
            gx.GraphBuilder("cheap")
            .node("a", cheap)
            .node("b", cheap)
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        ex = stores.executor()
        await ex.execute(graph, trace_id="t")
        assert await triggers(ex, "t") == [("start", 0), ("completion", 2)]

    async def test_explicit(self, stores: Stores) -> None:
        """handle.checkpoint() writes an "explicit" checkpoint at the next step boundary."""
        go = anyio.Event()

        async def a(state: Mapping[str, Any]) -> dict[str, Any]:
            await go.wait()
            return {"log": ["a"]}

        async def b(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"log": ["b"]}

        graph = (
            gx.GraphBuilder("explicit")
            .node("a", a)
            .node("b", b)
            .node("c", b)
            .edge("a", "b")
            .edge("b", "c")
            .reducer("log", gx.reducers.append)
            .start("a")
            .end("c")
            .build()
        )
        ex = stores.executor()
        async with ex.execute_stream(graph, trace_id="t") as run:
            events: list[gx.GraphEvent] = []
            async for event in run:
                events.append(event)
                if isinstance(event, gx.NodeStart) and event.node == "a":
                    await run.handle.checkpoint()
                    go.set()
        assert await triggers(ex, "t") == [("start", 0), ("explicit", 1), ("completion", 3)]
        assert [e.trigger for e in saved(events)] == ["start", "explicit", "completion"]


# -- compaction and durability ----------------------------------------------------------------


class TestCompaction:
    """Bases every compact_every records; only the first and latest keep their snapshots."""

    async def test_compact_every_3(self, stores: Stores) -> None:
        """Bases at seq 1, 4, 7, 10 when written; afterwards only 1 and 10 are bases."""
        names = [f"n{i}" for i in range(10)]
        graph = chain(names=names)
        ex = stores.executor(policy=gx.CheckpointPolicy(every_step=True, compact_every=3))
        async with ex.execute_stream(graph, {"pad": PAD, "log": []}, trace_id="t") as run:
            events = await consume(run)
        written = [(e.seq, e.kind) for e in saved(events)]
        assert written == [(s, "base" if s % 3 == 1 else "delta") for s in range(1, 12)]
        history = await ex.history("t")
        assert [h.seq for h in history if h.kind == "base"] == [1, 10]
        assert all(h.bytes < len(PAD) for h in history if h.kind == "delta")
        final = {"pad": PAD, "log": names}
        assert run.result.state == final
        ex2 = stores.executor(await stores.reopen())
        assert (await ex2.get_state("t")).state == final
        for seq in (3, 5, 8):  # restored from the first base through demoted bases' deltas
            async with ex2.fork(graph, "t", seq, new_trace_id=f"fork-{seq}") as fork:
                await consume(fork)
            assert fork.result.state == final
            assert fork.result.execution_log[0].node == names[seq - 1]

    async def test_compaction_continues_across_a_resume(self, stores: Stores) -> None:
        """A resumed run keeps the base cadence of its trace (seq 1, 4, 7, ...)."""
        names = [f"n{i}" for i in range(10)]
        delays = {"n5": 30.0}
        graph = chain(delays=delays, names=names)
        policy = gx.CheckpointPolicy(every_step=True, compact_every=3)
        ex = stores.executor(policy=policy)
        await leave_at_node(ex, graph, "t", "n5", {"pad": PAD, "log": []})
        assert [h.seq for h in await ex.history("t")] == list(range(1, 8))
        delays["n5"] = 0.0
        ex2 = stores.executor(await stores.reopen(), policy=policy)
        async with ex2.resume_from(graph, "t") as resumed:
            events = await consume(resumed)
        written = [(e.seq, e.kind) for e in saved(events)]
        assert written == [(s, "base" if s % 3 == 1 else "delta") for s in range(8, 14)]
        assert [h.seq for h in await ex2.history("t") if h.kind == "base"] == [1, 13]
        assert (await ex2.get_state("t")).state == {"pad": PAD, "log": names}


class TestDurability:
    """CheckpointSaved after the commit; async durability still commits everything."""

    @pytest.mark.parametrize("durability", ["sync", "async"])
    async def test_checkpoint_saved_after_commit(
        self, stores: Stores, durability: Literal["sync", "async"]
    ) -> None:
        """Each CheckpointSaved arrives once its checkpoint is readable from the store."""
        reader = stores.other()
        policy = gx.CheckpointPolicy(every_step=True, durability=durability)
        ex = stores.executor(slow(stores.store), policy=policy)
        seen: list[tuple[int, str, int]] = []
        async with ex.execute_stream(
            chain(names=("a", "b", "c", "d")), {"pad": PAD}, trace_id="t"
        ) as run:
            async for event in run:
                if isinstance(event, gx.CheckpointSaved):
                    committed = {h.seq: h for h in await reader.history("t")}
                    assert event.seq in committed
                    row = committed[event.seq]
                    assert (row.kind, row.bytes, row.trigger) == (
                        event.kind,
                        event.bytes,
                        event.trigger,
                    )
                    assert event.checkpoint_id == f"t:{event.seq}"
                    seen.append((event.seq, event.kind, event.bytes))
        assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5]
        assert run.result.status == "completed"

    async def test_async_durability_commits_everything_before_returning(
        self, stores: Stores
    ) -> None:
        """With durability="async" every CheckpointSaved arrives and all is committed at return."""
        names = [f"n{i}" for i in range(8)]
        policy = gx.CheckpointPolicy(every_step=True, durability="async")
        ex = stores.executor(slow(stores.store), policy=policy)
        async with ex.execute_stream(chain(names=names), {"pad": PAD}, trace_id="t-s") as run:
            events = await consume(run)
        assert [e.seq for e in saved(events)] == list(range(1, 10))
        result = await ex.execute(chain(names=names), {"pad": PAD}, trace_id="t-x")

        ex2 = stores.executor(await stores.reopen())
        for trace_id, state in (("t-s", run.result.state), ("t-x", result.state)):
            history = await ex2.history(trace_id)
            assert [h.seq for h in history] == list(range(1, 10))
            assert history[-1].trigger == "completion"
            got = await ex2.get_state(trace_id)
            assert (got.status, got.state) == ("completed", state)

    async def test_async_durability_commits_the_cancel_checkpoint(self, stores: Stores) -> None:
        """Leaving early with durability="async" still commits every checkpoint, cancel last."""
        policy = gx.CheckpointPolicy(every_step=True, durability="async")
        ex = stores.executor(slow(stores.store, 0.05), policy=policy)
        graph = chain(delays={"c": 30.0})
        await leave_at_node(ex, graph, "t-al", "c", {"pad": PAD})
        ex2 = stores.executor(await stores.reopen())
        assert await triggers(ex2, "t-al") == [
            ("start", 0),
            ("step", 1),
            ("step", 2),
            ("cancel", 2),
        ]
        got = await ex2.get_state("t-al")
        assert (got.status, got.next_node, got.state) == (
            "cancelled",
            "c",
            {"pad": PAD, "log": ["a", "b"]},
        )

    async def test_async_durability_barrier_waiting_after_commit(self, stores: Stores) -> None:
        """BarrierWaiting is sent only once the checkpoint recording the wait is committed."""
        reader = stores.other()
        policy = gx.CheckpointPolicy(every_step=True, durability="async")
        ex = stores.executor(slow(stores.store, 0.05), policy=policy)
        async with ex.execute_stream(approval(), trace_id="t-b") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    last = (await reader.history("t-b"))[-1]
                    assert (last.trigger, last.status, last.next_node) == (
                        "barrier_waiting",
                        "waiting",
                        "approve",
                    )
                    break
        assert run.result.status == "waiting"
        async with stores.executor(await stores.reopen()).resume_from(approval(), "t-b") as resumed:
            await consume(resumed)
        assert resumed.result.state["sent"] is True


# -- damaged records --------------------------------------------------------------------------
