"""What the SQL stores share: their columns, the mapping between rows and records, and the
versioned schema files under ``checkpoints/<backend>/``.

A SQL store differs from another only where its database does (placeholders, locking, how a
transaction is run); the columns and what each holds are the same everywhere, so a record
written by one store reads the same through another (``checkpoints/FORMAT.md``).
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Sequence
from functools import cache
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import msgspec

from .._barrier_ids import check_decision_value
from .._decisions import Decision
from .._values import check_trace_id
from ..exceptions import CheckpointError, InvalidDecision
from ._leases import LeaseRow
from ._record import LeaseInfo, ParentRef, RunInfo, StoredCheckpoint, StoredDecision

__all__ = (
    "MAX_SEQ",
    "ROW_COLUMNS",
    "RUN_COLUMNS",
    "decision_blob",
    "lease_row",
    "migrations",
    "row_params",
    "run_info",
    "run_params",
    "run_select",
    "stored_checkpoint",
    "stored_decision",
)

MAX_SEQ = 2**63 - 1
"""Seqs are signed 64-bit integers in every SQL store."""

ROW_COLUMNS = (
    "trace_id, seq, kind, step, next_node, status, trigger, created_at, "
    "body, checksum, snapshot, snapshot_checksum"
)
"""The checkpoint row's columns, in the order of :func:`row_params` and
:func:`stored_checkpoint`."""

RUN_COLUMNS = (
    "trace_id, graph_name, graph_hash, status, step, next_node, last_seq, created_at, "
    "updated_at, pending_barrier, barrier_counts, barrier_nodes, parent, ready_at"
)
"""The runs-index columns, in the order of :func:`run_params` and :func:`run_info`."""

_MIGRATION_NAME = re.compile(r"^(\d+)_[\w.-]*\.sql$")

_json_encoder = msgspec.json.Encoder()
_counts_decoder = msgspec.json.Decoder(dict[str, int])
_nodes_decoder = msgspec.json.Decoder(list[str])
_parent_decoder = msgspec.json.Decoder(ParentRef)
_decision_encoder = msgspec.msgpack.Encoder()
_decision_decoder = msgspec.msgpack.Decoder(Decision)


def row_params(r: StoredCheckpoint) -> tuple[Any, ...]:
    """A checkpoint's column values, in :data:`ROW_COLUMNS` order."""
    return (
        r.trace_id,
        r.seq,
        r.kind,
        r.step,
        r.next_node,
        r.status,
        r.trigger,
        r.created_at,
        r.body,
        r.checksum,
        r.snapshot,
        r.snapshot_checksum,
    )


def stored_checkpoint(r: Sequence[Any]) -> StoredCheckpoint:
    """A checkpoint row read back (its blobs are verified later, when decoded)."""
    return StoredCheckpoint(
        trace_id=r[0],
        seq=r[1],
        kind=r[2],
        step=r[3],
        next_node=r[4],
        status=r[5],
        trigger=r[6],
        created_at=r[7],
        body=r[8],
        checksum=r[9],
        snapshot=r[10],
        snapshot_checksum=r[11],
    )


def run_params(run: RunInfo) -> tuple[Any, ...]:
    """A runs-index row's column values, in :data:`RUN_COLUMNS` order (JSON as text)."""
    return (
        run.trace_id,
        run.graph_name,
        run.graph_hash,
        run.status,
        run.step,
        run.next_node,
        run.last_seq,
        run.created_at,
        run.updated_at,
        run.pending_barrier,
        _json_encoder.encode(run.barrier_counts).decode(),
        _json_encoder.encode(run.barrier_nodes).decode(),
        None if run.parent is None else _json_encoder.encode(run.parent).decode(),
        run.ready_at,
    )


def run_select(runs: str = "runs", leases: str = "leases") -> str:
    """SELECT of the runs rows with who holds their lease (LEFT JOIN: a run nobody drives has
    no holder), in :func:`run_info`'s column order; filter on ``runs.<column>``."""
    return (
        "SELECT "
        + ", ".join(f"runs.{c}" for c in RUN_COLUMNS.split(", "))
        + ", leases.owner, leases.token, leases.expires_at, leases.host, leases.pid, "
        f"leases.started FROM {runs} AS runs LEFT JOIN {leases} AS leases "
        "ON leases.trace_id = runs.trace_id"
    )


def run_info(r: Sequence[Any]) -> RunInfo:
    """A runs-index row read back (with :func:`run_select`'s lease columns, when there); a
    column that does not decode raises ValueError."""
    return RunInfo(
        trace_id=r[0],
        graph_name=r[1],
        graph_hash=r[2],
        status=r[3],
        step=r[4],
        next_node=r[5],
        last_seq=r[6],
        created_at=r[7],
        updated_at=r[8],
        pending_barrier=r[9],
        barrier_counts=_counts_decoder.decode(r[10]),
        barrier_nodes=_nodes_decoder.decode(r[11]),
        parent=None if r[12] is None else _parent_decoder.decode(r[12]),
        ready_at=_ready_at(r[13]),
        lease=None
        if len(r) < 20 or not r[14]
        else LeaseInfo(
            owner=r[14], token=r[15], expires_at=r[16], host=r[17], pid=r[18], started=r[19]
        ),
    )


def _ready_at(value: object) -> float | None:
    """The ready_at column read back: a number or NULL (anything else is damage)."""
    if value is None or type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    raise ValueError(f"runs.ready_at holds {type(value).__name__} {value!r:.40}, not a time")


def lease_row(r: Sequence[Any]) -> LeaseRow:
    """A lease row read back: ``(owner, token, expires_at, host, pid, started)``."""
    return LeaseRow(owner=r[0], token=r[1], expires_at=r[2], host=r[3], pid=r[4], started=r[5])


def decision_blob(trace_id: str, barrier_id: str, decision: Decision) -> bytes:
    """A decision as the inbox stores it (msgpack), after the checks that need no
    transaction (the trace id, the decision's type); InvalidDecision if it cannot be stored."""
    check_trace_id(trace_id)
    check_decision_value(decision, trace_id=trace_id)
    try:
        return _decision_encoder.encode(decision)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidDecision(
            f"decision for {barrier_id!r} cannot be stored: {exc}", trace_id=trace_id
        ) from exc


def stored_decision(r: Sequence[Any]) -> StoredDecision:
    """An inbox row ``(id, barrier_id, decision, created_at)`` read back. A decision column
    that is not a decision (an older or hand-written row) comes back with ``decision=None`` and
    the reason, for the run to skip and report; only a row without an integer id (the run
    could not move past it) is damage: ValueError (the store makes it a CheckpointError)."""
    if type(r[0]) is not int:
        raise ValueError(f"damaged decision row {tuple(r)!r:.120}")
    try:
        if type(r[2]) is not bytes:
            raise TypeError(f"decision column holds {type(r[2]).__name__}, not msgpack bytes")
        decision: Decision | None = _decision_decoder.decode(r[2])
        error = None
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        decision, error = None, f"{type(exc).__name__}: {exc}"
    return StoredDecision(
        id=r[0], barrier_id=str(r[1]), decision=decision, created_at=r[3], error=error
    )


# -- schema files ------------------------------------------------------------------------------


def _schema_dir(backend: str) -> Traversable:
    """The SQL files: inside the wheel as graphexec/_schema, else ./checkpoints of a checkout."""
    shipped = importlib.resources.files("graphexec") / "_schema" / backend
    if shipped.is_dir():
        return shipped
    return Path(__file__).resolve().parents[2] / "checkpoints" / backend


@cache
def migrations(backend: str) -> list[tuple[int, str, str]]:
    """``(number, file name, SQL)`` of every ``checkpoints/<backend>/NNN_*.sql``, in order."""
    found: dict[int, tuple[int, str, str]] = {}
    folder = _schema_dir(backend)
    if not folder.is_dir():
        raise CheckpointError(f"{backend} schema files not found (looked in {folder})")
    for entry in folder.iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m is None:
            continue
        number = int(m.group(1))
        if number in found:
            raise CheckpointError(
                f"two {backend} migrations numbered {number}: {found[number][1]}, {entry.name}"
            )
        found[number] = (number, entry.name, entry.read_text(encoding="utf-8"))
    return [found[n] for n in sorted(found)]
