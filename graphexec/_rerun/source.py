"""The source trace of a re-run, read back: its first state and position, and every node
execution it recorded, each with what it read.

A trace's step records are spread over its checkpoints (each holds the steps since the one
before), so the whole chain is read, from seq 1: the latest base and the deltas after it, then
the records before that base, back to the first one (which keeps its snapshot: the state the
trace started from). Replaying the records in order gives the state before every execution;
the values of the keys an execution read are encoded right then (``inputs``), so the reuse test
of a re-run is one byte comparison. A base recording invalidations (a resume with
``invalidate_on_resume`` started the trace over there) supersedes everything before it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._apply import replay_delta
from .._graph import Graph
from .._restore import _check_chain, _reducer_for
from ..checkpoint._base import CheckpointStore
from ..checkpoint._record import (
    BranchRecord,
    CheckpointBody,
    RecordedRoute,
    RunInfo,
    StepRecord,
    StoredCheckpoint,
    decode_body,
    decode_snapshot,
)
from ..exceptions import CheckpointError, RunNotFound

__all__ = ("UPDATE_NODE", "Replayer", "Source", "SourceExec", "encode_inputs", "load_source")

UPDATE_NODE = "#update"
"""The node name under which a re-run records its ``update=`` (no node can be named so)."""

_MISSING = msgspec.msgpack.Ext(1, b"")
"""How a key read while missing is encoded in ``inputs`` (no state value encodes so)."""

_encoder = msgspec.msgpack.Encoder()


def encode_inputs(state: dict[str, Any], keys: tuple[str, ...] | None) -> bytes:
    """The values of ``keys`` in ``state``, encoded (None: the whole state, sorted by key)."""
    if keys is None:
        return _encoder.encode(sorted(state.items()))
    return _encoder.encode([state.get(k, _MISSING) for k in keys])


class SourceExec(msgspec.Struct):
    """One node execution of the source trace."""

    step: int
    node: str
    occurrence: int
    """The nth execution of this node in the trace (a re-run matches the nth with the nth)."""
    fingerprint: str | None
    keys_read: tuple[str, ...] | None
    deltas: list[Any]
    route: RecordedRoute | None
    seq: int
    """The checkpoint that recorded it (for error messages)."""
    inputs: bytes = b""
    """The encoded values of ``keys_read`` before it ran (filled when asked for)."""
    updates_before: list[StepRecord] = msgspec.field(default_factory=list)
    """Pseudo steps (a re-run's update) recorded just before this execution."""
    branches: list[BranchRecord] | None = None
    """A parallel node: what each branch that succeeded read and wrote."""
    branch_inputs: list[bytes] = msgspec.field(default_factory=list)
    """The encoded values each of ``branches`` read (filled with ``inputs``)."""

    @property
    def label(self) -> str:
        """How plans and errors name this execution: ``node@step``."""
        return f"{self.node}@{self.step}"


class Source(msgspec.Struct):
    """A trace as a re-run sees it."""

    trace_id: str
    info: RunInfo
    last_seq: int
    initial: dict[str, Any]
    """The state of the trace's first checkpoint (its start, or a fork's starting point)."""
    first: CheckpointBody
    """The body of the first checkpoint: the position the trace started from."""
    last: CheckpointBody
    """The body of the latest checkpoint: where the trace stands (status, next node)."""
    execs: list[SourceExec]
    tail_updates: list[StepRecord]
    """Pseudo steps recorded after the last execution."""
    by_occurrence: dict[tuple[str, int], SourceExec]
    replayer: Replayer

    @property
    def stopped_at(self) -> str | None:
        """The node the trace would run next (a failed node, a pending barrier), or None."""
        if self.last.pending_barrier is not None:
            return self.last.pending_barrier.node
        return self.last.next_node


class Replayer:
    """Replays recorded deltas through the reducers the trace recorded (the graph's when a
    reducer is custom), like restore does."""

    def __init__(self, trace_id: str, names: dict[str, str], graph: Graph) -> None:
        self.trace_id = trace_id
        self.names = names
        self.graph = graph
        self._reducers: dict[str, Any] = {}

    def reducer(self, key: str, seq: int) -> Any:
        """The reducer of ``key`` (None: overwrite)."""
        if key not in self._reducers:
            self._reducers[key] = _reducer_for(key, self.names, self.graph, self.trace_id, seq)
        return self._reducers[key]

    def apply(self, state: dict[str, Any], record: StepRecord, seq: int) -> None:
        """Apply one step record's deltas to ``state``."""
        for delta in record.deltas:
            key = delta.key
            reducer = None if delta.overwrite else self.reducer(key, seq)
            try:
                replay_delta(state, key, delta.value, reducer, overwrite=delta.overwrite)
            except Exception as exc:
                raise CheckpointError(
                    f"replaying key {key!r} of step {record.step} ({record.node}) failed: {exc!r}",
                    trace_id=self.trace_id,
                    seq=seq,
                ) from exc


async def _whole_chain(store: CheckpointStore, trace_id: str) -> list[StoredCheckpoint]:
    chain = await store.load_chain(trace_id)
    if not chain:
        raise RunNotFound(f"no checkpoints for trace {trace_id!r}", trace_id=trace_id)
    while chain[0].seq > 1:
        before = chain[0].seq - 1
        earlier = await store.load_chain(trace_id, before)
        if not earlier or earlier[-1].seq != before or earlier[0].seq >= chain[0].seq:
            raise CheckpointError(
                f"trace {trace_id!r}: the checkpoints before seq {chain[0].seq} cannot be read "
                "back to the first one (a re-run needs every step record)",
                trace_id=trace_id,
                seq=before,
            )
        chain = earlier + chain
    _check_chain(chain, trace_id)  # a base first, every seq after it, all of this trace
    return chain


async def load_source(
    store: CheckpointStore, trace_id: str, graph: Graph, *, inputs: bool
) -> Source:
    """Read a trace's executions back; ``inputs``: also encode what each one read."""
    info = await store.get_run(trace_id)
    if info is None:
        raise RunNotFound(f"no run with trace id {trace_id!r} in the store", trace_id=trace_id)
    chain = await _whole_chain(store, trace_id)
    first = decode_body(chain[0])
    initial = decode_snapshot(chain[0])
    replayer = Replayer(trace_id, dict(first.reducers), graph)
    state = msgspec.msgpack.decode(chain[0].snapshot or b"\x80") if inputs else {}
    execs: list[SourceExec] = []
    counts: dict[str, int] = {}
    pending_updates: list[StepRecord] = []
    last = first
    for row in chain[1:]:
        body = last = decode_body(row)
        if body.reducers:
            replayer.names.update(body.reducers)
        if body.invalidated:
            # A resume that invalidated executions started the trace over from this base:
            # what ran before it is superseded by what runs after.
            first, initial = body, decode_snapshot(row)
            state = decode_snapshot(row) if inputs else {}
            execs, counts, pending_updates = [], {}, []
        for record in body.steps:
            if record.node == UPDATE_NODE:
                pending_updates.append(record)
                if inputs:
                    replayer.apply(state, record, row.seq)
                continue
            occurrence = counts[record.node] = counts.get(record.node, 0) + 1
            keys = tuple(record.keys_read) if record.keys_read is not None else None
            execs.append(
                SourceExec(
                    step=record.step,
                    node=record.node,
                    occurrence=occurrence,
                    fingerprint=record.fingerprint,
                    keys_read=keys,
                    deltas=record.deltas,
                    route=record.route,
                    seq=row.seq,
                    inputs=encode_inputs(state, keys) if inputs else b"",
                    updates_before=pending_updates,
                    branches=record.branches,
                    branch_inputs=[
                        encode_inputs(
                            state, tuple(b.keys_read) if b.keys_read is not None else None
                        )
                        for b in record.branches
                    ]
                    if inputs and record.branches
                    else [],
                )
            )
            pending_updates = []
            if inputs:
                replayer.apply(state, record, row.seq)
    return Source(
        trace_id=trace_id,
        info=info,
        last_seq=chain[-1].seq,
        initial=initial,
        first=first,
        last=last,
        execs=execs,
        tail_updates=pending_updates,
        by_occurrence={(e.node, e.occurrence): e for e in execs},
        replayer=replayer,
    )
