"""History pages and the state at any checkpoint, on every store."""

from __future__ import annotations

from typing import Any

import pytest

import graphexec as gx
from graphexec.checkpoint import CheckpointStore


def counter(length: int) -> gx.Graph:
    """A chain of ``length`` nodes, each appending its index to ``log``."""
    b = gx.GraphBuilder("g").reducer("log", gx.reducers.append)
    for i in range(length):
        b.node(f"n{i}", lambda s, i=i: {"log": i})  # the default keeps i: no ctx passed
        if i:
            b.edge(f"n{i - 1}", f"n{i}")
    return b.start("n0").end(f"n{length - 1}").build()


async def ran(store: CheckpointStore) -> gx.GraphExecutor:
    """An executor whose store holds trace ``t``: 6 nodes, a checkpoint every step."""
    ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
    await ex.execute(counter(6), {"log": []}, trace_id="t")
    return ex


async def test_get_state_at_any_seq(store: CheckpointStore) -> None:
    """get_state(seq=N) is the state at checkpoint N; an unknown seq names it."""
    ex = await ran(store)
    seqs = [h.seq for h in await ex.history("t")]
    states = [(await ex.get_state("t", seq=s)) for s in seqs]
    assert [s.seq for s in states] == seqs
    assert [list(range(s.step)) for s in states] == [s.state["log"] for s in states]
    with pytest.raises(gx.CheckpointError, match="999"):
        await ex.get_state("t", seq=999)


async def test_pages_oldest_first(store: CheckpointStore) -> None:
    """limit keeps the newest; before= pages back; walking the pages gives the whole list."""
    ex = await ran(store)
    full = [h.seq for h in await ex.history("t")]
    assert len(full) >= 7
    page = await ex.history("t", limit=3)
    assert full[-3:] == [h.seq for h in page]
    walked: list[int] = []
    while page:
        walked[:0] = [h.seq for h in page]
        page = await ex.history("t", limit=3, before=page[0].seq)
    assert full == walked
    assert full[:2] == [h.seq for h in await ex.history("t", before=full[2])]
    assert [] == await ex.history("t", limit=0)


async def test_values(store: CheckpointStore) -> None:
    """values=True: each summary carries the state at its checkpoint (None otherwise)."""
    ex = await ran(store)
    plain = await ex.history("t", limit=2)
    assert all(h.state is None for h in plain)
    with_values = await ex.history("t", limit=2, values=True)
    for h in with_values:
        expected: Any = (await ex.get_state("t", seq=h.seq)).state
        assert expected == h.state


async def test_unknown_trace(store: CheckpointStore) -> None:
    """An unknown trace is RunNotFound, with or without paging."""
    ex = gx.GraphExecutor(store=store)
    with pytest.raises(gx.RunNotFound):
        await ex.history("nope")
    with pytest.raises(gx.RunNotFound):
        await ex.history("nope", before=3)
