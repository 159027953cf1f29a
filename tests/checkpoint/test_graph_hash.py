"""The graph hash is recorded once per base, and still tracks a graph that changed mid-trace."""

from __future__ import annotations

import warnings

import pytest

import graphexec as gx


def _graph(extra_edge: bool) -> gx.Graph:
    async def step(state: gx.typing.State) -> dict[str, int]:
        return {"n": state.get("n", 0) + 1}

    b = (
        gx.GraphBuilder("g")
        .node("a", step)
        .barrier("gate")
        .node("b", step)
        .edge("a", "gate")
        .edge("gate", "b")
        .start("a")
        .end("b")
    )
    if extra_edge:
        b.edge("gate", "b", when=lambda s: s["n"] > 100)
    return b.build()


async def _leave_at_barrier(run: gx.Run) -> None:
    async for event in run:
        if isinstance(event, gx.BarrierWaiting):
            return


async def test_resumed_run_on_a_changed_graph_warns_once() -> None:
    """A resume on a changed graph warns; the change is recorded, so resuming again on the
    same (changed) graph does not warn, and get_state reports the new hash."""
    store = gx.MemoryStore()
    ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
    old, new = _graph(False), _graph(True)
    async with ex.execute_stream(old, {}, trace_id="t") as run:
        await _leave_at_barrier(run)
    with pytest.warns(gx.GraphChangedWarning, match="changed structurally"):
        async with ex.resume_from(new, "t") as run:
            await _leave_at_barrier(run)
    assert new.hash == (await ex.get_state("t")).graph_hash
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        async with ex.resume_from(new, "t") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.approve(event.barrier_id)
    assert {"n": 2, "gate": {"decision": "approve", "reason": None, "by": "human"}} == (
        run.result.state
    )


async def test_delta_records_do_not_repeat_the_graph_hash() -> None:
    """Only base records carry the graph's name and hash; deltas leave them empty."""
    from graphexec.checkpoint._record import decode_body

    store = gx.MemoryStore()
    ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
    graph = _graph(False)
    async with ex.execute_stream(graph, {}, trace_id="t") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                await run.handle.approve(event.barrier_id)
    rows = await store.load_chain("t")
    bodies = [decode_body(r) for r in rows]
    assert all(
        (b.graph_hash == graph.hash) == (r.kind == "base")
        for r, b in zip(rows, bodies, strict=True)
    )
    assert graph.hash == (await ex.get_state("t")).graph_hash
