"""The stored form of recorded event batches, and reading them back (``checkpoints/FORMAT.md``,
"Event log").

Version 1 stored a batch as a msgpack array of events, each a map with its field names, and a
batch written with a checkpoint repeated values the checkpoint holds: a ``StateChanged``
carried the delta of its step record (1 KiB a step for W3's appended strings), and
``GraphComplete`` the whole final state, which the completion checkpoint restores to. Version 2
stores each event as ``[type, [field values in declaration order]]`` (the names are in the
code, not in every record), and such a field as nil with a reference to the checkpoint that
holds the value; :func:`read_events` puts the values back, so a reader gets the events a live
consumer got. A payload of :data:`COMPRESS_AT` bytes or more is stored zlib-compressed.
Version-1 batches still read.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection
from typing import Any, get_args

import msgspec

from . import reducers as _reducers
from ._events import GraphComplete, GraphEvent, StateChanged
from ._restore import restore
from .checkpoint._base import CheckpointStore
from .checkpoint._record import EventBatch, StepRecord, decode_body
from .exceptions import CheckpointError

__all__ = (
    "COMPRESS_AT",
    "Sources",
    "decode_batch",
    "encode_events",
    "read_events",
    "restorable_without_graph",
)

MARK = 0xC1
"""First byte of a version-2 batch: a byte msgpack never uses, so no version-1 batch (a msgpack
array) starts with it."""

VERSION = 2

COMPRESS_AT = 512
"""A version-2 payload of this many bytes or more is stored zlib-compressed (level 1), as
checkpoint bodies are. One step's events (~200 bytes once their delta values are references)
stay as they are: compressing them would cost more than the run's own work on the step."""

_FLAG_ZLIB = 1

Ref = tuple[int, int, int, int]
"""``(event index, seq, record, delta)``: the event's value is delta ``delta`` of step record
``record`` in checkpoint ``seq`` of the trace; ``record`` -1: the state restored at ``seq``."""

_STATE = -1

_TYPES: dict[str, type[Any]] = {cls.__name__: cls for cls in get_args(GraphEvent)}
_DELTA = StateChanged.__struct_fields__.index("delta")
_STATE_FIELD = GraphComplete.__struct_fields__.index("state")

_BUILTIN_NAMES = frozenset(_reducers.BUILTIN_NAMES.values())

_encoder = msgspec.msgpack.Encoder()
_v1 = msgspec.msgpack.Decoder(list[GraphEvent])
_v2 = msgspec.msgpack.Decoder(tuple[list[Ref], list[tuple[str, list[Any]]]])
_astuple = msgspec.structs.astuple

_SCALARS = (int, float, bool, type(None))
_SHORT = 16
"""A delta is stored by reference only when it is worth it: not a number, bool or None, and
not a str or bytes shorter than this (a reference costs about six bytes)."""


class Sources:
    """Where the values of a batch's events are also stored: the step records of the
    checkpoints committed in the same transaction, and the seq of the run's completion
    checkpoint once it is committed (if its state restores without the graph)."""

    __slots__ = ("_by_step", "_checkpoints", "state_seq")

    def __init__(self) -> None:
        self._checkpoints: list[tuple[int, list[StepRecord]]] = []
        self._by_step: dict[tuple[int, str], list[tuple[int, int, StepRecord]]] | None = None
        """(step, node) -> [(seq, index of the record in that checkpoint's steps, record)],
        built when the first event asks (most batches have no delta worth a reference)."""
        self.state_seq: int | None = None

    def add(self, seq: int, records: list[StepRecord]) -> None:
        """The step records of checkpoint ``seq`` (in its body's order)."""
        self._checkpoints.append((seq, records))

    def find(self, event: StateChanged) -> tuple[int, int, int] | None:
        """(seq, record, delta) of the recorded delta this event carries, or None."""
        by_step = self._by_step
        if by_step is None:
            by_step = self._by_step = {}
            for seq, records in self._checkpoints:
                for r, record in enumerate(records):
                    by_step.setdefault((record.step, record.node), []).append((seq, r, record))
        found = by_step.get((event.step, event.node))
        if found is None:
            return None
        value = event.delta
        for seq, r, record in found:
            for d, delta in enumerate(record.deltas):
                # The same object: the record and the event were built from one list of
                # changes, so the value decodes the same from either.
                if delta.value is value and delta.key == event.key and not delta.overwrite:
                    return seq, r, d
        return None


def restorable_without_graph(reducer_names: Collection[str]) -> bool:
    """A state recorded with these reducers restores in any process (built-ins only: a custom
    or registered reducer needs the graph or the registration there)."""
    return all(name in _BUILTIN_NAMES for name in reducer_names)


def _worth_a_reference(value: Any) -> bool:
    t = type(value)
    if t in _SCALARS:
        return False
    return not ((t is str or t is bytes) and len(value) < _SHORT)


def encode_events(events: list[GraphEvent], sources: Sources | None) -> bytes:
    """The stored form (version 2) of ``events``; TypeError/ValueError/OverflowError when one
    cannot be encoded (the caller leaves such an event out)."""
    refs: list[Ref] = []
    stored: list[tuple[str, Any]] = [(type(e).__name__, _astuple(e)) for e in events]
    if sources is not None:
        for i, event in enumerate(events):
            if type(event) is StateChanged:
                if _worth_a_reference(event.delta):
                    where = sources.find(event)
                    if where is not None:
                        values = list(stored[i][1])
                        values[_DELTA] = None
                        stored[i] = (stored[i][0], values)
                        refs.append((i, *where))
            elif type(event) is GraphComplete and sources.state_seq is not None:
                values = list(stored[i][1])
                values[_STATE_FIELD] = None
                stored[i] = (stored[i][0], values)
                refs.append((i, sources.state_seq, _STATE, 0))
    payload = _encoder.encode((refs, stored))
    flags = 0
    if len(payload) >= COMPRESS_AT:
        packed = zlib.compress(payload, 1)
        if len(packed) < len(payload):
            payload, flags = packed, _FLAG_ZLIB
    return bytes((MARK, VERSION, flags)) + payload


def _damaged(trace_id: str, batch: EventBatch, what: str) -> CheckpointError:
    return CheckpointError(
        f"recorded events {batch.first_id}..{batch.last_id} of trace {trace_id!r} {what}",
        trace_id=trace_id,
    )


def decode_batch(trace_id: str, batch: EventBatch) -> tuple[list[GraphEvent], list[Ref]]:
    """The events of a stored batch (either version) and its references, not yet resolved;
    a batch that does not decode is a CheckpointError naming the trace and its ids."""
    data = batch.data
    try:
        if data[:1] != bytes((MARK,)):
            return _v1.decode(data), []
        if len(data) < 3 or data[1] != VERSION:
            raise _damaged(trace_id, batch, f"have an unknown format (version {data[1:2]!r})")
        payload = data[3:]
        if data[2] & _FLAG_ZLIB:
            try:
                payload = zlib.decompress(payload)
            except zlib.error as exc:
                raise _damaged(trace_id, batch, f"do not inflate: {exc}") from exc
        refs, stored = _v2.decode(payload)
        events: list[GraphEvent] = []
        for name, values in stored:
            cls = _TYPES.get(name)
            if cls is None:
                raise _damaged(trace_id, batch, f"hold an unknown event type {name!r:.60}")
            # Fields a later version appended are ignored here, as a map's unknown keys are.
            fields = cls.__struct_fields__
            events.append(msgspec.convert(dict(zip(fields, values, strict=False)), cls))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise _damaged(trace_id, batch, f"cannot be decoded: {exc}") from exc
    return events, refs


async def read_events(store: CheckpointStore, trace_id: str, after: int) -> list[GraphEvent]:
    """The recorded events of ``trace_id`` with an id greater than ``after``, in id order, with
    every referenced value read back from its checkpoint; anything damaged or missing is a
    CheckpointError naming the trace and the events."""
    decoded = [
        (batch, *decode_batch(trace_id, batch))
        for batch in await store.events_after(trace_id, after)
    ]
    pending = [(batch, events, refs) for batch, events, refs in decoded if refs]
    if pending:
        await _resolve(store, trace_id, pending)
    return [e for _batch, events, _refs in decoded for e in events if e.event_id > after]


async def _resolve(
    store: CheckpointStore,
    trace_id: str,
    pending: list[tuple[EventBatch, list[GraphEvent], list[Ref]]],
) -> None:
    """Put the referenced values back into the events (in place in each list)."""
    steps = await _step_records(
        store, trace_id, {seq for _b, _e, refs in pending for _i, seq, r, _d in refs if r >= 0}
    )
    states: dict[int, Any] = {}
    for batch, events, refs in pending:
        for i, seq, r, d in refs:
            if not 0 <= i < len(events):
                raise _damaged(trace_id, batch, f"refer to event {i} of {len(events)}")
            event = events[i]
            if r == _STATE:
                if type(event) is not GraphComplete:
                    raise _damaged(trace_id, batch, f"refer a state to a {type(event).__name__}")
                if seq not in states:
                    try:
                        states[seq] = (await restore(store, trace_id, seq=seq)).state
                    except CheckpointError as exc:
                        raise _damaged(
                            trace_id, batch, f"need the state at checkpoint {seq}: {exc.message}"
                        ) from exc
                events[i] = msgspec.structs.replace(event, state=states[seq])
                continue
            records = steps.get(seq)
            if records is None:
                raise _damaged(trace_id, batch, f"refer to checkpoint {seq}, which is missing")
            if (
                type(event) is not StateChanged
                or not 0 <= r < len(records)
                or not 0 <= d < len(records[r].deltas)
                or records[r].deltas[d].key != event.key
            ):
                raise _damaged(
                    trace_id, batch, f"refer to a delta checkpoint {seq} does not hold ({r}, {d})"
                )
            events[i] = msgspec.structs.replace(event, delta=records[r].deltas[d].value)


async def _step_records(
    store: CheckpointStore, trace_id: str, seqs: set[int]
) -> dict[int, list[StepRecord]]:
    """The step records of checkpoints ``seqs`` (those that exist): each ``load_chain`` call
    returns the rows from a base up to the seq asked for, so the latest seq not seen yet is
    asked for until every one was."""
    found: dict[int, list[StepRecord]] = {}
    missing = set(seqs)
    while missing:
        last = max(missing)
        rows = await store.load_chain(trace_id, last)
        got = {row.seq: row for row in rows if row.seq in missing}
        if last not in got:
            missing.discard(last)  # reported by the caller as missing
            continue
        for seq, row in got.items():
            found[seq] = decode_body(row).steps
            missing.discard(seq)
    return found
