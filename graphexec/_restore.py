"""Restoring a run from its checkpoints: the latest base, then the deltas after it.

Restore trusts nothing it reads: every blob is type- and checksum-checked
(:func:`decode_body`), the chain must be whole (a base, then every seq after it without a gap,
up to the seq asked for or the run's ``last_seq``), and the last record must agree with the
runs index row (seq, status, step, next node, pending barrier). Any disagreement is a
:class:`CheckpointError` naming the trace and seq: a missing row or a damaged index would
otherwise restore a state with steps left out, or an older position, without a word.
"""

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
    RunInfo,
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
    trace_context: str | None = None
    """The W3C ``traceparent`` the run's spans join (recorded in bases), if any."""


async def restore(
    store: CheckpointStore,
    trace_id: str,
    *,
    seq: int | None = None,
    graph: Graph | None = None,
    run: RunInfo | None = None,
) -> Restored:
    """Load and replay; CheckpointError (naming trace and seq) for anything damaged.

    ``run``: the trace's runs index row if the caller already read it (``resume_from`` gets it
    with the lease); otherwise it is read here. The chain is checked against it.
    """
    given = run is not None
    for _attempt in range(3):
        if not given:
            run = await store.get_run(trace_id)
        rows = await store.load_chain(trace_id, seq)
        # The runs row and the chain are read in two transactions: a run driven by another
        # process may commit in between. Read again before calling a disagreement damage.
        if given or seq is not None or run is None or not rows or rows[-1].seq == run.last_seq:
            break
    if not rows:
        if seq is None and run is None:
            raise RunNotFound(f"no checkpoints for trace {trace_id!r}", trace_id=trace_id)
        if seq is None and run is not None:
            raise CheckpointError(
                f"trace {trace_id!r} is in the runs index (last seq {run.last_seq!r}) but its "
                "checkpoints are missing or damaged: no base record was found",
                trace_id=trace_id,
                seq=run.last_seq if type(run.last_seq) is int else None,
            )
        raise CheckpointError(
            f"trace {trace_id!r} has no checkpoint at or before seq {seq}",
            trace_id=trace_id,
            seq=seq,
        )
    if seq is not None and rows[-1].seq != seq:
        raise CheckpointError(
            f"trace {trace_id!r} has no checkpoint with seq {seq}", trace_id=trace_id, seq=seq
        )
    _check_chain(rows, trace_id)
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
    _check_run_row(run, body, graph_hash, trace_id, latest=seq is None)
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
        trace_context=base_body.trace_context,
    )


def _check_chain(rows: list[StoredCheckpoint], trace_id: str) -> None:
    """A base first, then every seq after it: a gap means a row is missing (deleted, or
    unreachable through a damaged index), and replaying around it would skip its steps."""
    first = rows[0]
    if type(first.seq) is not int or first.kind != "base":
        raise CheckpointError(
            f"trace {trace_id!r}: the chain does not start with a base record "
            f"(kind {first.kind!r:.20})",
            trace_id=trace_id,
            seq=first.seq if type(first.seq) is int else None,
        )
    expected = first.seq
    for row in rows:
        if row.trace_id != trace_id:
            raise CheckpointError(
                f"a checkpoint of trace {row.trace_id!r:.80} was read for trace {trace_id!r}",
                trace_id=trace_id,
                seq=expected,
            )
        if row.seq != expected:
            raise CheckpointError(
                f"trace {trace_id!r}: checkpoint seq {expected} is missing (found "
                f"{row.seq!r:.40} after {expected - 1}); the chain is broken",
                trace_id=trace_id,
                seq=expected,
            )
        expected += 1


def _check_run_row(
    run: RunInfo | None, body: CheckpointBody, graph_hash: str, trace_id: str, *, latest: bool
) -> None:
    """The runs index row is written in the same transaction as the last record: the two must
    agree. Restoring at an explicit seq only needs that seq to exist below the last one."""
    if run is None:
        raise CheckpointError(
            f"trace {trace_id!r} has checkpoints but no runs index row (damaged or deleted)",
            trace_id=trace_id,
            seq=body.seq,
        )
    if not latest:
        if type(run.last_seq) is not int or body.seq > run.last_seq:
            raise CheckpointError(
                f"trace {trace_id!r}: checkpoint seq {body.seq} is past the run's last seq "
                f"{run.last_seq!r:.40} in the runs index",
                trace_id=trace_id,
                seq=body.seq,
            )
        return
    pending = body.pending_barrier.barrier_id if body.pending_barrier is not None else None
    mismatches = [
        f"{what} {stored!r:.60} in the runs index, {found!r:.60} in the checkpoint"
        for what, stored, found in (
            ("last seq", run.last_seq, body.seq),
            ("status", run.status, body.status),
            ("step", run.step, body.step),
            ("next node", run.next_node, body.next_node),
            ("pending barrier", run.pending_barrier, pending),
            ("graph hash", run.graph_hash, graph_hash),
        )
        if stored != found or type(stored) is not type(found)
    ]
    if mismatches:
        raise CheckpointError(
            f"trace {trace_id!r}: the latest checkpoint does not match the runs index "
            f"({'; '.join(mismatches)}); rows are missing or the file is damaged",
            trace_id=trace_id,
            seq=body.seq,
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
