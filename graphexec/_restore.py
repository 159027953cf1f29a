"""Restoring a run from its checkpoints: the latest base, then the deltas after it."""

from __future__ import annotations

from typing import Any

import msgspec

from . import reducers as _reducers
from ._apply import replay_delta
from ._graph import Graph
from .checkpoint._base import CheckpointStore
from .checkpoint._record import (
    CheckpointBody,
    ParentRef,
    StoredCheckpoint,
    decode_body,
    decode_snapshot,
)
from .exceptions import CheckpointError, RunNotFound

__all__ = ("Restored", "restore")

_BUILTINS = {name: fn for fn, name in _reducers.BUILTIN_NAMES.items()}


class Restored(msgspec.Struct):
    """A run as of one checkpoint."""

    state: dict[str, Any]
    body: CheckpointBody
    """The body of the checkpoint restored to (the last of the chain)."""
    rows: list[StoredCheckpoint]
    parent: ParentRef | None = None
    """For a forked run: where it came from (recorded in every base)."""
    graph_name: str = ""
    """The graph the run was checkpointed with (recorded in bases)."""
    graph_hash: str = ""
    """The structural hash of that graph: the base's, or a later delta's where it changed."""


async def restore(
    store: CheckpointStore, trace_id: str, *, seq: int | None = None, graph: Graph | None = None
) -> Restored:
    """Load and replay; CheckpointError (naming trace and seq) for anything damaged."""
    rows = await store.load_chain(trace_id, seq)
    if not rows:
        if seq is None:
            raise RunNotFound(f"no checkpoints for trace {trace_id!r}", trace_id=trace_id)
        raise CheckpointError(
            f"trace {trace_id!r} has no checkpoint at or before seq {seq}",
            trace_id=trace_id,
            seq=seq,
        )
    if seq is not None and rows[-1].seq != seq:
        raise CheckpointError(
            f"trace {trace_id!r} has no checkpoint with seq {seq}", trace_id=trace_id, seq=seq
        )
    base = rows[0]
    base_body = decode_body(base)
    state = decode_snapshot(base)
    names = base_body.reducers
    reducers: dict[str, Any] = {}
    body = base_body
    graph_hash = base_body.graph_hash
    for row in rows[1:]:
        body = decode_body(row)
        graph_hash = body.graph_hash or graph_hash
        for record in body.steps:
            for delta in record.deltas:
                key = delta.key
                if delta.overwrite:  # gx.Overwrite: the value replaces, bypassing the reducer
                    reducer = None
                elif key in reducers:
                    reducer = reducers[key]
                else:
                    reducer = reducers[key] = _reducer_for(key, names, graph, trace_id, row.seq)
                try:
                    replay_delta(state, key, delta.value, reducer, overwrite=delta.overwrite)
                except Exception as exc:
                    raise CheckpointError(
                        f"replaying key {delta.key!r} of step {record.step} ({record.node}) "
                        f"failed: {exc!r}",
                        trace_id=trace_id,
                        seq=row.seq,
                    ) from exc
    if graph is not None and graph.state_type is not None:
        try:
            state = graph.spec.restored(state)
        except Exception as exc:
            raise CheckpointError(
                f"restored state does not fit {graph.state_type.__name__}: {exc}",
                trace_id=trace_id,
                seq=rows[-1].seq,
            ) from exc
    return Restored(
        state=state,
        body=body,
        rows=rows,
        parent=base_body.parent,
        graph_name=base_body.graph_name,
        graph_hash=graph_hash,
    )


def _reducer_for(
    key: str, names: dict[str, str], graph: Graph | None, trace_id: str, seq: int
) -> Any:
    """The reducer recorded for ``key``: a built-in by name, else the graph's (the function the
    run used), else one registered under the recorded name (``gx.reducers.register``)."""
    name = names.get(key)
    if name is None:
        return None
    if name in _BUILTINS:
        return _BUILTINS[name]
    if graph is not None and key in graph.reducers:
        return graph.reducers[key]
    if not name.startswith("custom:"):
        found = _reducers.registered(name)
        if found is not None:
            return found
        raise CheckpointError(
            f"restoring key {key!r} needs the reducer registered as {name!r}: call "
            f"gx.reducers.register({name!r}, fn) in this process, or pass the graph",
            trace_id=trace_id,
            seq=seq,
        )
    raise CheckpointError(
        f"restoring key {key!r} needs its custom reducer ({name.removeprefix('custom:')}), "
        "which has no registered name: pass the graph, or register the reducer with "
        "gx.reducers.register(name, fn) before the run so later checkpoints record the name",
        trace_id=trace_id,
        seq=seq,
    )
