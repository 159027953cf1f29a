"""The checkpoint record: what one checkpoint holds, and how it is encoded and verified.

A stored checkpoint is one row: a few columns for queries, ``body`` (msgpack of
:class:`CheckpointBody`: the run's metadata and the raw deltas since the previous checkpoint)
and, for a ``base``, ``snapshot`` (msgpack of the whole state). Each blob has its own CRC-32, so
a damaged row is detected and reported with its trace id and seq instead of restoring a wrong
state. The format is described in ``checkpoints/FORMAT.md``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable
from typing import Any, Literal, TypeAlias

import msgspec

from .._decisions import Decision
from .._directives import StateDelta
from .._events import ErrorInfo
from ..exceptions import CheckpointError

__all__ = (
    "FORMAT_VERSION",
    "BranchRecord",
    "CheckpointBody",
    "CheckpointKind",
    "CheckpointSummary",
    "ChildRun",
    "Claim",
    "EventBatch",
    "Invalidation",
    "KeptOutputs",
    "Lease",
    "LeaseGrant",
    "LeaseInfo",
    "ParentRef",
    "PendingBarrier",
    "RecordedRoute",
    "RunInfo",
    "StepRecord",
    "StoredCheckpoint",
    "StoredDecision",
    "decode_body",
    "decode_snapshot",
    "encode_body",
    "encode_snapshot",
    "encode_steps",
)

FORMAT_VERSION = 1
"""Version of the body/snapshot encoding; stored in every body."""

CheckpointKind: TypeAlias = Literal["base", "delta"]


class RecordedRoute(msgspec.Struct, frozen=True, array_like=True):
    """A routing directive a node returned (``Goto``, ``End``, ``Fallback``), kept so that a
    re-run that reuses the execution routes the way the node asked."""

    kind: Literal["goto", "end", "fallback"]
    target: str | None = None
    """``goto``: the node to continue at."""
    reason: str = ""
    """``fallback``: the reason given."""


class StepRecord(msgspec.Struct, frozen=True, array_like=True):
    """One node execution: the deltas it produced, in the order they were applied, and what a
    re-run needs to decide whether it can be reused.

    Encoded as an array; fields after ``deltas`` are appended with defaults, so records
    written before them still decode (an unset field costs one byte).
    """

    step: int
    node: str
    deltas: list[StateDelta]
    fingerprint: str | None = None
    """The node's fingerprint when it ran (None: the node had none)."""
    keys_read: list[str] | None = None
    """The state keys the execution read, sorted; None: unknown, counted as every key (typed
    state, barriers, records written before keys were recorded)."""
    route: RecordedRoute | None = None
    """The directive the node returned, if any."""
    reused_from: int | None = None
    """In a re-run: the step of the source trace whose recorded output this step replayed."""
    branches: list[BranchRecord] | None = None
    """A parallel node: per branch that succeeded, in declaration order, what it read and how
    many of ``deltas`` (which follow in the same order) it wrote."""


class BranchRecord(msgspec.Struct, frozen=True, array_like=True):
    """One branch of a parallel node execution."""

    name: str
    keys_read: list[str] | None
    deltas: int
    """How many of the step's deltas are this branch's (they are contiguous)."""
    fingerprint: str | None = None


class PendingBarrier(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A barrier the run is waiting at."""

    barrier_id: str
    node: str
    prompt: Any = None
    deadline: float | None = None
    """Wall-clock time (``time.time()``) at which the default action applies; None: never."""


class ChildRun(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A child run (a subgraph node, a map item or a branch that is a graph) that had not
    finished when its parent checkpointed: its whole state and position, so a resumed parent
    resumes it where it stood (waiting at the same barrier id) instead of from its start."""

    state: dict[str, Any]
    step: int
    next_node: str | None
    barrier_counts: dict[str, int] = msgspec.field(default_factory=dict)
    pending_barrier: PendingBarrier | None = None
    """The barrier the child waits at (its id without the child's path)."""
    decisions: dict[str, Any] = msgspec.field(default_factory=dict)
    """The child's unused decisions (ids without its path)."""
    children: dict[str, ChildRun] = msgspec.field(default_factory=dict)
    """The child's own children that had not finished (nested paths), keyed by path."""
    compensable: list[str] = msgspec.field(default_factory=list)


class KeptOutputs(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A parallel (map) node's progress at its step: what its finished branches (items)
    returned, recorded when it failed or before a branch's backoff; the next execution of the
    node at the same step runs only the others, each with the attempts it had left."""

    node: str
    step: int
    results: dict[str, Any]
    """Branch name (``"<node>[<i>]"`` for a map item) to what it returned."""
    attempts: dict[str, tuple[int, float]] = msgspec.field(default_factory=dict)
    """Branches waiting out a backoff when this was recorded: failed attempts so far and the
    wall-clock time of the next one."""


class Invalidation(msgspec.Struct, frozen=True, array_like=True):
    """One execution invalidated on resume: its step and node, old and new fingerprint."""

    step: int
    node: str
    old: str | None
    new: str | None


class ParentRef(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Where a forked or re-run trace came from."""

    trace_id: str
    seq: int
    kind: Literal["fork", "rerun"] = "fork"
    """``fork``: ``ex.fork`` from checkpoint ``seq``; ``rerun``: ``ex.rerun`` of the trace as
    it stood at checkpoint ``seq`` (appended with a default: older records decode as forks)."""


class CheckpointBody(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """Everything a checkpoint records besides the state snapshot.

    Encoded as a msgpack array (field order below, no field names): new fields are only ever
    appended, with defaults, so older records still decode.
    """

    version: int = FORMAT_VERSION
    trace_id: str
    seq: int
    graph_name: str
    graph_hash: str
    step: int
    next_node: str | None
    status: str
    trigger: str
    created_at: float
    barrier_counts: dict[str, int] = msgspec.field(default_factory=dict)
    pending_barrier: PendingBarrier | None = None
    decisions: dict[str, Decision] = msgspec.field(default_factory=dict)
    """Decisions received but not used yet: keyed by barrier id, or node name for a wildcard."""
    decision_cursor: int = 0
    """Id of the last decision read from the store's decision inbox."""
    steps: list[StepRecord] = msgspec.field(default_factory=list)
    """Deltas applied since the previous checkpoint of this trace."""
    error: str | None = None
    parent: ParentRef | None = None
    reducers: dict[str, str] = msgspec.field(default_factory=dict)
    """Base records: the reducer of each key (a built-in's name, or ``custom:<qualname>``), so
    a state can be restored without the graph when only built-ins are involved."""
    barrier_nodes: list[str] = msgspec.field(default_factory=list)
    """Base records: the graph's barrier nodes (copied to the runs index)."""
    attempt: int = 0
    """Failed attempts of ``next_node`` so far (its retry budget already spent)."""
    retry_at: float | None = None
    """Wall-clock time of ``next_node``'s next attempt (a crash during a backoff waits out the
    rest of it on resume)."""
    kept: KeptOutputs | None = None
    """Outputs of the successful branches of a failed parallel or map node."""
    compensable: list[str] = msgspec.field(default_factory=list)
    """Completed nodes that declared ``compensate=``, in completion order (not yet undone)."""
    invalidated: list[Invalidation] = msgspec.field(default_factory=list)
    """The audit trail of a resume with ``invalidate_on_resume``: the executions it ran again
    because their node's fingerprint changed (recorded in the resume's first checkpoint)."""
    trace_context: str | None = None
    """Base records: the W3C ``traceparent`` of the run's first traced segment (telemetry),
    which the spans of later segments (resumes, in any process) join."""
    failure: ErrorInfo | None = None
    """A failed or cancelled run's error as data (type, message, node); ``error`` is its text."""
    turn: int = 1
    """The conversation turn the run is in (a completed trace's next run is turn + 1)."""
    turn_start: int = 0
    """The step count when this turn started (``max_steps`` counts the steps after it)."""
    children: dict[str, ChildRun] = msgspec.field(default_factory=dict)
    """Child runs of ``next_node`` (a subgraph, map or parallel node) that had not finished,
    keyed by path (``"tools[2]"``); the finished ones are in ``kept``."""
    input: Any = None
    """A queued run's (or turn's) input as the caller passed it (``ex.start(..., queue=True)``):
    the worker that drives it sends it in its ``GraphStart``. None in other records."""


class StoredCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """One checkpoint as a store keeps it (one row)."""

    trace_id: str
    seq: int
    kind: CheckpointKind
    step: int
    next_node: str | None
    status: str
    trigger: str
    created_at: float
    body: bytes
    checksum: int
    snapshot: bytes | None = None
    snapshot_checksum: int | None = None

    @property
    def size(self) -> int:
        """Bytes serialized for this checkpoint."""
        return len(self.body) + (len(self.snapshot) if self.snapshot is not None else 0)


class CheckpointSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of ``ex.history(trace_id)``."""

    seq: int
    kind: CheckpointKind
    step: int
    next_node: str | None
    status: str
    trigger: str
    created_at: float
    bytes: int
    state: Any = None
    """The state at this checkpoint, when asked for (``ex.history(..., values=True)``)."""


class RunInfo(msgspec.Struct, kw_only=True):
    """The runs index: one row per trace, updated with every checkpoint."""

    trace_id: str
    graph_name: str
    graph_hash: str
    status: str
    step: int
    next_node: str | None
    last_seq: int
    created_at: float
    updated_at: float
    pending_barrier: str | None = None
    barrier_counts: dict[str, int] = msgspec.field(default_factory=dict)
    barrier_nodes: list[str] = msgspec.field(default_factory=list)
    """Names of the graph's barrier nodes, so the store can refuse a decision for another node."""
    parent: ParentRef | None = None
    lease: LeaseInfo | None = None
    """Who drives the run now, and until when; None when no one holds its lease (a run
    waiting at a barrier holds none). Read from the leases table; ignored when saving."""
    ready_at: float | None = None
    """When the run next needs a driver that does not hold it now (wall clock; None: not
    until something happens): a queued or interrupted run at once, a waiting run at its
    barrier's deadline, or when a decision for it arrives (the store sets that). Set by the
    writer of each save; what ``claim_runs`` orders by."""

    @property
    def rerun_of(self) -> str | None:
        """The trace this one re-runs (``ex.rerun``), or None."""
        parent = self.parent
        return parent.trace_id if parent is not None and parent.kind == "rerun" else None


class StoredDecision(msgspec.Struct, frozen=True, kw_only=True):
    """A decision submitted through the store, in arrival order (``id`` increases)."""

    id: int
    barrier_id: str
    """``"node#3"`` for one occurrence, ``"node#*"`` for every occurrence (a bare node name is
    a row from an older graphexec or written by hand: the run skips it)."""
    decision: Decision | None
    """None when the stored bytes are not a decision (``error`` says why): the run skips it."""
    created_at: float
    error: str | None = None


class EventBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Recorded events of one trace, written together: ``data`` is a msgpack array of events
    (the tagged ``GraphEvent`` union) with ids from ``first_id`` to ``last_id``, increasing.
    Stores keep batches as they are; the executor encodes and decodes them."""

    first_id: int
    last_id: int
    data: bytes


class Lease(msgspec.Struct, frozen=True):
    """Who drives a trace, and for how long after each renewal.

    ``owner`` is a random id per driver; ``token`` the fencing token its grant got (0: a writer
    that never acquired); ``host``, ``pid`` and ``started`` (the process start time) let a
    process on the same host tell that the owner is gone.
    """

    owner: str
    ttl: float
    token: int = 0
    host: str = ""
    pid: int = 0
    started: str = ""


class LeaseInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Who holds a run's lease, and until when (``RunInfo.lease``; a JSON object)."""

    owner: str
    """The holder's random instance id."""
    host: str
    pid: int
    started: str
    """The holder process's start time (boot id and clock ticks), to tell a reused pid apart."""
    expires_at: float
    """Wall-clock time the lease runs out unless renewed."""
    token: int
    """The fencing token: grows with every change of owner."""


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """A run ``claim_runs`` handed to a driver: the lease it now holds (the requested owner
    with the fencing token granted) and the run's index row read in the claim's transaction
    (its status before the claim: queued, interrupted, waiting or running)."""

    trace_id: str
    lease: Lease
    run: RunInfo


class LeaseGrant(msgspec.Struct, frozen=True, kw_only=True):
    """What ``acquire_lease`` returns: the fencing token granted, and the run's index row."""

    token: int
    run: RunInfo | None


_body_encoder = msgspec.msgpack.Encoder()
_body_decoder = msgspec.msgpack.Decoder(CheckpointBody)
_snapshot_decoder = msgspec.msgpack.Decoder(dict[str, Any])


def encode_body(body: CheckpointBody) -> tuple[bytes, int]:
    """Encode a body; returns the bytes and their CRC-32."""
    data = _body_encoder.encode(body)
    return data, zlib.crc32(data)


def encode_steps(steps: list[StepRecord]) -> msgspec.Raw:
    """Pre-encode a body's steps (their size drives compaction); embed the result in a body."""
    return msgspec.Raw(_body_encoder.encode(steps))


def encode_snapshot(state: Any) -> tuple[bytes, int]:
    """Encode a whole state; returns the bytes and their CRC-32."""
    data = _body_encoder.encode(state)
    return data, zlib.crc32(data)


def _row_fields_ok(row: StoredCheckpoint) -> None:
    """Refuse a row whose columns have the wrong types (a damaged record header can turn a blob
    into text or an integer): every later check assumes them."""
    if type(row.trace_id) is not str or type(row.seq) is not int:
        raise CheckpointError(
            f"checkpoint row is damaged (trace id {row.trace_id!r:.40}, seq {row.seq!r:.40})",
            trace_id=row.trace_id if type(row.trace_id) is str else None,
            seq=row.seq if type(row.seq) is int else None,
        )
    if type(row.body) is not bytes or type(row.checksum) is not int:
        raise CheckpointError(
            "checkpoint body is damaged (its column holds "
            f"{type(row.body).__name__}/{type(row.checksum).__name__}, not bytes/int)",
            trace_id=row.trace_id,
            seq=row.seq,
        )


def decode_body(row: StoredCheckpoint) -> CheckpointBody:
    """Verify and decode a row's body; a damaged one is a CheckpointError naming trace and seq."""
    _row_fields_ok(row)
    if zlib.crc32(row.body) != row.checksum:
        raise CheckpointError(
            "checkpoint body is damaged (checksum mismatch)", trace_id=row.trace_id, seq=row.seq
        )
    try:
        body = _body_decoder.decode(row.body)
    except (msgspec.DecodeError, RecursionError) as exc:
        # RecursionError: a body nested deeper than the stack allows (a crafted or damaged
        # one; graphexec refuses such values when a node writes them).
        raise CheckpointError(
            f"checkpoint body cannot be decoded: {exc!r}", trace_id=row.trace_id, seq=row.seq
        ) from exc
    if body.version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {body.version} is newer than this graphexec ({FORMAT_VERSION})",
            trace_id=row.trace_id,
            seq=row.seq,
        )
    if body.trace_id != row.trace_id or body.seq != row.seq:
        raise CheckpointError(
            f"checkpoint body belongs to trace {body.trace_id!r} seq {body.seq}",
            trace_id=row.trace_id,
            seq=row.seq,
        )
    return body


def decode_snapshot(row: StoredCheckpoint) -> dict[str, Any]:
    """Verify and decode a base row's state snapshot."""
    _row_fields_ok(row)
    if row.snapshot is None:
        raise CheckpointError("checkpoint has no snapshot", trace_id=row.trace_id, seq=row.seq)
    if type(row.snapshot) is not bytes or type(row.snapshot_checksum) is not int:
        raise CheckpointError(
            "checkpoint snapshot is damaged (its column holds "
            f"{type(row.snapshot).__name__}/{type(row.snapshot_checksum).__name__}, "
            "not bytes/int)",
            trace_id=row.trace_id,
            seq=row.seq,
        )
    if zlib.crc32(row.snapshot) != row.snapshot_checksum:
        raise CheckpointError(
            "checkpoint snapshot is damaged (checksum mismatch)", trace_id=row.trace_id, seq=row.seq
        )
    try:
        return _snapshot_decoder.decode(row.snapshot)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise CheckpointError(
            f"checkpoint snapshot cannot be decoded: {exc!r}", trace_id=row.trace_id, seq=row.seq
        ) from exc


def summarize(rows: Iterable[StoredCheckpoint]) -> list[CheckpointSummary]:
    """History lines for rows, oldest first."""
    return [
        CheckpointSummary(
            seq=r.seq,
            kind=r.kind,
            step=r.step,
            next_node=r.next_node,
            status=r.status,
            trigger=r.trigger,
            created_at=r.created_at,
            bytes=r.size,
        )
        for r in rows
    ]


def now() -> float:
    """Wall-clock seconds; checkpoints and leases outlive the process, so no monotonic clock."""
    return time.time()
