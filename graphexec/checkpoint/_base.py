"""The CheckpointStore contract, and the rules every store shares.

A store persists :class:`StoredCheckpoint` rows, a runs index (:class:`RunInfo`), a decision
inbox per trace and a lease per trace. It never interprets states or deltas: encoding,
restoring and replaying live in the executor, so every store behaves the same.

Contract (checked by ``tests/checkpoint/test_store_contract.py`` against every store; the
event log, its fencing and cancel requests by ``tests/checkpoint/test_run_manager.py``):

- ``save(rows, run, lease=...)`` is atomic: the rows, the runs-index row and the lease renewal
  commit together or not at all. Saving a ``base`` row at seq ``s`` demotes every earlier base of
  the trace except the first (its snapshot is dropped, kind becomes ``delta``): old bases are
  not needed to restore the latest state, and the deltas they carry keep older seqs restorable
  from the first base. If ``lease`` is given, the lease row must still hold its owner and
  fencing token (``_leases.check_write``), else nothing is written and :class:`LeaseLost` is
  raised (a lease with token 0 takes a free lease instead, RunLocked if held). Every row
  belongs to ``run.trace_id`` and seqs
  strictly increase past the trace's last saved seq (:func:`check_rows`); otherwise nothing is
  written and :class:`CheckpointError` is raised.
- ``load_chain(trace_id, seq)`` returns the latest base at or before ``seq`` (default: the
  latest) and every row after it up to ``seq``, ordered by seq; ``[]`` for an unknown trace.
- Leases: ``acquire_lease`` grants by ``_leases.grant`` (a new owner gets ``token + 1``; a
  live holder answers RunLocked; a holder on this host whose process is gone never blocks);
  ``release_lease`` keeps the row and its token (so the next grant's token grows).
- ``submit_decision`` checks the decision with :func:`check_decision_target` in the same
  transaction as the insert (a refused decision is never stored); ``refuse_decision`` marks
  one the run skipped, so it no longer blocks a corrected one.
- The event log: ``save(..., events=batch)`` appends the batch in the checkpoint's transaction
  (under the save's lease check); ``append_events(trace_id, batch, lease=...)`` appends one on
  its own (a batch written between checkpoints). An append is fenced like a save
  (``_leases.check_append``): the lease row must still carry the writer's fencing token, held
  by the writer or released by it and taken by no one since (a run parked at a barrier, or
  whose final save released the lease, still records its last events); otherwise nothing is
  written and :class:`LeaseLost` is raised. ``events_after(trace_id, after)`` returns the
  batches holding an id greater than ``after``, in id order; ``next_event_segment`` hands out
  1, 2, 3, ... per trace (one per driver), never the same number twice. ``prune`` deletes a
  run's events with it.
- Cancel requests: ``request_cancel`` records one and returns True while a live driver holds
  the trace's lease (held, unexpired, and not an owner on this host whose process is gone:
  ``_leases.LeaseRow.live``); that driver takes it with ``take_cancel_request`` at its next
  poll. It records nothing and returns False when no one drives the run (no lease, released or
  parked at a barrier, expired, or a dead owner): the caller then writes the cancelled record
  itself, taking the lease.
- Work for drivers (``claim_runs``, ``_claims.py``): a run *needs a driver* when no live owner
  holds its lease and it is queued, interrupted or running, or waiting with ``ready_at``
  passed (or with a lease still naming a dead or expired owner). ``claim_runs`` grants such
  runs, oldest ready first (``ready_at``, else ``updated_at``), a lease each by
  ``_leases.grant`` (a new owner: ``token + 1``) and clears their ``ready_at``, in one
  transaction; concurrent claimers, in any process, never get the same run. The rules for
  ``ready_at``, the same in every store:

  - ``save()`` stores what the writer put in ``RunInfo.ready_at``, except that a save with
    status ``"waiting"`` whose ``decisions_after`` read finds decisions (they came before
    the run parked) stores ``ready_at = now``.
  - ``submit_decision()`` sets ``ready_at = now`` when the run is waiting (any accepted
    decision: a spurious wake-up costs one resume that parks again).
  - ``claim_runs()`` clears it on what it claims.
  - A run that becomes claimable by a save (``ready_at <= now``) or a submit sends the
    ``"work"`` hint (``_hints.py``): in process for MemoryStore and SQLiteStore; PostgresStore
    sends ``NOTIFY gx_<schema>, 'work'`` in the same transaction. Only on those transitions:
    never a hint per checkpoint.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from .._barrier_ids import (
    check_decision,
    check_decision_value,
    is_resolved,
    parse_barrier_id,
    stored_key,
)
from .._decisions import Decision
from .._values import check_trace_id
from ..exceptions import CheckpointError, RunFinished, RunNotFound
from ..typing import RUN_STATUSES
from ._hints import Hints
from ._record import (
    CheckpointSummary,
    Claim,
    EventBatch,
    Lease,
    LeaseGrant,
    RunInfo,
    StoredCheckpoint,
    StoredDecision,
)

__all__ = (
    "CheckpointStore",
    "StoreBase",
    "check_decision_target",
    "check_rows",
    "check_status",
    "is_resolved",
    "parse_barrier_id",
    "prunable_statuses",
)

FINISHED_STATUSES = frozenset({"completed"})
"""Runs in these states are over: they cannot be resumed or receive decisions."""

PRUNABLE_STATUSES = frozenset({"completed", "failed", "cancelled"})
"""Statuses ``prune`` may remove; waiting and running runs are never pruned."""


@runtime_checkable
class CheckpointStore(Protocol):
    """Where checkpoints, the runs index, submitted decisions and leases live."""

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
        """Atomically append rows, update the run's index row and hold the lease (released in
        the same transaction with ``release=True``: a run's final save), and append ``events``
        to the trace's event log.

        With ``decisions_after``, also returns the trace's decisions with a greater id (what
        ``decisions_after()`` would), read in the same round trip; otherwise ``[]``.
        """
        ...

    async def load_chain(self, trace_id: str, seq: int | None = None) -> list[StoredCheckpoint]:
        """The rows needed to restore ``trace_id`` at ``seq`` (latest base, then deltas)."""
        ...

    async def get_run(self, trace_id: str) -> RunInfo | None:
        """The run's index row, or None."""
        ...

    async def runs(
        self, *, status: str | None = None, graph_name: str | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Runs, most recently updated first, optionally filtered."""
        ...

    async def history(
        self, trace_id: str, *, limit: int | None = None, before: int | None = None
    ) -> list[CheckpointSummary]:
        """A trace's checkpoints, oldest first: with ``before``, only those with a smaller seq;
        with ``limit``, only the newest ``limit`` of those (the page just before ``before``)."""
        ...

    async def submit_decision(
        self,
        trace_id: str,
        barrier_id: str,
        decision: Decision,
        *,
        every_occurrence: bool = False,
    ) -> int:
        """Queue a decision for a run (in this or another process); returns its inbox id.

        ``barrier_id`` names one occurrence (``"approve#2"``); with ``every_occurrence=True``
        it is a barrier node name and the decision serves every occurrence (stored as
        ``"approve#*"``). Checked in the insert's transaction (:func:`check_decision_target`):
        InvalidDecision (not a decision, bad id, not a barrier, resolved, already decided),
        RunNotFound, RunFinished; nothing is stored then.
        """
        ...

    async def refuse_decision(self, trace_id: str, decision_id: int, reason: str) -> None:
        """Mark an inbox decision the run could not use (it skipped it): it no longer counts
        as the occurrence's decision, so a corrected one can be submitted."""
        ...

    async def decisions_after(self, trace_id: str, cursor: int) -> list[StoredDecision]:
        """Decisions submitted for a trace with an id greater than ``cursor``."""
        ...

    async def acquire_lease(
        self,
        trace_id: str,
        lease: Lease,
        *,
        take_over: bool = False,
        expect_seq: int | None = None,
    ) -> LeaseGrant:
        """Take or renew the lease (``_leases.grant``): RunLocked while another live owner
        holds an unexpired one (a holder on this host whose process is gone never blocks);
        ``take_over=True`` takes it anyway (the former owner's next write fails with
        LeaseLost). ``expect_seq``: the last seq this driver committed; LeaseLost if the trace
        has another (someone drove it meanwhile).

        Returns the fencing token granted and the run's index row read in the same transaction
        (None for a new trace), so a driver starting or resuming a run needs one round trip.
        """
        ...

    async def release_lease(self, trace_id: str, owner: str) -> None:
        """Give the lease up (no-op if ``owner`` does not hold it)."""
        ...

    async def append_events(self, trace_id: str, batch: EventBatch, *, lease: Lease) -> None:
        """Append a batch of recorded events to the trace's event log, written by the driver
        holding ``lease`` (or that held it last: ``_leases.check_append``); LeaseLost, nothing
        written, when another driver has taken the lease since."""
        ...

    async def events_after(self, trace_id: str, after: int) -> list[EventBatch]:
        """The trace's event batches holding an id greater than ``after``, in id order."""
        ...

    async def next_event_segment(self, trace_id: str) -> int:
        """The next event-id segment of the trace: 1, then 2, ... (one per driver)."""
        ...

    async def request_cancel(self, trace_id: str) -> bool:
        """Ask the process driving the run to cancel it. True: recorded (a live driver holds the
        lease: ``LeaseRow.live``); False: nothing recorded, no one drives it (no lease, or one
        released, parked, expired, or held by a dead process on this host): the caller marks
        the run cancelled itself."""
        ...

    async def take_cancel_request(self, trace_id: str) -> bool:
        """True (and the request removed) if a cancel was requested for the trace."""
        ...

    async def prune(
        self, *, older_than: float, statuses: Sequence[str] = ("completed",)
    ) -> list[str]:
        """Delete runs in ``statuses`` last updated before ``older_than``; returns their ids."""
        ...

    async def claim_runs(self, graph_names: Sequence[str], leases: Sequence[Lease]) -> list[Claim]:
        """Claim up to ``len(leases)`` runs that need a driver, of the graphs named (every
        graph when ``graph_names`` is empty), the longest ready first; the i-th run claimed is
        granted ``leases[i]`` (a fresh owner id each; the token asked for is ignored, the one
        granted is in the Claim) and its ``ready_at`` cleared, in one transaction.

        A run needs a driver when it is queued or interrupted; waiting with ``ready_at``
        passed (a decision for it arrived, or its barrier's deadline came); running while no
        live owner holds its lease (free, expired, or held by a process on this host that is
        gone). Concurrent claimers, in any process, never get the same run (Postgres: ``FOR
        UPDATE SKIP LOCKED``; SQLite: one write transaction). Each Claim holds the runs row
        as the claim left it: its status unchanged, its new holder, ``ready_at`` None.
        """
        ...

    async def wait_for(self, topic: str, within: float) -> bool:
        """Wait at most ``within`` seconds for a wake-up hint on ``topic`` (``"work"``,
        ``"events:<trace_id>"``: ``_hints.py``); True if one came. Hints may be lost: the
        caller polls anyway, the hint only cuts its wait short."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources; it reopens on next use."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class StoreBase:
    """Shared plumbing for stores: ``async with store:`` closes it; wake-up hints in process."""

    _hints: Hints | None = None

    @property
    def hints(self) -> Hints:
        """This store object's in-process hint broker (``_hints.py``)."""
        hints = self._hints
        if hints is None:
            hints = self._hints = Hints()
        return hints

    async def wait_for(self, topic: str, within: float) -> bool:
        """Wait at most ``within`` seconds for a hint on ``topic`` (``_hints.py``); True if
        one came. A store that carries hints between processes (Postgres) overrides this."""
        return await self.hints.wait(topic, within)

    @property
    def hints_across_processes(self) -> bool:
        """True while hints from other processes reach this store object, so a waiter may
        poll less often; False here (hints in this process only)."""
        return False

    async def aclose(self) -> None:  # pragma: no cover - overridden
        """Release resources."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def check_rows(rows: Sequence[StoredCheckpoint], run: RunInfo, last_seq: int | None) -> None:
    """Refuse rows of another trace, and seqs that do not increase past ``last_seq``."""
    check_trace_id(run.trace_id)
    previous = last_seq
    for row in rows:
        if row.trace_id != run.trace_id:
            raise CheckpointError(
                f"a checkpoint of trace {row.trace_id!r} cannot be saved with run {run.trace_id!r}",
                trace_id=run.trace_id,
                seq=row.seq,
            )
        if previous is not None and row.seq <= previous:
            raise CheckpointError(
                f"checkpoint seq {row.seq} does not follow seq {previous}: the seqs of a trace "
                "must increase",
                trace_id=run.trace_id,
                seq=row.seq,
            )
        previous = row.seq


def check_decision_target(
    run: RunInfo | None,
    trace_id: str,
    barrier_id: str,
    decision: object,
    *,
    every_occurrence: bool,
    decided: Container[str],
) -> str:
    """The store's side of the one decision check: unknown trace, finished run, then
    :func:`check_decision` against the runs row (barrier nodes, occurrences reached, the one
    waiting) and the inbox (``decided``: ids that already hold an unrefused decision).
    Returns the inbox key (``"node#3"``, or ``"node#*"`` for every occurrence)."""
    check_decision_value(decision, trace_id=trace_id)
    check_trace_id(trace_id)
    if run is None:
        raise RunNotFound(f"no run with trace id {trace_id!r} in this store", trace_id=trace_id)
    if run.status in FINISHED_STATUSES:
        raise RunFinished(
            f"run {trace_id!r} is {run.status}: it takes no more decisions (its next turn "
            "starts with execute/execute_stream on the same trace id)",
            trace_id=trace_id,
        )
    node, occurrence = check_decision(
        barrier_id,
        decision,
        every_occurrence=every_occurrence,
        trace_id=trace_id,
        barrier_nodes=run.barrier_nodes or None,
        counts=run.barrier_counts,
        pending=run.pending_barrier,
        decided=decided,
        graph_name=run.graph_name,
    )
    return stored_key(node, occurrence)


def check_status(status: str | None) -> None:
    """Refuse a ``runs(status=...)`` filter that no run can ever have."""
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(
            f"unknown run status {status!r}; a run is one of: {', '.join(RUN_STATUSES)}"
        )


def prunable_statuses(statuses: Sequence[str]) -> frozenset[str]:
    wanted = frozenset(statuses)
    bad = wanted - PRUNABLE_STATUSES
    if bad:
        raise ValueError(
            f"prune never removes runs that are {', '.join(sorted(bad))}: they may still be "
            f"resumed; allowed: {', '.join(sorted(PRUNABLE_STATUSES))}"
        )
    return wanted
