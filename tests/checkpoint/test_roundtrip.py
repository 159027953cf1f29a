"""Checkpoints round-trip exactly: random states and deltas through every reducer, every store.

A run of random delta batches (one node per batch in a chain, or one node looping on a step
counter) is checkpointed after every step with a random ``compact_every``. The state restored by
``get_state`` must equal the run's final state, and a ``fork`` from any checkpoint must start
from exactly the state a reference computes by applying the batches up to that checkpoint's step.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphexec as gx

REDUCERS: dict[str, Callable[[Any, Any], Any]] = {
    "ap": gx.reducers.append,
    "ad": gx.reducers.add,
    "mg": gx.reducers.merge,
    "un": gx.reducers.union,
    "ov": gx.reducers.overwrite,
}
"""Keys with a declared reducer; every other key overwrites (no reducer)."""

FREE = ("x", "y", "z")
"""Keys with no reducer."""

TICK = "tick"
"""The looping node's step counter (reducer ``add``)."""

Batch = dict[str, Any]
Seen = dict[str, dict[str, Any]]

# -- strategies -------------------------------------------------------------------------------

_chars = st.characters(codec="utf-8")  # no lone surrogates: state strings are UTF-8
_ints = st.integers(min_value=-(10**12), max_value=10**12)
_texts = st.text(alphabet=_chars, max_size=8)
_scalars = _ints | _texts
_lists = st.lists(_scalars, max_size=4)
_plain = _scalars | _lists
_maps = st.dictionaries(
    st.text(alphabet="abcde", min_size=1, max_size=2), _ints | _texts, max_size=3
)
_int_lists = st.lists(_ints, max_size=4)

_deltas = st.one_of(
    st.tuples(st.sampled_from(FREE), _plain),
    st.tuples(st.just("ov"), _plain | _maps),
    st.tuples(st.just("ap"), _scalars | _lists),
    st.tuples(st.just("ad"), _ints),
    st.tuples(st.just("mg"), _maps),
    st.tuples(st.just("un"), _ints | _int_lists),
)
_batches = st.lists(_deltas, max_size=4).map(dict)

_extra_keys = st.text(alphabet=_chars, min_size=1, max_size=6).filter(
    lambda k: k not in REDUCERS and k not in FREE and k != TICK
)
_initial = st.builds(
    lambda fixed, extra: {**extra, **fixed},
    st.fixed_dictionaries(
        {},
        optional={
            "x": _plain,
            "y": _plain,
            "ov": _plain,
            "ap": _lists,
            "ad": _ints,
            "mg": _maps,
            "un": _int_lists,
        },
    ),
    st.dictionaries(_extra_keys, _plain | _maps, max_size=3),
)

# -- graphs -----------------------------------------------------------------------------------


def _recording(
    seen: Seen, make: Callable[[Mapping[str, Any]], Any]
) -> Callable[[Mapping[str, Any], gx.NodeContext], Awaitable[Any]]:
    """A node returning ``make(state)``; the first state each trace shows it is kept in seen."""

    async def node(state: Mapping[str, Any], ctx: gx.NodeContext) -> Any:
        seen.setdefault(ctx.trace_id, copy.deepcopy(dict(state)))
        return make(state)

    return node


def _returning(batch: Batch) -> Callable[[Mapping[str, Any]], Batch]:
    def make(state: Mapping[str, Any]) -> Batch:
        return copy.deepcopy(batch)

    return make


def chain_graph(batches: list[Batch], seen: Seen) -> gx.Graph:
    """One node per batch, in a chain."""
    builder = gx.GraphBuilder("roundtrip-chain")
    names = [f"n{i}" for i in range(len(batches))]
    for name, batch in zip(names, batches, strict=True):
        builder.node(name, _recording(seen, _returning(batch)))
    for source, target in itertools.pairwise(names):
        builder.edge(source, target)
    for key, fn in REDUCERS.items():
        builder.reducer(key, fn)
    return builder.start(names[0]).end(names[-1]).build()


def loop_graph(batches: list[Batch], seen: Seen) -> gx.Graph:
    """One node looping while its step counter is below the number of batches."""

    def make(state: Mapping[str, Any]) -> Batch:
        return {**copy.deepcopy(batches[state[TICK]]), TICK: 1}

    def again(state: Mapping[str, Any]) -> bool:
        return bool(state[TICK] < len(batches))

    builder = (
        gx.GraphBuilder("roundtrip-loop")
        .node("loop", _recording(seen, make))
        .node("stop", _recording(seen, lambda _s: None))
        .edge("loop", "loop", when=again)
        .edge("loop", "stop")
        .reducer(TICK, gx.reducers.add)
    )
    for key, fn in REDUCERS.items():
        builder.reducer(key, fn)
    return builder.start("loop").end("stop").build()


def reference(initial: dict[str, Any], batches: list[Batch], shape: str) -> list[dict[str, Any]]:
    """The state after each step: ``[initial, after step 1, ...]``, computed without graphexec."""
    state = copy.deepcopy(initial)
    if shape == "loop":
        state[TICK] = 0
    states = [copy.deepcopy(state)]
    for batch in batches:
        changes = dict(batch)
        if shape == "loop":
            changes[TICK] = 1
        for key, value in changes.items():
            reducer = gx.reducers.add if key == TICK else REDUCERS.get(key)
            state[key] = value if reducer is None else reducer(state.get(key), value)
        states.append(copy.deepcopy(state))
    if shape == "loop":
        states.append(copy.deepcopy(state))  # the "stop" step changes nothing
    return states


# -- the property -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("shape", ["chain", "loop"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    initial=_initial,
    batches=st.lists(_batches, min_size=1, max_size=8),
    compact_every=st.integers(min_value=1, max_value=6),
    data=st.data(),
)
async def test_checkpoints_restore_exactly(
    tmp_path: Path,
    kind: str,
    shape: str,
    initial: dict[str, Any],
    batches: list[Batch],
    compact_every: int,
    data: st.DataObject,
) -> None:
    """get_state equals the final state; fork from a random seq starts at the reference state."""
    seen: Seen = {}
    graph = chain_graph(batches, seen) if shape == "chain" else loop_graph(batches, seen)
    start = copy.deepcopy(initial)
    if shape == "loop":
        start[TICK] = 0
    expected = reference(initial, batches, shape)
    path = tmp_path / f"{uuid.uuid4().hex}.db"
    store: gx.CheckpointStore = gx.MemoryStore() if kind == "memory" else gx.SQLiteStore(path)
    policy = gx.CheckpointPolicy(every_step=True, compact_every=compact_every)
    try:
        result = await gx.GraphExecutor(store=store, policy=policy).execute(
            graph, start, trace_id="t"
        )
        assert result.state == expected[-1]
        if kind == "sqlite":
            await store.aclose()
            store = gx.SQLiteStore(path)
        ex = gx.GraphExecutor(store=store, policy=policy)

        got = await ex.get_state("t")
        assert (got.status, got.step) == ("completed", len(expected) - 1)
        assert got.state == expected[-1]

        history = await ex.history("t")
        assert [h.step for h in history] == list(range(len(expected)))
        assert sum(h.kind == "base" for h in history) <= 2
        pick = data.draw(st.sampled_from(history), label="checkpoint")
        async with ex.fork(graph, "t", pick.seq, new_trace_id="fork") as fork:
            async for _event in fork:
                pass
        restored = seen["fork"] if pick.next_node is not None else fork.result.state
        assert restored == expected[pick.step]
        assert fork.result.state == expected[-1]
    finally:
        await store.aclose()
