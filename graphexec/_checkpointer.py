"""Writing a run's checkpoints: when (the policy's triggers), base or delta, compaction, sync or
async durability.

One Checkpointer belongs to one run. It buffers the step records since the last checkpoint,
decides base versus delta, encodes (in the run's task, so the state is captured at that
moment), and commits: inline (``durability="sync"``) or through a writer task that batches
pending records into one transaction (``"async"``). The lease is kept by a LeaseKeeper
(``_lease.py``). A run without a store gets a :class:`NullCheckpointer`: the loop never asks
whether there is a store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from . import reducers as _reducers
from ._callables import describe
from ._context import _Usage
from ._directives import End, Goto, StateDelta
from ._eventcodec import Sources, restorable_without_graph
from ._events import CheckpointSaved, ErrorInfo
from ._lease import LeaseKeeper
from ._policy import CheckpointPolicy
from .checkpoint._base import CheckpointStore
from .checkpoint._record import (
    BranchRecord,
    CheckpointBody,
    ChildRun,
    Invalidation,
    Lease,
    ParentRef,
    PendingBarrier,
    RecordedRoute,
    RunInfo,
    StepRecord,
    StoredCheckpoint,
    StoredDecision,
    encode_body,
    encode_snapshot,
    encode_steps,
    now,
)
from .exceptions import CheckpointError, GraphError, LeaseLost

if TYPE_CHECKING:
    from ._eventlog import EventLog
    from ._run.position import Position

__all__ = (
    "MIN_BASE_WEIGHT",
    "Checkpointer",
    "NullCheckpointer",
    "recorded_route",
    "reducer_names",
)

MIN_BASE_WEIGHT = 4096
"""Bytes of deltas since the last base below which the deltas never count as outweighing it."""


def recorded_route(directive: Any) -> RecordedRoute:
    """How a step record keeps a ``Goto``, ``End`` or ``Fallback`` a node returned."""
    if isinstance(directive, Goto):
        return RecordedRoute("goto", directive.target)
    if isinstance(directive, End):
        return RecordedRoute("end")
    return RecordedRoute("fallback", reason=directive.reason)


def reducer_names(reducers: dict[str, Any]) -> dict[str, str]:
    """Names of a graph's reducers as recorded in base checkpoints."""
    return {k: _reducers.name_of(r, describe) for k, r in reducers.items()}


class Checkpointer:
    """Checkpoint writer for one run."""

    records = True
    """Every step is noted (``after_step``): the loop asks after each one."""

    def __init__(
        self,
        *,
        store: CheckpointStore,
        policy: CheckpointPolicy,
        trace_id: str,
        graph_name: str,
        graph_hash: str,
        reducers: dict[str, str],
        barrier_nodes: list[str],
        lease_ttl: float,
        send_event: Callable[[CheckpointSaved], Awaitable[None]] | None,
        parent: ParentRef | None = None,
        events: EventLog | None = None,
    ) -> None:
        self.store = store
        self.events = events
        """The run's event log: its pending events ride each checkpoint's transaction."""
        self.policy = policy
        self.trace_id = trace_id
        self.graph_name = graph_name
        self.graph_hash = graph_hash
        self.reducers = reducers
        self.barrier_nodes = barrier_nodes
        self.lease_ttl = lease_ttl
        self.send_event = send_event
        self.parent = parent
        self.trace_context: str | None = None
        """The W3C ``traceparent`` recorded in every base (the run's spans join it)."""
        self.seq = 0
        self.base_graph_hash = graph_hash
        """The graph hash in force since the trace's latest base (what a restore would find)."""
        self.created_at = now()
        self.keeper = LeaseKeeper(store, trace_id, lease_ttl)
        if events is not None:
            keeper = self.keeper
            events.lease = lambda: keeper.lease  # event appends are fenced by this lease
        self.explicit_requested = False
        self.rewind: list[Invalidation] | None = None
        """Set by a resume that invalidates executions: the next checkpoint is a base (the
        trace's state starts over from its first one) recording these invalidations."""
        # compaction bookkeeping
        self._steps: list[StepRecord] = []
        self._records: dict[int, list[StepRecord]] = {}
        """The step records of each checkpoint saved but not committed yet (with an event
        log): the events committed with it refer to its deltas instead of repeating them."""
        self._deltas_since_base = 0
        self._delta_bytes_since_base = 0
        self._base_bytes = 0
        self._score = 0.0
        # async durability
        self._queue: list[tuple[StoredCheckpoint, RunInfo]] = []
        self._wake = anyio.Event()
        self._idle = anyio.Event()
        self._inflight = 0
        self._error: BaseException | None = None
        self._closed = False
        self._final_seq: int | None = None
        self._park_seq: int | None = None

    @property
    def lease(self) -> Lease:
        """This run's lease on its trace."""
        return self.keeper.lease

    @property
    def owner(self) -> str:
        """The lease owner id of this run."""
        return self.keeper.owner

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Start the background work: the async writer, and lease renewal between saves."""
        self._idle.set()
        if self.policy.durability == "async":
            tg.start_soon(self._writer)
        self.keeper.start(tg)

    async def close(self) -> None:
        """Flush pending writes and give the lease up (unless the final save did)."""
        try:
            await self.flush()
        finally:
            self._closed = True
            self._wake.set()
            await self.keeper.release()

    async def park(self) -> None:
        """A barrier waits: hold no lease meanwhile (no-op if its waiting save gave it up)."""
        await self.flush()
        await self.keeper.park()

    async def unpark(self) -> None:
        """The wait is over: take the lease back before anything runs (LeaseLost if the run
        was resumed elsewhere meanwhile)."""
        await self.keeper.unpark()

    # -- what the run reports ------------------------------------------------------------------

    def note_step(
        self,
        step: int,
        node: str,
        changes: list[tuple[str, Any]],
        seconds: float = 0.0,
        tokens: float = 0.0,
        *,
        fingerprint: str | None = None,
        keys_read: Collection[str] | None = None,
        directive: Any = None,
        reused_from: int | None = None,
        branches: list[BranchRecord] | None = None,
    ) -> None:
        """Buffer one node execution's record (its deltas, fingerprint, the keys it read, the
        directive it returned), and add its work to the adaptive score."""
        self._steps.append(
            StepRecord(
                step,
                node,
                [StateDelta(k, v) for k, v in changes],
                fingerprint,
                sorted(keys_read) if keys_read is not None else None,
                None if directive is None else recorded_route(directive),
                reused_from,
                branches,
            )
        )
        self._score += self.policy.score.score(seconds, tokens)

    def after_step(
        self,
        step: int,
        node: str,
        changes: list[tuple[str, Any]],
        seconds: float,
        usage: _Usage | None,
        side_effects: bool,
        *,
        more: bool,
        fingerprint: str | None = None,
        keys_read: Collection[str] | None = None,
        directive: Any = None,
        branches: list[BranchRecord] | None = None,
    ) -> str | None:
        """Note a node execution (note_step); the trigger of a checkpoint due now, if ``more``
        steps follow (the run's end writes its own)."""
        self.note_step(
            step,
            node,
            changes,
            seconds,
            usage.tokens if usage else 0.0,
            fingerprint=fingerprint,
            keys_read=keys_read,
            directive=directive,
            branches=branches,
        )
        if not more:
            return None
        return self.trigger_after_step(side_effects or bool(usage and usage.side_effects))

    def request_explicit(self) -> None:
        """handle.checkpoint(): save at the next step boundary (with ``on_explicit``)."""
        self.explicit_requested = True

    def trigger_after_step(self, side_effects: bool) -> str | None:
        """The trigger of a checkpoint due after a step, or None (no checkpoint now)."""
        policy = self.policy
        if policy.every_step:
            return "step"
        if side_effects and policy.score.always_after_side_effects:
            return "side_effects"
        if policy.adaptive and self._score >= policy.score.threshold:
            return "adaptive"
        if self.explicit_requested and policy.on_explicit:
            self.explicit_requested = False
            return "explicit"
        return None

    @property
    def on_barrier(self) -> bool:
        """Checkpoint when a barrier starts waiting and when it is resolved."""
        return self.policy.on_barrier

    def completion_seq(self) -> int | None:
        """The seq of the run's completion checkpoint (call once it is committed), if a reader
        can restore its state without the graph (built-in reducers only); else None."""
        if self._final_seq is None or not restorable_without_graph(self.reducers.values()):
            return None
        return self._final_seq

    @property
    def on_completion(self) -> bool:
        """Checkpoint when the run ends (completed, failed)."""
        return self.policy.on_completion

    # -- writing ------------------------------------------------------------------------------

    async def save(
        self,
        run: Position,
        state: dict[str, Any],
        trigger: str,
        *,
        error: str | None = None,
        failure: ErrorInfo | None = None,
        final: bool = False,
        release: bool = False,
        decisions_after: int | None = None,
        allow_base: bool = True,
        input: Any = None,
    ) -> list[StoredDecision] | None:
        """Write one checkpoint of ``state`` and ``run`` (base or delta, by the compaction rule).

        ``final``: the run's last checkpoint; its commit also releases the lease (one round
        trip fewer than a separate release). ``release``: the commit gives the lease up too,
        but the run goes on (a barrier starts waiting: it holds no lease while it waits). ``decisions_after``: also read the decisions
        submitted through the store since that id, in the same round trip; returns them, or
        None when the commit happens behind the run (async durability) and nothing was read.
        ``allow_base=False``: ``state`` must not be recorded (it is half updated); the record
        is a delta of the buffered steps, so it restores to the last good state. ``input``: a
        queued run's input, recorded for the worker that will drive it.

        The runs row's ``ready_at`` says when the run next needs a driver that does not hold
        it (what ``claim_runs`` orders by): now for a queued or interrupted run, the pending
        barrier's deadline for a waiting one (a decision makes it ready earlier: the store
        sees to that), None otherwise.
        """
        if self._error is None and self.keeper.error is not None:
            self._error = self.keeper.error
        if self._error is not None:
            raise self._wrap(self._error)
        if not allow_base and self.seq == 0:
            raise CheckpointError(
                "no checkpoint to record on top of: the state is half updated and the trace "
                "has no earlier checkpoint",
                trace_id=self.trace_id,
            )
        self.seq += 1
        seq = self.seq
        if final:
            self._final_seq = seq
        elif release:
            self._park_seq = seq
        t = now()
        try:
            steps = encode_steps(self._steps)
            # A new base when compact_every deltas have piled up since the last one, or when
            # replaying the deltas would cost more than loading a fresh base. Below
            # MIN_BASE_WEIGHT, replaying is cheap whatever the ratio, and a base is not worth
            # its write (it also demotes the previous one).
            rewind = self.rewind
            base = allow_base and (
                seq == 1
                or rewind is not None
                or self._deltas_since_base + 1 >= self.policy.compact_every
                or self._delta_bytes_since_base + len(steps)
                > max(self._base_bytes, MIN_BASE_WEIGHT)
            )
            snapshot = snap_crc = None
            if base:
                snapshot, snap_crc = encode_snapshot(state)
            body = CheckpointBody(
                trace_id=self.trace_id,
                seq=seq,
                # Recorded in bases; a delta repeats the hash only if the graph differs from
                # its base's (a run resumed on a changed graph). Restore takes the last one.
                graph_name=self.graph_name if base else "",
                graph_hash=self.graph_hash
                if base or self.graph_hash != self.base_graph_hash
                else "",
                step=run.step,
                next_node=run.next_node,
                status=run.status,
                trigger=trigger,
                created_at=t,
                barrier_counts=run.barrier_counts,  # encoded right below: no copy needed
                pending_barrier=run.pending,
                decisions=run.decisions,
                decision_cursor=run.decision_cursor,
                steps=steps,  # type: ignore[arg-type]  # pre-encoded list[StepRecord]
                error=error,
                parent=self.parent if base else None,
                reducers=self.reducers if base else {},
                barrier_nodes=self.barrier_nodes if base else [],
                invalidated=(rewind or []) if base else [],
                attempt=run.attempt,
                retry_at=run.retry_at,
                kept=run.kept,
                compensable=run.compensable,
                trace_context=self.trace_context if base else None,
                failure=failure,
                turn=run.turn,
                turn_start=run.turn_start,
                children=run.children,
                input=input,
            )
            data, crc = encode_body(body)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            # RecursionError: nested too deep for the stack here (node values are capped at
            # _values.MAX_DEPTH, but a custom reducer can nest deeper step by step).
            self.seq -= 1
            where, node = _find_unencodable(self._steps, state)
            raise CheckpointError(
                f"state cannot be checkpointed: {where} is not msgspec-encodable ({exc})",
                trace_id=self.trace_id,
                node=node,
                seq=seq,
            ) from exc
        # Remember the bookkeeping: a failed sync commit puts it back, so the next checkpoint
        # still carries these steps (a record that skipped them would restore a wrong state).
        undo = (
            self._steps,
            self._score,
            self._base_bytes,
            self._deltas_since_base,
            self._delta_bytes_since_base,
            self.rewind,
        )
        if self.events is not None and self.events.store is not None:
            self._records[seq] = self._steps
        self._steps = []
        self._score = 0.0
        if base:
            self.rewind = None
            assert snapshot is not None
            self.base_graph_hash = self.graph_hash
            self._base_bytes = len(snapshot)
            self._deltas_since_base = 0
            self._delta_bytes_since_base = 0
        else:
            self._deltas_since_base += 1
            self._delta_bytes_since_base += len(steps)
        row = StoredCheckpoint(
            trace_id=self.trace_id,
            seq=seq,
            kind="base" if base else "delta",
            step=run.step,
            next_node=run.next_node,
            status=run.status,
            trigger=trigger,
            created_at=t,
            body=data,
            checksum=crc,
            snapshot=snapshot,
            snapshot_checksum=snap_crc,
        )
        info = RunInfo(
            trace_id=self.trace_id,
            graph_name=self.graph_name,
            graph_hash=self.graph_hash,
            status=run.status,
            step=run.step,
            next_node=run.next_node,
            last_seq=seq,
            created_at=self.created_at,
            updated_at=t,
            pending_barrier=run.pending.barrier_id if run.pending else None,
            barrier_counts=dict(run.barrier_counts),
            barrier_nodes=self.barrier_nodes,
            parent=self.parent,
            ready_at=_ready_at(run, t),
        )
        if self.policy.durability == "async" and not self._closed:
            self._queue.append((row, info))
            self._idle = anyio.Event() if self._idle.is_set() else self._idle
            self._wake.set()
            return None
        # Shielded like the async writer: the bookkeeping above already counts this row, so a
        # cancel landing mid-commit would lose its deltas (the next checkpoint would omit them).
        found: list[StoredDecision] = []
        try:
            with anyio.CancelScope(shield=True):
                found = await self._commit([(row, info)], decisions_after)
        except BaseException:
            self._records.pop(seq, None)
            self.seq -= 1
            (
                self._steps,
                self._score,
                self._base_bytes,
                self._deltas_since_base,
                self._delta_bytes_since_base,
                self.rewind,
            ) = undo
            raise
        return found

    async def _commit(
        self,
        batch: list[tuple[StoredCheckpoint, RunInfo]],
        decisions_after: int | None = None,
    ) -> list[StoredDecision]:
        keeper = self.keeper
        if keeper.error is not None:
            raise keeper.error
        last = batch[-1][0].seq
        final = last == self._final_seq
        park = last == self._park_seq
        log = self.events
        if log is not None and log.store is None:
            log = None  # events are not recorded: nothing rides the commit
        sources: Sources | None = None
        if log is not None:
            sources = Sources()
            for row, _ in batch:
                records = self._records.pop(row.seq, None)
                if records:
                    sources.add(row.seq, records)
        try:
            # A barrier that waited gave the lease up: take it back (checking nobody drove
            # the run meanwhile) before writing.
            await keeper.unpark()
            if log is not None:
                # The run's pending events ride the checkpoint's transaction (fenced by the
                # same lease check). The lock is taken without anyio's cancellation check
                # when free (a commit runs shielded, so the check could not raise; it costs
                # a step about a microsecond).
                try:
                    log.lock.acquire_nowait()
                except anyio.WouldBlock:
                    await log.lock.acquire()
            ok = False
            try:
                found = await self.store.save(
                    [r for r, _ in batch],
                    batch[-1][1],
                    lease=self.lease,
                    release=final or park,
                    decisions_after=decisions_after,
                    events=log.take(sources) if log is not None else None,
                )
                ok = True
            finally:
                if log is not None:
                    log.written(ok)
                    log.lock.release()
        except LeaseLost as exc:
            keeper.lost(exc)
            if self.events is not None:
                self.events.drop(exc)
            raise
        except GraphError:
            raise
        except Exception as exc:
            raise self._wrap(exc) from exc
        keeper.renewed()
        keeper.committed_seq = last
        if final:
            keeper.released = True
        elif park:
            keeper.parked = True
        if self.send_event is not None:
            for row, _ in batch:
                await self.send_event(
                    CheckpointSaved(
                        trace_id=self.trace_id,
                        step=row.step,
                        checkpoint_id=f"{self.trace_id}:{row.seq}",
                        seq=row.seq,
                        kind=row.kind,
                        bytes=row.size,
                        trigger=row.trigger,
                    )
                )
        return found

    def _wrap(self, exc: BaseException) -> GraphError:
        if isinstance(exc, GraphError):
            return exc
        return CheckpointError(
            f"checkpoint could not be written: {exc!r}", trace_id=self.trace_id, seq=self.seq
        )

    async def flush(self) -> None:
        """Wait until every queued checkpoint is committed (async durability); re-raise a failure."""
        while self._queue or self._inflight:
            if self._error is not None:
                break
            await self._idle.wait()
        if self._error is not None:
            raise self._wrap(self._error)

    async def _writer(self) -> None:
        # Shielded as a whole: when an outer scope cancels the run (its task group with it),
        # the run's last records are still queued and its shielded close() waits for them;
        # close() ends the writer.
        with anyio.CancelScope(shield=True):
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                while self._queue:
                    batch, self._queue = self._queue, []
                    if self._error is not None:
                        # After a failed commit nothing more is written: a later record would
                        # sit on top of the missing ones and restore a state with steps left
                        # out.
                        continue
                    self._inflight = len(batch)
                    try:
                        await self._commit(batch)
                    except Exception as exc:  # noqa: BLE001 - reported to the run at its next save/flush
                        self._error = exc
                    finally:
                        self._inflight = 0
                self._idle.set()
                if self._closed:
                    return


def _ready_at(run: Position, t: float) -> float | None:
    """When a run saved in this position next needs a driver that does not hold it."""
    status = run.status
    if status == "running":  # the hot path: its driver holds it
        return None
    if status in ("queued", "interrupted"):
        return t
    if status == "waiting":
        deadlines = [d for d in _deadlines(run.pending, run.children) if d is not None]
        return min(deadlines) if deadlines else None
    return None


def _deadlines(
    pending: PendingBarrier | None, children: dict[str, ChildRun]
) -> Iterator[float | None]:
    """The deadlines of every barrier a run (and its waiting children, nested) waits at."""
    if pending is not None:
        yield pending.deadline
    for child in children.values():
        yield from _deadlines(child.pending_barrier, child.children)


def _find_unencodable(steps: list[StepRecord], state: dict[str, Any]) -> tuple[str, str | None]:
    """Name what could not be encoded: a node's delta for a key, or a key of the state."""
    encode = msgspec.msgpack.encode
    for record in steps:
        for delta in record.deltas:
            try:
                encode(delta.value)
            except (TypeError, ValueError, OverflowError, RecursionError):
                what = f"the value node {record.node!r} (step {record.step}) wrote to key"
                return f"{what} {delta.key!r}", record.node
    for key, value in state.items():
        try:
            encode(value)
        except (TypeError, ValueError, OverflowError, RecursionError):
            return f"state key {key!r}", None
    return "the checkpoint", None


class NullCheckpointer:
    """The checkpointer of a run without a store: no trigger ever fires, nothing is written."""

    on_barrier = False
    on_completion = False
    records = False
    """Steps are not noted (the loop skips ``after_step``)."""
    trace_context: str | None = None

    async def start(self, tg: TaskGroup) -> None:
        """Nothing runs in the background."""

    async def close(self) -> None:
        """Nothing to flush or release."""

    async def flush(self) -> None:
        """Nothing is ever pending."""

    async def park(self) -> None:
        """No lease to give up."""

    async def unpark(self) -> None:
        """No lease to take back."""

    def note_step(
        self,
        step: int,
        node: str,
        changes: list[tuple[str, Any]],
        seconds: float = 0.0,
        tokens: float = 0.0,
        *,
        fingerprint: str | None = None,
        keys_read: Collection[str] | None = None,
        directive: Any = None,
        reused_from: int | None = None,
        branches: list[BranchRecord] | None = None,
    ) -> None:
        """Steps are not buffered: nothing would write them."""

    def after_step(
        self,
        step: int,
        node: str,
        changes: list[tuple[str, Any]],
        seconds: float,
        usage: _Usage | None,
        side_effects: bool,
        *,
        more: bool,
        fingerprint: str | None = None,
        keys_read: Collection[str] | None = None,
        directive: Any = None,
        branches: list[BranchRecord] | None = None,
    ) -> str | None:
        """Nothing to note, no checkpoint ever due."""
        return None

    def request_explicit(self) -> None:
        """An explicit checkpoint request has nowhere to go."""

    def completion_seq(self) -> int | None:
        """No checkpoint holds the final state."""
        return None

    def trigger_after_step(self, side_effects: bool) -> str | None:
        return None

    async def save(
        self,
        run: Position,
        state: dict[str, Any],
        trigger: str,
        *,
        error: str | None = None,
        failure: ErrorInfo | None = None,
        final: bool = False,
        release: bool = False,
        decisions_after: int | None = None,
        allow_base: bool = True,
        input: Any = None,
    ) -> list[StoredDecision] | None:
        return None
