"""MemoryStore: the CheckpointStore contract in process memory; the reference and test seam."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import anyio

from .._decisions import Decision
from .._values import check_trace_id
from ..exceptions import RunLocked
from ._base import StoreBase, check_decision_target, check_rows, prunable_statuses
from ._record import (
    CheckpointSummary,
    EventBatch,
    Lease,
    RunInfo,
    StoredCheckpoint,
    StoredDecision,
    now,
    summarize,
)

__all__ = ("MemoryStore",)


class MemoryStore(StoreBase):
    """Keeps everything in dicts; lost with the process. Rows are stored encoded, as on disk."""

    def __init__(self) -> None:
        self._rows: dict[str, list[StoredCheckpoint]] = {}
        self._bases: dict[str, list[int]] = {}
        """Per trace, the chain indexes of the rows that are still bases (first, latest)."""
        self._runs: dict[str, RunInfo] = {}
        self._decisions: dict[str, list[StoredDecision]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._events: dict[str, list[EventBatch]] = {}
        self._segments: dict[str, int] = {}
        self._cancels: set[str] = set()
        self._ids = itertools.count(1)
        self._lock = anyio.Lock()

    async def save(
        self,
        rows: Sequence[StoredCheckpoint],
        run: RunInfo,
        *,
        lease: Lease | None = None,
        release: bool = False,
        decisions_after: int | None = None,
        events: EventBatch | None = None,
    ) -> list[StoredDecision]:
        async with self._lock:
            chain = self._rows.get(run.trace_id, [])
            check_rows(rows, run, chain[-1].seq if chain else None)
            if lease is not None:
                self._take_lease(run.trace_id, lease)
            chain = self._rows.setdefault(run.trace_id, [])
            bases = self._bases.setdefault(run.trace_id, [])
            for row in rows:
                if row.kind == "base":
                    # Only the first and the latest base keep snapshots: demote the others.
                    for i in bases[1:]:
                        chain[i] = _demoted(chain[i])
                    bases[1:] = [len(chain)]
                chain.append(row)
            self._runs[run.trace_id] = run
            if events is not None:
                self._events.setdefault(run.trace_id, []).append(events)
            if release and lease is not None:
                self._release(run.trace_id, lease.owner)
        if decisions_after is None:
            return []
        return await self.decisions_after(run.trace_id, decisions_after)

    async def load_chain(self, trace_id: str, seq: int | None = None) -> list[StoredCheckpoint]:
        chain = self._rows.get(trace_id, [])
        if seq is None:
            bases = self._bases.get(trace_id)
            return chain[bases[-1] :] if bases else []
        rows = [r for r in chain if r.seq <= seq]
        for i in range(len(rows) - 1, -1, -1):
            if rows[i].kind == "base":
                return rows[i:]
        return []

    async def get_run(self, trace_id: str) -> RunInfo | None:
        return self._runs.get(trace_id)

    async def runs(
        self, *, status: str | None = None, graph_name: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        found = [
            r
            for r in self._runs.values()
            if (status is None or r.status == status)
            and (graph_name is None or r.graph_name == graph_name)
        ]
        found.sort(key=lambda r: r.updated_at, reverse=True)
        return found[:limit]

    async def history(
        self, trace_id: str, *, limit: int | None = None, before: int | None = None
    ) -> list[CheckpointSummary]:
        rows = self._rows.get(trace_id, [])
        if before is not None:
            rows = [r for r in rows if r.seq < before]
        if limit is not None:
            rows = rows[max(len(rows) - limit, 0) :]
        return summarize(rows)

    async def submit_decision(self, trace_id: str, barrier_id: str, decision: Decision) -> int:
        check_trace_id(trace_id)
        async with self._lock:
            check_decision_target(self._runs.get(trace_id), trace_id, barrier_id)
            stored = StoredDecision(
                id=next(self._ids), barrier_id=barrier_id, decision=decision, created_at=now()
            )
            self._decisions.setdefault(trace_id, []).append(stored)
            return stored.id

    async def decisions_after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
        return [d for d in self._decisions.get(trace_id, []) if d.id > cursor]

    async def acquire_lease(self, trace_id: str, lease: Lease) -> RunInfo | None:
        async with self._lock:
            self._take_lease(trace_id, lease)
            return self._runs.get(trace_id)

    def _take_lease(self, trace_id: str, lease: Lease) -> None:
        held = self._leases.get(trace_id)
        t = now()
        if held is not None and held[0] != lease.owner and held[1] > t:
            raise RunLocked(
                f"run {trace_id!r} is being driven elsewhere; its lease expires in "
                f"{held[1] - t:.1f}s",
                trace_id=trace_id,
                expires_at=held[1],
            )
        self._leases[trace_id] = (lease.owner, t + lease.ttl)

    async def release_lease(self, trace_id: str, owner: str) -> None:
        async with self._lock:
            self._release(trace_id, owner)

    def _release(self, trace_id: str, owner: str) -> None:
        held = self._leases.get(trace_id)
        if held is not None and held[0] == owner:
            del self._leases[trace_id]

    async def append_events(self, trace_id: str, batch: EventBatch) -> None:
        async with self._lock:
            self._events.setdefault(trace_id, []).append(batch)

    async def events_after(self, trace_id: str, after: int) -> list[EventBatch]:
        found = [b for b in self._events.get(trace_id, []) if b.last_id > after]
        found.sort(key=lambda b: b.last_id)
        return found

    async def next_event_segment(self, trace_id: str) -> int:
        async with self._lock:
            segment = self._segments.get(trace_id, 0) + 1
            self._segments[trace_id] = segment
            return segment

    async def request_cancel(self, trace_id: str) -> bool:
        async with self._lock:
            held = self._leases.get(trace_id)
            if held is None or held[1] <= now():
                return False
            self._cancels.add(trace_id)
            return True

    async def take_cancel_request(self, trace_id: str) -> bool:
        async with self._lock:
            if trace_id in self._cancels:
                self._cancels.discard(trace_id)
                return True
            return False

    async def prune(
        self, *, older_than: float, statuses: Sequence[str] = ("completed",)
    ) -> list[str]:
        wanted = prunable_statuses(statuses)
        async with self._lock:
            gone = [
                t for t, r in self._runs.items() if r.status in wanted and r.updated_at < older_than
            ]
            for t in gone:
                self._runs.pop(t, None)
                self._rows.pop(t, None)
                self._bases.pop(t, None)
                self._decisions.pop(t, None)
                self._leases.pop(t, None)
                self._events.pop(t, None)
                self._segments.pop(t, None)
                self._cancels.discard(t)
            return gone

    async def aclose(self) -> None:
        """Nothing to release: the data stays for the life of the object."""


def _demoted(r: StoredCheckpoint) -> StoredCheckpoint:
    """The row as a delta: its body (and deltas) kept, its snapshot dropped."""
    return StoredCheckpoint(
        trace_id=r.trace_id,
        seq=r.seq,
        kind="delta",
        step=r.step,
        next_node=r.next_node,
        status=r.status,
        trigger=r.trigger,
        created_at=r.created_at,
        body=r.body,
        checksum=r.checksum,
    )
