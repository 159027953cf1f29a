"""MemoryStore: the CheckpointStore contract in process memory; the reference and test seam."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import anyio
import msgspec

from .._decisions import Decision
from .._values import check_trace_id
from ._base import (
    StoreBase,
    check_decision_target,
    check_rows,
    check_status,
    prunable_statuses,
)
from ._claims import Liveness, check_claim_args, claim, claimable_now, needs_driver, ready_since
from ._hints import WORK
from ._leases import LeaseRow, check_append, check_write, grant
from ._record import (
    CheckpointSummary,
    Claim,
    EventBatch,
    Lease,
    LeaseGrant,
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
        self._refused: dict[str, set[int]] = {}
        """Per trace, the inbox ids a run skipped (refuse_decision)."""
        self._leases: dict[str, LeaseRow] = {}
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
            t = now()
            chain = self._rows.get(run.trace_id, [])
            if lease is not None:
                self._hold_lease(run.trace_id, lease)
            check_rows(rows, run, chain[-1].seq if chain else None)
            found = None if decisions_after is None else self._after(run.trace_id, decisions_after)
            if run.status == "waiting" and found:
                # Decisions came before the run parked: it is ready at once.
                run = msgspec.structs.replace(run, ready_at=t)
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
        if claimable_now(run, t):
            self.hints.notify(WORK)
        return found or []

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
        return self._with_lease(self._runs.get(trace_id))

    def _with_lease(self, run: RunInfo | None) -> RunInfo | None:
        """The runs row as read back: with who holds its lease."""
        if run is None:
            return None
        held = self._leases.get(run.trace_id)
        lease = held.info() if held is not None and held.owner else None
        return msgspec.structs.replace(run, lease=lease)

    async def runs(
        self, *, status: str | None = None, graph_name: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        check_status(status)
        found = [
            r
            for r in self._runs.values()
            if (status is None or r.status == status)
            and (graph_name is None or r.graph_name == graph_name)
        ]
        found.sort(key=lambda r: r.updated_at, reverse=True)
        return [r for r in map(self._with_lease, found[:limit]) if r is not None]

    async def history(
        self, trace_id: str, *, limit: int | None = None, before: int | None = None
    ) -> list[CheckpointSummary]:
        rows = self._rows.get(trace_id, [])
        if before is not None:
            rows = [r for r in rows if r.seq < before]
        if limit is not None:
            rows = rows[max(len(rows) - limit, 0) :]
        return summarize(rows)

    async def submit_decision(
        self,
        trace_id: str,
        barrier_id: str,
        decision: Decision,
        *,
        every_occurrence: bool = False,
    ) -> int:
        check_trace_id(trace_id)
        async with self._lock:
            refused = self._refused.get(trace_id, set())
            key = check_decision_target(
                self._runs.get(trace_id),
                trace_id,
                barrier_id,
                decision,
                every_occurrence=every_occurrence,
                decided={
                    d.barrier_id for d in self._decisions.get(trace_id, []) if d.id not in refused
                },
            )
            stored = StoredDecision(
                id=next(self._ids), barrier_id=key, decision=decision, created_at=now()
            )
            self._decisions.setdefault(trace_id, []).append(stored)
            run = self._runs[trace_id]
            if run.status == "waiting":
                # Its driver can go on now: any worker may (a spurious wake-up parks again).
                self._runs[trace_id] = msgspec.structs.replace(run, ready_at=stored.created_at)
                self.hints.notify(WORK)
            return stored.id

    async def refuse_decision(self, trace_id: str, decision_id: int, reason: str) -> None:
        async with self._lock:
            self._refused.setdefault(trace_id, set()).add(decision_id)

    async def decisions_after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
        return self._after(trace_id, cursor)

    def _after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
        return [d for d in self._decisions.get(trace_id, []) if d.id > cursor]

    async def acquire_lease(
        self,
        trace_id: str,
        lease: Lease,
        *,
        take_over: bool = False,
        expect_seq: int | None = None,
    ) -> LeaseGrant:
        async with self._lock:
            chain = self._rows.get(trace_id)
            new = grant(
                self._leases.get(trace_id),
                lease,
                now(),
                trace_id=trace_id,
                take_over=take_over,
                last_seq=chain[-1].seq if chain else None,
                expect_seq=expect_seq,
            )
            self._leases[trace_id] = new
            return LeaseGrant(token=new.token, run=self._with_lease(self._runs.get(trace_id)))

    async def claim_runs(self, graph_names: Sequence[str], leases: Sequence[Lease]) -> list[Claim]:
        check_claim_args(graph_names, leases)
        if not leases:
            return []
        async with self._lock:
            t, alive = now(), Liveness()
            wanted = set(graph_names)
            # dict order is first insertion: the tie-break SQL stores take from rowid / id.
            ready = sorted(
                (
                    r
                    for r in self._runs.values()
                    if (not wanted or r.graph_name in wanted)
                    and needs_driver(r.status, r.ready_at, self._leases.get(r.trace_id), t, alive)
                ),
                key=ready_since,
            )
            claims: list[Claim] = []
            for run, lease in zip(ready, leases, strict=False):
                done, self._leases[run.trace_id] = claim(
                    run, self._leases.get(run.trace_id), lease, t
                )
                self._runs[run.trace_id] = msgspec.structs.replace(run, ready_at=None)
                claims.append(done)
            return claims

    def _hold_lease(self, trace_id: str, lease: Lease) -> None:
        """Every save's check (see SQLiteStore's _hold_lease)."""
        row = self._leases.get(trace_id)
        t = now()
        if lease.token == 0:
            self._leases[trace_id] = grant(row, lease, t, trace_id=trace_id)
        elif check_write(row, lease, t, trace_id=trace_id):
            assert row is not None
            row.expires_at = t + lease.ttl

    async def release_lease(self, trace_id: str, owner: str) -> None:
        async with self._lock:
            self._release(trace_id, owner)

    def _release(self, trace_id: str, owner: str) -> None:
        held = self._leases.get(trace_id)
        if held is not None and held.owner == owner:
            held.owner = ""  # the row and its token stay: the next owner's token grows
            held.expires_at = 0.0

    async def append_events(self, trace_id: str, batch: EventBatch, *, lease: Lease) -> None:
        async with self._lock:
            check_append(self._leases.get(trace_id), lease, trace_id=trace_id)
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
            if held is None or not held.live(now()):
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
                self._refused.pop(t, None)
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
