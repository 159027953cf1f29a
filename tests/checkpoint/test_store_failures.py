"""A store that fails a write never leaves checkpoints that restore a wrong state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

import graphexec as gx
from graphexec.checkpoint._record import RunInfo, StoredCheckpoint, StoredDecision


class FlakyStore(gx.MemoryStore):
    """A MemoryStore whose save fails on the chosen calls."""

    def __init__(self, fail_on: set[int]) -> None:
        super().__init__()
        self.calls = 0
        self.fail_on = fail_on

    async def save(
        self, rows: Sequence[StoredCheckpoint], run: RunInfo, **options: Any
    ) -> list[StoredDecision]:
        self.calls += 1
        if self.calls in self.fail_on:
            raise OSError("disk full")
        return await super().save(rows, run, **options)


def _chain(n: int) -> gx.Graph:
    async def add(state: gx.typing.State) -> dict[str, list[int]]:
        return {"log": [len(state["log"])]}

    b = gx.GraphBuilder("chain").reducer("log", gx.reducers.append)
    for i in range(n):
        b.node(f"n{i}", add)
        if i:
            b.edge(f"n{i - 1}", f"n{i}")
    return b.start("n0").end(f"n{n - 1}").build()


async def test_failed_sync_save_fails_the_run_and_the_store_restores_its_state() -> None:
    """A save that raises fails the run with CheckpointError; what the store holds restores to
    exactly the state the run had when it stopped, and the run resumes from there."""
    store = FlakyStore(fail_on={4})
    ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
    async with ex.execute_stream(_chain(8), {"log": []}, trace_id="t") as run:
        async for _ in run:
            pass
    assert run.result.status == "failed"
    assert isinstance(run.result.error, gx.CheckpointError)
    assert "disk full" in str(run.result.error)
    saved = await ex.get_state("t")
    assert saved.status == "failed"
    assert run.result.state == saved.state
    # Resuming continues from the saved next node and reaches the uninterrupted result.
    async with ex.resume_from(_chain(8), "t") as again:
        async for _ in again:
            pass
    assert {"log": list(range(8))} == again.result.state


async def test_async_writer_writes_nothing_after_a_failed_batch() -> None:
    """With durability="async", the first failed commit fails the run and no later record is
    written on top of the missing ones; what the store holds is a consistent prefix."""
    store = FlakyStore(fail_on={2})

    async def slow(state: gx.typing.State) -> dict[str, list[int]]:
        await anyio.sleep(0.002)  # lets the writer commit between steps
        return {"log": [len(state["log"])]}

    b = gx.GraphBuilder("chain").reducer("log", gx.reducers.append)
    for i in range(10):
        b.node(f"n{i}", slow)
        if i:
            b.edge(f"n{i - 1}", f"n{i}")
    graph = b.start("n0").end("n9").build()
    ex = gx.GraphExecutor(
        store=store, policy=gx.CheckpointPolicy(every_step=True, durability="async")
    )
    with pytest.raises(gx.CheckpointError, match="disk full"):
        await ex.execute(graph, {"log": []}, trace_id="t")
    history = await ex.history("t")
    assert [1] == [h.seq for h in history]
    saved = await ex.get_state("t")
    assert {"log": []} == saved.state


async def test_half_applied_node_is_never_checkpointed() -> None:
    """When a reducer fails after some of a node's deltas were applied, no checkpoint captures
    that half state: resuming re-runs the node from the last good checkpoint."""
    calls = {"n": 0}

    def picky(current: int | None, value: int) -> int:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("not today")
        return (current or 0) + value

    async def first(state: gx.typing.State) -> dict[str, object]:
        return {"log": ["first"]}

    async def second(state: gx.typing.State) -> dict[str, object]:
        return {"log": ["second"], "total": 5}

    graph = (
        gx.GraphBuilder("torn")
        .node("first", first)
        .node("second", second)
        .edge("first", "second")
        .reducer("log", gx.reducers.append)
        .reducer("total", picky)
        .start("first")
        .end("second")
        .build()
    )
    ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
    with pytest.raises(gx.StateError, match="not today"):
        calls["n"] = 1  # the second call (in node "second") fails
        await ex.execute(graph, {}, trace_id="t")
    saved = await ex.get_state("t", graph=graph)
    assert {"log": ["first"]} == saved.state
    assert "second" == saved.next_node
    async with ex.resume_from(graph, "t") as run:
        async for _ in run:
            pass
    assert {"log": ["first", "second"], "total": 5} == run.result.state


@pytest.mark.parametrize("every_step", [True, False])
async def test_a_torn_node_ends_the_run_failed_and_resumable(every_step: bool) -> None:
    """A reducer that raises halfway through a node's updates ends the run ``failed`` in the
    store, with its error; the failure record carries the last good state (never the half
    one) and the failed node as next node, so a resume re-runs it."""
    fail = {"on": True}

    def picky(current: int | None, value: int) -> int:
        if fail["on"]:
            raise ValueError("not today")
        return (current or 0) + value

    async def first(state: gx.typing.State) -> dict[str, object]:
        return {"log": ["first"]}

    async def second(state: gx.typing.State) -> dict[str, object]:
        return {"log": ["second"], "total": 5}  # "log" is applied, then "total" raises

    graph = (
        gx.GraphBuilder("torn")
        .node("first", first)
        .node("second", second)
        .edge("first", "second")
        .reducer("log", gx.reducers.append)
        .reducer("total", picky)
        .start("first")
        .end("second")
        .build()
    )
    store = gx.MemoryStore()
    ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=every_step))
    with pytest.raises(gx.StateError, match="not today"):
        await ex.execute(graph, {}, trace_id="t")
    info = await store.get_run("t")
    assert info is not None and "failed" == info.status
    assert ["t"] == [r.trace_id for r in await ex.runs(status="failed")]
    saved = await ex.get_state("t", graph=graph)
    assert "failed" == saved.status
    assert saved.error is not None and "not today" in saved.error.message
    assert {"log": ["first"]} == saved.state
    assert ("second", 1) == (saved.next_node, saved.step)
    last = (await ex.history("t"))[-1]
    assert ("failure", "delta") == (last.trigger, last.kind)
    fail["on"] = False
    async with ex.resume_from(graph, "t") as run:
        async for _ in run:
            pass
    assert {"log": ["first", "second"], "total": 5} == run.result.state
    assert 2 == run.result.steps


async def test_unencodable_value_is_named_and_nothing_saved_is_damaged() -> None:
    """A value msgspec cannot encode fails the run with a CheckpointError naming the node and
    the key; the checkpoints already saved still restore."""

    async def ok(state: gx.typing.State) -> dict[str, object]:
        return {"n": 1}

    async def bad(state: gx.typing.State) -> dict[str, object]:
        return {"conn": object()}

    graph = (
        gx.GraphBuilder("g")
        .node("ok", ok)
        .node("bad", bad)
        .node("end", ok)
        .edge("ok", "bad")
        .edge("bad", "end")
        .start("ok")
        .end("end")
        .build()
    )
    ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
    # Refused where it is written (before any checkpoint tries to encode it): see _values.py.
    with pytest.raises(gx.StateError) as caught:
        await ex.execute(graph, {}, trace_id="t")
    assert ("bad", "conn") == (caught.value.node, caught.value.key)
    assert "node 'bad' wrote key 'conn' with a value of type object" in str(caught.value)
    assert {"n": 1} == (await ex.get_state("t")).state


async def test_unencodable_value_from_a_reducer_is_a_checkpoint_error() -> None:
    """A custom reducer may still produce what msgpack cannot encode: the checkpoint fails with
    a CheckpointError naming the key, and what was saved before still restores."""

    async def ok(state: gx.typing.State) -> dict[str, object]:
        return {"n": 1}

    graph = (
        gx.GraphBuilder("g")
        .node("ok", ok)
        .node("end", ok)
        .edge("ok", "end")
        .reducer("n", lambda old, new: object() if old else new)
        .start("ok")
        .end("end")
        .build()
    )
    # compact_every=1: every checkpoint is a base, so the reducer's result itself is encoded
    policy = gx.CheckpointPolicy(every_step=True, compact_every=1)
    ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=policy)
    with pytest.raises(gx.CheckpointError, match="state key 'n' is not msgspec-encodable"):
        await ex.execute(graph, {}, trace_id="t")
    assert {"n": 1} == (await ex.get_state("t", graph=graph)).state


class CompletionFailingStore(gx.MemoryStore):
    """A MemoryStore whose completion checkpoints fail ``failures`` times (disk full)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def save(
        self, rows: Sequence[StoredCheckpoint], run: RunInfo, **options: Any
    ) -> list[StoredDecision]:
        if run.status == "completed" and self.failures > 0:
            self.failures -= 1
            raise OSError("disk full")
        return await super().save(rows, run, **options)


def _counting_chain(n: int, calls: list[str]) -> gx.Graph:
    async def add(state: gx.typing.State, ctx: gx.NodeContext) -> dict[str, list[int]]:
        calls.append(ctx.node)
        return {"log": [len(state["log"])]}

    b = gx.GraphBuilder("chain").reducer("log", gx.reducers.append)
    for i in range(n):
        b.node(f"n{i}", add)
        if i:
            b.edge(f"n{i - 1}", f"n{i}")
    return b.start("n0").end(f"n{n - 1}").build()


async def test_a_completion_checkpoint_that_fails_once_is_written_on_a_later_attempt() -> None:
    """A passing store error on the final save does not fail a finished run: it is retried."""
    store = CompletionFailingStore(failures=1)
    calls: list[str] = []
    ex = gx.GraphExecutor(store=store)
    result = await ex.execute(_counting_chain(3, calls), {"log": []}, trace_id="t")
    assert "completed" == result.status
    saved = await ex.get_state("t")
    assert ("completed", [0, 1, 2]) == (saved.status, saved.state["log"])


async def test_a_failed_completion_checkpoint_resumes_to_completed_without_running_a_node() -> None:
    """When every attempt at the completion checkpoint fails, the run is recorded failed with all
    its steps, and resume_from finishes it as completed without running a node again."""
    store = CompletionFailingStore(failures=3)
    calls: list[str] = []
    graph = _counting_chain(3, calls)
    ex = gx.GraphExecutor(store=store)
    with pytest.raises(gx.CheckpointError, match="disk full"):
        await ex.execute(graph, {"log": []}, trace_id="t")
    saved = await ex.get_state("t")
    assert ("failed", None, [0, 1, 2]) == (saved.status, saved.next_node, saved.state["log"])
    assert ["n0", "n1", "n2"] == calls
    async with ex.resume_from(graph, "t") as run:
        events = [event async for event in run]
    assert "completed" == run.result.status
    assert [0, 1, 2] == run.result.state["log"]
    assert ["n0", "n1", "n2"] == calls  # nothing ran again
    assert not any(isinstance(e, gx.NodeStart) for e in events)
    assert "completed" == (await ex.get_state("t")).status
