"""The event log's stored format (version 2): events read back from the store are the events a
live consumer got, although a recorded ``StateChanged`` or ``GraphComplete`` keeps only a
reference to the checkpoint that holds its value; version-1 batches still read; a reference
that cannot be resolved is a CheckpointError."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import anyio
import msgspec
import pytest

import graphexec as gx
from graphexec._eventcodec import decode_batch, read_events
from graphexec.checkpoint import CheckpointStore
from graphexec.checkpoint._record import EventBatch

BIG = "x" * 300 + "0123456789abcdef" * 8  # a value worth a reference


def varied() -> gx.Graph:
    """Every way a delta reaches a StateChanged: a node, the same key twice in one node, an
    Overwrite, a parallel node's branches, a barrier's Edit and its decision record."""

    async def grow(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"log": [BIG + "a"], "note": BIG + "b", "n": 1}

    async def twice(state: Mapping[str, Any]) -> list[gx.StateDelta]:
        return [gx.StateDelta("log", BIG + "c"), gx.StateDelta("log", [BIG + "d", 7])]

    async def reset(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"note": gx.Overwrite(BIG + "e"), "log": gx.Overwrite([BIG + "f"])}

    def branch(tag: str) -> Any:
        async def fn(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"log": [BIG + tag], "meta": {tag: [1, 2.5, None, True]}}

        return fn

    async def last(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"n": len(state["log"])}

    return (
        gx.GraphBuilder("varied")
        .reducer("log", gx.reducers.append)
        .reducer("meta", gx.reducers.merge)
        .node("grow", grow)
        .node("twice", twice)
        .node("reset", reset)
        .parallel("fan", {"p": branch("p"), "q": branch("q")})
        .barrier("gate")
        .node("last", last)
        .edge("grow", "twice")
        .edge("twice", "reset")
        .edge("reset", "fan")
        .edge("fan", "gate")
        .edge("gate", "last")
        .start("grow")
        .end("last")
        .build()
    )


async def drive(ex: gx.GraphExecutor, graph: gx.Graph, trace_id: str) -> list[gx.GraphEvent]:
    """Run to the end as a live consumer (editing at the barrier); the events it got."""
    live: list[gx.GraphEvent] = []
    with anyio.fail_after(20):
        async with ex.execute_stream(graph, {"log": []}, trace_id=trace_id) as run:
            async for event in run:
                live.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.decide(event.barrier_id, gx.Edit({"note": BIG + "edit"}))
    assert run.result.status == "completed"
    return live


async def read_back(store: CheckpointStore, trace_id: str) -> list[gx.GraphEvent]:
    """The trace's events as another process reads them (an executor that drives nothing)."""
    with anyio.fail_after(20):
        return [e async for e in gx.GraphExecutor(store=store).events(trace_id)]


def same(live: list[gx.GraphEvent], back: list[gx.GraphEvent]) -> None:
    """The same events, field by field, as data (a live ``gx.Overwrite`` delta is the struct
    itself, read back it is its fields: that was so before version 2 too) and on the wire."""
    assert [type(e) for e in back] == [type(e) for e in live]
    assert msgspec.to_builtins(back) == msgspec.to_builtins(live)
    assert msgspec.json.encode(back) == msgspec.json.encode(live)


class TestReadBack:
    async def test_events_read_back_are_the_events_sent(self, store: CheckpointStore) -> None:
        """Every StateChanged value (node, repeated key, Overwrite, branches, an Edit) and
        GraphComplete's state come back from the store as the consumer saw them."""
        ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
        live = await drive(ex, varied(), "v")
        same(live, await read_back(store, "v"))

    @pytest.mark.parametrize("durability", ["sync", "async"])
    async def test_with_sparse_or_batched_checkpoints(
        self, tmp_path: Path, durability: Literal["sync", "async"]
    ) -> None:
        """With the default policy (events flushed between checkpoints, steps recorded later)
        and with async durability (several checkpoints per commit), the same holds."""
        async with gx.SQLiteStore(tmp_path / "v.db") as store:
            policy = gx.CheckpointPolicy(every_step=durability == "async", durability=durability)
            ex = gx.GraphExecutor(store=store, policy=policy)
            live = await drive(ex, varied(), "v")
            same(live, await read_back(store, "v"))

    async def test_a_custom_reducer_keeps_the_final_state_in_the_record(
        self, tmp_path: Path
    ) -> None:
        """A state a reader could not restore without the graph (a custom reducer) is stored
        in GraphComplete itself, and read back by a process that has no graph."""

        def longest(old: Any, new: Any) -> Any:
            return new if old is None or len(new) > len(old) else old

        async def a(state: Mapping[str, Any]) -> dict[str, Any]:
            return {"best": BIG}

        graph = (
            gx.GraphBuilder("custom").reducer("best", longest).node("a", a).start("a").end("a")
        ).build()
        async with gx.SQLiteStore(tmp_path / "c.db") as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            async with ex.execute_stream(graph, {}, trace_id="c") as run:
                live = [e async for e in run]
            back = await read_back(store, "c")
            same(live, back)
            assert isinstance(back[-1], gx.GraphComplete) and back[-1].state == {"best": BIG}


class TestStoredForm:
    async def test_a_delta_is_not_stored_twice(self, tmp_path: Path) -> None:
        """With a checkpoint every step, the recorded events hold no copy of the deltas nor of
        the final state: the checkpoints hold them."""
        async with gx.SQLiteStore(tmp_path / "d.db") as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            live = await drive(ex, varied(), "d")
            batches = await store.events_after("d", 0)
            assert batches
            assert not any(b"0123456789abcdef" in batch.data for batch in batches)
            same(live, await read_back(store, "d"))

    def test_version_1_batches_still_read(self) -> None:
        """A batch written before version 2 (a msgpack array of events as maps) decodes."""
        events = [
            gx.NodeStart(trace_id="t", step=1, event_id=5, node="a", span_id="a@1", kind="node"),
            gx.StateChanged(
                trace_id="t", step=1, event_id=6, node="a", span_id="a@1", key="k", delta=[BIG]
            ),
            gx.GraphComplete(
                trace_id="t", step=1, event_id=7, state={"k": [BIG]}, steps=1, duration=0.5
            ),
        ]
        old = EventBatch(first_id=5, last_id=7, data=msgspec.msgpack.encode(events))
        assert decode_batch("t", old) == (events, [])

    @pytest.mark.parametrize(
        "data",
        [b"\xc1\x02\x00\xff\xff", b"\xc1\x09\x00\x92\x90\x90", b"\xc1\x02\x01not zlib"],
        ids=["garbage", "unknown version", "bad zlib"],
    )
    def test_a_damaged_batch_is_a_checkpoint_error(self, data: bytes) -> None:
        with pytest.raises(gx.CheckpointError, match=r"recorded events 1\.\.2 of trace 't'"):
            decode_batch("t", EventBatch(first_id=1, last_id=2, data=data))

    async def test_a_missing_checkpoint_is_a_checkpoint_error(self, tmp_path: Path) -> None:
        """GraphComplete's state comes from the completion checkpoint: with that checkpoint
        deleted, reading the events says so instead of returning another state."""
        db = tmp_path / "m.db"
        async with gx.SQLiteStore(db) as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            await drive(ex, varied(), "m")
        with sqlite3.connect(db) as con:
            con.execute(
                "DELETE FROM checkpoints WHERE trace_id = 'm' AND seq = "
                "(SELECT max(seq) FROM checkpoints WHERE trace_id = 'm')"
            )
        async with gx.SQLiteStore(db) as store:
            with pytest.raises(gx.CheckpointError, match="of trace 'm' need the state at"):
                await read_events(store, "m", 0)
