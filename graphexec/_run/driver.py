"""The step loop (Driver): what runs when, from the first node to the run's end.

The driver owns the state dict and the run's :class:`Position`, and steps through the nodes in
one task: execute the node (``step.py``), apply its deltas (``_apply.py``), route
(``routing.py``), maybe checkpoint (``_checkpointer.py``). Barriers take decisions
(``decisions.py``); what the run tells the outside goes through the recorder (``recorder.py``).
Parallel nodes fan out in a task group inside a step; everything else happens in this one task,
so the state needs no locks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from .._apply import TornUpdate, apply_changes
from .._barrier_ids import barrier_id as _barrier_id
from .._checkpointer import Checkpointer, NullCheckpointer, reducer_names
from .._decisions import Decision, Edit, Reject, Skip, decision_name, default_decision
from .._directives import Fallback
from .._emit import Emitter
from .._events import (
    BarrierResolved,
    BarrierWaiting,
    ErrorInfo,
    GraphComplete,
    GraphFailed,
    GraphInterrupted,
    GraphStart,
    NodeInvalidated,
)
from .._graph import Graph, NodeSpec
from .._spec import ERRORS_KEY
from .._telemetry import SegmentKind, SpanKind, Telemetry
from ..checkpoint._base import CheckpointStore
from ..checkpoint._record import Invalidation, KeptOutputs, PendingBarrier, StoredDecision, now
from ..checkpoint._retry import decisions_after
from ..exceptions import (
    Cancelled,
    CheckpointError,
    CircuitOpen,
    GraphError,
    InvalidGraph,
    LeaseLost,
    NodeExecutionFailed,
    NodeTimeout,
    RunFinished,
    StepsExceeded,
)
from ..typing import RunStatus
from .attempts import Resilience, cause_of, error_record
from .child import ChildHost
from .decisions import check_offer, merge_stored, take_decision
from .invoke import invoke
from .position import Position
from .recorder import Recorder, error_info
from .result import GraphResult
from .routing import route
from .step import Outcome, Reads, execute_node, run_attempts

if TYPE_CHECKING:
    from .._rerun.reuse import Reuse

__all__ = ("Driver",)

_FINAL_SAVE_WAITS = (0.1, 0.5)
"""Waits between attempts at the completion checkpoint (three attempts in all)."""


class Driver:
    """Steps one run through its graph. Internal: users hold a Run and its RunHandle."""

    def __init__(
        self,
        *,
        graph: Graph,
        state: dict[str, Any],
        trace_id: str,
        position: Position,
        max_steps: int,
        emitter: Emitter | None,
        checkpointer: Checkpointer | NullCheckpointer,
        store: CheckpointStore | None,
        poll_interval: float,
        keep_log: bool,
        start_trigger: str | None = "start",
        resumed: bool = False,
        parent: str | None = None,
        must_be_decided: bool = False,
        input: Any = None,
        resilience: Resilience | None = None,
        telemetry: Telemetry | None = None,
        linked_context: str | None = None,
    ) -> None:
        self.graph = graph
        self.res = resilience if resilience is not None else Resilience()
        """The executor's clock and circuit breakers (shared by its runs)."""
        self.state = state
        self.trace_id = trace_id
        self.pos = position
        self.max_steps = max_steps
        self.ckpt = checkpointer
        self.store = store
        """Where decisions from other processes arrive (None: only the handle decides)."""
        self.poll_interval = poll_interval
        self.rec = Recorder(
            trace_id,
            graph.name,
            emitter,
            keep_log=keep_log,
            reducers=reducer_names(dict(graph.reducers)) if emitter is not None else None,
        )
        self.input = input
        """What the caller passed to start this run or turn (GraphStart.input)."""
        self.start_trigger = start_trigger
        self.resumed = resumed
        self.parent = parent
        self.must_be_decided = must_be_decided
        self.telemetry = telemetry
        self.linked_context = linked_context
        """The trace context of a fork's (re-run's) source: its segment span links to it."""
        self.result: GraphResult | None = None
        self.reuse: Reuse | None = None
        """A re-run (``ex.rerun``): decides which executions replay their source's output."""
        self.reused = 0
        self.invalidated: list[Invalidation] = []
        """A resume with ``invalidate_on_resume``: the executions it runs again (announced
        with NodeInvalidated events)."""
        self._reads: Reads | None = Reads() if checkpointer.records else None
        """What the current node execution read (recorded with its step); None when no step
        is recorded (no store): then nothing collects the keys read."""
        self._scope: anyio.CancelScope | None = None
        self._cancel_requested = False
        self._interrupted = False
        self.leaves = False
        """Leave at a barrier with no decision instead of waiting (workers): the run is saved
        "waiting" without a lease and the driver ends; the store makes the run ready again
        when a decision arrives or the deadline comes, and a worker claims it."""
        self._leaving = False
        self.ended = anyio.Event()
        """Set when ``main`` returns: the driver writes nothing more."""
        self.recorded = anyio.Event()
        """Set once the run's first checkpoint is committed (or the run ended without one):
        from then on other processes find it in the store."""
        self._torn = False
        self._completing = False
        self._t0 = 0.0
        self._wake_send, self._wake_recv = anyio.create_memory_object_stream[str](math.inf)
        self._save_lock = anyio.Lock()
        self._tg: TaskGroup | None = None
        self.host = ChildHost(self)
        """The child runs of the current step (subgraphs, maps over graphs, graph branches)."""
        self.rec.host = self.host

    @property
    def status(self) -> RunStatus:
        return self.pos.status

    @property
    def log(self) -> Any:
        return self.rec.log

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the run has ended (whatever the status)."""
        return self.result is not None

    @property
    def stopping(self) -> bool:
        """True once the run ends or is being stopped: it takes no more decisions here."""
        scope = self._scope
        return self.result is not None or (scope is not None and scope.cancel_called)

    async def main(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run to the end; never raises a GraphError (it becomes the result and an event)."""
        task_status.started()
        self._t0 = time.perf_counter()
        emitter = self.rec.emitter
        log = emitter.log if emitter is not None else None
        if self.telemetry is not None:
            self._open_segment(self.telemetry)
        try:
            if self.store is None and not self.ckpt.records and (log is None or log.store is None):
                # Nothing runs beside the loop (no writer, no lease, no flusher, no polls): no
                # task group, whose exit would cost every run a pass of the event loop.
                await self._guarded_then_close()
            else:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    await self.ckpt.start(tg)
                    if log is not None and log.store is not None:
                        tg.start_soon(log.run)
                    if self.store is not None:
                        tg.start_soon(self._watch_cancel)
                    try:
                        await self._guarded_then_close()
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            self.recorded.set()
            try:
                if self.rec.tel is not None:  # the run's span, not the consumer's reading
                    self._close_segment()
                self._wake_send.close()
                self._wake_recv.close()
                if emitter is not None:
                    with anyio.CancelScope(shield=True):
                        await emitter.flush()
                        if log is not None:
                            await log.close()
                    emitter.close()
            finally:
                self.ended.set()  # its last events are written: another driver may take over

    async def _guarded_then_close(self) -> None:
        """The loop, then the checkpointer's last flush (shielded: it runs after a cancel too)."""
        try:
            await self._guarded()
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self.ckpt.close()
                except GraphError as exc:
                    self.log.error("final checkpoint flush failed", error=str(exc))

    # -- telemetry: one span per segment (this driver), a child span per node attempt --------

    def _open_segment(self, telemetry: Telemetry) -> None:
        trigger = self.start_trigger
        kind: SegmentKind = (
            "resume"
            if self.resumed
            else "fork"
            if trigger == "fork"
            else "rerun"
            if trigger == "rerun"
            else "start"
        )
        seg = telemetry.segment(
            trace_id=self.trace_id,
            graph=self.graph.name,
            graph_hash=self.graph.hash,
            kind=kind,
            step=self.pos.step,
            stored_context=self.ckpt.trace_context,
            linked_context=self.linked_context,
        )
        # The first traced segment's context is recorded (in every base) for later ones.
        if seg.trace_context is not None:
            self.ckpt.trace_context = seg.trace_context
        seg.begin()
        self.rec.tel = seg

    def _close_segment(self) -> None:
        seg = self.rec.tel
        assert seg is not None
        result = self.result
        pending = self.pos.pending
        seg.end(
            result.status if result is not None else "failed",
            self.pos.step,
            result.error if result is not None else None,
            self.pos.next_node,
            pending.barrier_id if pending is not None else None,
        )

    def _span(
        self, kind: SpanKind, node: str, step: int, barrier_id: str | None = None
    ) -> AbstractContextManager[Any]:
        """A barrier step's span, or nothing without telemetry."""
        tel = self.rec.tel
        if tel is None:
            return nullcontext()
        return tel.span(kind, node, step, f"{node}@{step}", barrier_id=barrier_id)

    def _tel_event(self, name: str, barrier_id: str, node: str, step: int, **extra: Any) -> None:
        tel = self.rec.tel
        if tel is not None:
            attrs = {"graphexec.barrier_id": barrier_id, "graphexec.node": node}
            attrs.update({f"graphexec.{k}": v for k, v in extra.items() if v is not None})
            tel.event(name, {**attrs, "graphexec.step": step})

    async def _guarded(self) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self._cancel_requested:  # cancel() came before the scope existed
                scope.cancel()
            try:
                await self._steps()
            except anyio.get_cancelled_exc_class():
                with anyio.CancelScope(shield=True):
                    await self._stopped()
                raise
            except GraphError as exc:
                await self._failed(exc)
            except Exception as exc:
                await self._failed(
                    GraphError(f"internal error while running the graph: {exc!r}", node=None)
                )
                raise

    # -- requests from the handle ------------------------------------------------------------

    def request_cancel(self) -> None:
        """End the run with Cancelled after checkpointing (handle.cancel())."""
        if self.finished:
            return
        self._cancel_requested = True
        if self._scope is not None:
            self._scope.cancel()

    def interrupt(self) -> None:
        """The executor that drives the run shuts down: checkpoint and stop as "interrupted"
        (a run waiting at a barrier stays "waiting")."""
        if self.finished:
            return
        self._interrupted = True
        if self._scope is not None:
            self._scope.cancel()

    async def _watch_cancel(self) -> None:
        """Take a cancel requested through the store (ex.cancel() in another process). While
        a barrier waits the lease is parked, so ex.cancel elsewhere records the run cancelled
        itself (no request): a waiting driver that sees that record stops as cancelled (it
        writes nothing: its lease was taken)."""
        assert self.store is not None
        while not self.finished:
            await anyio.sleep(self.poll_interval)
            try:
                if await self.store.take_cancel_request(self.trace_id):
                    self.log.info("cancel requested through the store")
                    self.request_cancel()
                    return
                keeper = getattr(self.ckpt, "keeper", None)
                if keeper is not None and keeper.parked:
                    info = await self.store.get_run(self.trace_id)
                    if (
                        info is not None
                        and info.status == "cancelled"
                        and info.last_seq != keeper.committed_seq
                    ):
                        self.log.info("run cancelled elsewhere while it waited here")
                        self.request_cancel()
                        return
            except GraphError as exc:  # a passing store error: look again at the next poll
                self.log.warning("cancel request not read", error=str(exc))

    def discard(self) -> None:
        """This driver will never run (``ex.start(..., queue=True)`` only used its position)."""
        self._wake_send.close()
        self._wake_recv.close()

    def leave_waiting(self) -> None:
        """``leaves``: every barrier the run reached waits and no decision is at hand: end the
        driver, the run recorded "waiting" with no lease (``_stopped``)."""
        if self._scope is not None and not self.finished:
            self._leaving = True
            self._scope.cancel()

    def leave(self) -> None:
        """The consumer left the stream early: stop, checkpointing first."""
        if self._scope is not None and not self.finished:
            self._scope.cancel()

    def request_checkpoint(self) -> None:
        """Checkpoint at the next step boundary (handle.checkpoint())."""
        self.ckpt.request_explicit()

    def offer(self, key: str, decision: Decision, *, wildcard: bool) -> None:
        """Accept a decision from the handle, or refuse it at once with a clear error."""
        if self.finished:
            hint = (
                ""
                if self.status in ("completed", "failed")
                else "; it can be resumed with ex.resume_from(graph, trace_id), or sent a "
                "decision through store.submit_decision()"
            )
            raise RunFinished(
                f"run {self.trace_id!r} has stopped in this process ({self.status}): this handle "
                f"takes no more decisions{hint}",
                trace_id=self.trace_id,
            )
        if "/" in key:  # a barrier inside a child run: its path id or a path pattern
            self.host.offer(key, decision, wildcard=wildcard)
            return
        check_offer(self.graph, self.pos, key, decision, wildcard=wildcard, trace_id=self.trace_id)
        self.pos.decisions[key] = decision
        try:
            self._wake_send.send_nowait(key)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):  # pragma: no cover
            pass

    # -- the loop ----------------------------------------------------------------------------

    async def _steps(self) -> None:
        graph = self.graph
        pos = self.pos
        emitter = self.rec.emitter
        if emitter is not None and emitter.log is not None:
            await emitter.log.open()  # this driver's event-id segment, before the first event
        if emitter is not None:
            await self.rec.send(
                GraphStart(
                    trace_id=self.trace_id,
                    step=pos.step,
                    graph=graph.name,
                    graph_hash=graph.hash,
                    node=pos.pending.node if pos.pending else pos.next_node,
                    resumed=self.resumed,
                    parent=self.parent,
                    input=self.input,
                    turn=pos.turn,
                )
            )
        for inv in self.invalidated:
            self.log.warning(
                "node invalidated",
                node=inv.node,
                step=inv.step,
                old_fingerprint=inv.old,
                new_fingerprint=inv.new,
            )
            if self.rec.emitter is not None:
                await self.rec.send(
                    NodeInvalidated(
                        trace_id=self.trace_id,
                        step=inv.step,
                        node=inv.node,
                        span_id=f"{inv.node}@{inv.step}",
                        old_fingerprint=inv.old,
                        new_fingerprint=inv.new,
                    )
                )
        if self.start_trigger is not None:
            await self._save(self.start_trigger)
            await anyio.lowlevel.checkpoint_if_cancelled()
        self.recorded.set()
        if pos.pending is not None:
            if "/" in pos.pending.node:
                # A child waits (a path id): the step of next_node resumes the children,
                # with the decisions that reached the store meanwhile.
                pos.pending = None
                pos.status = "running"
                await self._pull_store_decisions()
            else:
                await self._reenter_barrier(pos.pending)
        nodes = graph.nodes
        scope = self._scope
        while pos.next_node is not None:
            if scope is not None and scope.cancel_called:
                # Cancelled while nothing could raise it (a shielded commit, an inline node):
                # no node starts after a cancel.
                await anyio.lowlevel.checkpoint()
            spec = nodes[pos.next_node]
            if spec.kind == "barrier":
                await self._barrier(spec)
            else:
                await self._step(spec)
            if pos.step & 15 == 0:
                await anyio.lowlevel.checkpoint()
        await self._completed()

    def _next_step(self, name: str, what: str) -> int:
        step = self.pos.step + 1
        if step - self.pos.turn_start > self.max_steps:
            turn = f" in turn {self.pos.turn}" if self.pos.turn > 1 else ""
            raise StepsExceeded(
                f"the run reached max_steps={self.max_steps}{turn} before {what} {name!r}",
                max_steps=self.max_steps,
                node=name,
                step=self.pos.step,
            )
        return step

    async def _step(self, spec: NodeSpec, paused: PendingBarrier | None = None) -> None:
        # The hot path of every run: the recorder is awaited only when someone listens (an
        # await of a coroutine that returns at once still costs its creation, per step).
        name = spec.name
        pos = self.pos
        reads = self._reads
        if reads is not None:
            reads.keys = reads.branches = reads.known = None  # Reads.reset(), without the call
        reuse = self.reuse
        if reuse is not None:
            if await self._reused(spec, reuse):
                return
            if spec.kind in ("parallel", "map") and pos.kept is None:
                found = reuse.kept_for(spec, self.state, pos.step + 1)
                if found is not None:
                    pos.kept, known = found
                    if reads is not None:
                        reads.known = known
        step = pos.step + 1
        if step - pos.turn_start > self.max_steps:
            self._next_step(name, "node")  # raises StepsExceeded
        span = f"{name}@{step}"
        rec = self.rec
        listening = rec.emitter is not None
        if listening:
            await rec.node_start(step, name, span, spec.kind)
        t0 = time.perf_counter()
        attempt = 1
        try:
            try:
                if paused is not None:  # resumed while paused at this failed node
                    (directive, changes, usage), attempt = await self._failure(
                        spec, step, span, None, paused
                    )
                elif (
                    spec.guarded
                    or spec.kind != "node"
                    or pos.retry_at is not None
                    or rec.tel is not None  # each attempt gets its span in run_attempts
                ):
                    (directive, changes, usage), attempt = await self._attempts(spec, step, span)
                else:
                    # No timeout, heartbeat or breaker to set up: the first attempt is a plain
                    # call, and the retry loop is entered only once it failed.
                    try:
                        directive, changes, usage = await execute_node(
                            self.graph, self.state, spec, step, span, rec, reads=reads
                        )
                    except (NodeExecutionFailed, NodeTimeout) as first:
                        if spec.retry is None:
                            raise
                        (directive, changes, usage), attempt = await self._attempts(
                            spec, step, span, first, t0
                        )
            except (NodeExecutionFailed, NodeTimeout, CircuitOpen) as exc:
                if spec.on_failure == "fail":
                    self._keep(spec, step, exc)
                    raise
                (directive, changes, usage), attempt = await self._failure(
                    spec, step, span, exc, None
                )
            if changes:
                try:
                    changes = apply_changes(self.graph.spec, self.state, changes, node=name)
                except TornUpdate as torn:
                    self._torn = True  # see _apply_now
                    raise torn.error from torn.error.__cause__
                if listening:
                    await rec.state_changed(step, name, span, changes)
        except GraphError as exc:  # the node, a delta that does not fit, a reducer that raised
            t1 = rec.log_line(name, step, t0, ok=False, attempt=attempt)
            if listening:
                await rec.send_end(name, step, span, t1 - t0, ok=False, next_node=None)
            _fill(exc, self.trace_id, name, step)
            raise
        # The step is committed before routing: a routing failure leaves the state with the
        # node's deltas applied and no next node (see resume_from for what that means).
        pos.step = step
        pos.next_node = None
        if pos.kept is not None:
            pos.kept = None
        if pos.children or self.host.finished:
            self.host.clear()
        if spec.compensate is not None:
            pos.compensable.append(name)
        nxt = route(self.graph, self.state, name, directive)
        if directive is not None and type(directive) is Fallback:
            await self._fell_back(spec, directive, step, span)
        pos.next_node = nxt
        t1 = rec.log_line(name, step, t0, ok=True, attempt=attempt)
        if listening:
            await rec.send_end(name, step, span, t1 - t0, ok=True, next_node=nxt)
        ckpt = self.ckpt
        if reads is None:  # no store: nothing to note, no checkpoint ever due
            return
        trigger = ckpt.after_step(
            step,
            name,
            changes,
            t1 - t0,
            usage,
            spec.side_effects,
            more=nxt is not None,
            fingerprint=spec.fingerprint,
            keys_read=reads.keys,
            directive=directive,
            branches=reads.branches,
        )
        if trigger is not None:
            await self._save(trigger)
            # The commit is shielded: a cancel from an outer scope that came meanwhile
            # is raised here, before the next node starts.
            await anyio.lowlevel.checkpoint_if_cancelled()

    async def _reused(self, spec: NodeSpec, reuse: Reuse) -> bool:
        """A re-run's step: apply its update before the target's first execution; replay a
        reusable execution of the source (its deltas and directive; no node is called and no
        node event is sent) and return True, or return False: the node runs."""
        name = spec.name
        pos = self.pos
        update = reuse.take_update(name)
        if update:
            try:
                changes = apply_changes(
                    self.graph.spec, self.state, update, node=None, writer="the re-run update"
                )
            except TornUpdate as torn:
                self._torn = True
                raise torn.error from torn.error.__cause__
            self.ckpt.note_step(pos.step, reuse.update_node, changes)
        found = reuse.match(spec, self.state)
        if found is None:
            return False
        step = self._next_step(name, spec.kind)
        changes, directive = reuse.replay(found)
        try:
            if changes:
                changes = self._apply_now(changes, name)
            pos.step = step
            pos.next_node = None
            if spec.kind == "barrier":
                pos.barrier_counts[name] = pos.barrier_counts.get(name, 0) + 1
            nxt = route(self.graph, self.state, name, directive)
        except GraphError as exc:
            _fill(exc, self.trace_id, name, step)
            raise
        pos.next_node = nxt
        self.reused += 1
        self.ckpt.note_step(
            step,
            name,
            changes,
            fingerprint=found.fingerprint,
            keys_read=found.keys_read,
            directive=directive,
            reused_from=found.step,
            branches=found.branches,
        )
        if nxt is not None:
            # A barrier's reused decision is marked in the history: a checkpoint "historical".
            trigger = (
                "historical"
                if spec.kind == "barrier" and self.ckpt.on_barrier
                else self.ckpt.trigger_after_step(False)
            )
            if trigger is not None:
                await self._save(trigger)
                await anyio.lowlevel.checkpoint_if_cancelled()
        return True

    # -- resilience: attempts and what a failure does ----------------------------------------

    async def _attempts(
        self,
        spec: NodeSpec,
        step: int,
        span: str,
        first: GraphError | None = None,
        first_t0: float = 0.0,
    ) -> tuple[Outcome, int]:
        return await run_attempts(
            self.graph,
            self.state,
            spec,
            step,
            span,
            self.rec,
            self.res,
            self.pos,
            self._before_backoff,
            first,
            first_t0,
            self._branch_backoff if self.store is not None else None,
            self._reads,
        )

    async def _before_backoff(self) -> None:
        """Checkpoint the attempt count and the next attempt's time before a backoff (with a
        store): a crash during the wait resumes with the budget left."""
        if self.store is not None:
            await self._save("retry")
            await anyio.lowlevel.checkpoint_if_cancelled()

    async def _branch_backoff(
        self, waiting: dict[str, tuple[int, float]], finished: dict[str, Any]
    ) -> None:
        """Before a branch's backoff (and when a branch finishes after one): checkpoint the
        fan-out's progress (the finished branches' outputs, each waiting branch's attempts),
        so a crash during the wait resumes the node with those kept and those budgets."""
        pos = self.pos
        node = pos.next_node
        assert node is not None
        step = pos.step + 1
        kept = pos.kept
        if kept is None or kept.node != node or kept.step != step:
            kept = KeptOutputs(node=node, step=step, results={})
        pos.kept = KeptOutputs(
            node=node,
            step=step,
            results={**kept.results, **finished},
            attempts={**kept.attempts, **waiting},
        )
        async with self._save_lock:  # branches back off concurrently: one save at a time
            await self._save("retry")

    def _keep(self, spec: NodeSpec, step: int, exc: GraphError) -> None:
        """Record what the successful branches of a failed fan-out returned."""
        kept = getattr(exc, "kept", None)
        if kept:
            self.pos.kept = KeptOutputs(node=spec.name, step=step, results=dict(kept))

    async def _failure(
        self,
        spec: NodeSpec,
        step: int,
        span: str,
        exc: GraphError | None,
        paused: PendingBarrier | None,
    ) -> tuple[Outcome, int]:
        """Apply ``spec.on_failure`` to a failed execution (every attempt spent): an outcome
        to go on with (skip, fallback, an approved retry that succeeded), or the error."""
        name = spec.name
        record: dict[str, Any] = {}
        if paused is not None and isinstance(paused.prompt, dict):
            record = dict(paused.prompt.get("error") or {})
        while True:
            if exc is not None:
                self._keep(spec, step, exc)
                record = error_record(exc)
            strategy = spec.on_failure
            if strategy == "pause":
                decision = await self._pause(spec, step, exc, paused)
                paused = None
                if isinstance(decision, Skip):
                    strategy = "skip"
                elif isinstance(decision, Reject):
                    raise NodeExecutionFailed(
                        f"node {name!r} failed and its pause was rejected"
                        + (f": {decision.reason}" if decision.reason else "")
                        + (f" (the failure: {cause_of(exc)!r})" if exc is not None else ""),
                        node=name,
                        cause=cause_of(exc) if exc is not None else RuntimeError("rejected"),
                        step=step,
                    )
                else:  # Approve, Edit: run the node again with a fresh budget
                    if isinstance(decision, Edit):
                        changes = self._apply_now(list(decision.update.items()), name)
                        await self.rec.state_changed(step, name, span, changes)
                        self.ckpt.note_step(step, name, changes)
                    try:
                        return await self._attempts(spec, step, span)
                    except (NodeExecutionFailed, NodeTimeout, CircuitOpen) as again:
                        exc = again
                        continue
            if strategy == "skip":
                self.pos.kept = None
                self.log.warning("node failed; skipped", node=name, step=step, error=record)
                info = ErrorInfo(
                    type=str(record.get("type", "")),
                    message=str(record.get("message", "")),
                    node=name,
                )
                await self.rec.observed(step, name, span, info)
                return (None, [(ERRORS_KEY, {name: record})], None), 1
            assert exc is not None
            cause = cause_of(exc)
            if strategy == "fallback":
                self.pos.kept = None
                return (Fallback(f"{type(cause).__name__}: {cause}"), [], None), 1
            if strategy == "compensate":
                await self._compensate(exc, step)
            raise exc

    async def _pause(
        self, spec: NodeSpec, step: int, exc: GraphError | None, paused: PendingBarrier | None
    ) -> Decision:
        """Wait at the failed node like at a barrier (same ids, events, store decisions)."""
        name = spec.name
        pos = self.pos
        if paused is None:
            assert exc is not None
            occurrence = pos.barrier_counts.get(name, 0) + 1
            pos.barrier_counts[name] = occurrence
            pos.pending = PendingBarrier(
                barrier_id=_barrier_id(name, occurrence),
                node=name,
                prompt={"error": error_record(exc), "step": step, "paused": "on_failure"},
            )
        else:
            await self._pull_store_decisions()
        pending = pos.pending
        assert pending is not None
        decision, by = await self._await_decision(spec, step, pending, resumed=paused is not None)
        pos.pending = None
        pos.status = "running"
        verdict = decision_name(decision)
        self.log.info(
            "pause resolved",
            node=name,
            step=step,
            barrier_id=pending.barrier_id,
            by=by,
            decision=verdict,
        )
        self._tel_event(
            "graphexec.barrier.resolved",
            pending.barrier_id,
            name,
            step,
            decision=verdict,
            by=by,
            edited=isinstance(decision, Edit),
        )
        if self.rec.emitter is not None:
            await self.rec.send(
                BarrierResolved(
                    trace_id=self.trace_id,
                    step=step,
                    barrier_id=pending.barrier_id,
                    node=name,
                    decision=verdict,  # type: ignore[arg-type]
                    reason=decision.reason if isinstance(decision, Reject) else None,
                    by=by,  # type: ignore[arg-type]
                    edited=isinstance(decision, Edit),
                )
            )
        return decision

    async def _compensate(self, exc: GraphError, failed_step: int) -> None:
        """Run the compensations of the completed nodes, newest first, each a checkpointed
        step of its own; the run then fails with ``exc`` (the caller raises it)."""
        pos = self.pos
        failed = pos.next_node
        self.log.warning(
            "node failed; compensating",
            node=exc.node,
            step=failed_step,
            compensations=len(pos.compensable),
        )
        while pos.compensable:
            done = pos.compensable[-1]
            declared = self.graph.nodes.get(done)
            comp = declared.compensate if declared is not None else None
            if comp is None:  # recorded by a run whose graph has since changed
                self.log.warning("compensation no longer declared; skipped", node=done)
                pos.compensable.pop()
                continue
            spec = self.graph.nodes[comp]
            step = self._next_step(comp, "compensation")
            span = f"{comp}@{step}"
            await self.rec.node_start(step, comp, span, spec.kind)
            t0 = time.perf_counter()
            try:
                if spec.retry is not None or spec.guarded or self.rec.tel is not None:
                    (_d, changes, _u), _a = await self._attempts(spec, step, span)
                else:
                    _d, changes, _u = await execute_node(
                        self.graph, self.state, spec, step, span, self.rec
                    )
                changes = self._apply_now(changes, comp)
            except GraphError as comp_exc:
                await self.rec.node_end(comp, step, span, t0, ok=False, next_node=None)
                _fill(comp_exc, self.trace_id, comp, step)
                comp_exc.message = (
                    f"{comp_exc.message}; while compensating {done!r} after node "
                    f"{exc.node!r} failed: {exc.message}"
                )
                raise comp_exc from exc
            await self.rec.state_changed(step, comp, span, changes)
            pos.step = step
            pos.compensable.pop()
            await self.rec.node_end(comp, step, span, t0, ok=True, next_node=failed)
            self.ckpt.note_step(step, comp, changes)
            if self.store is not None:
                await self._save("compensation")

    def _apply_now(self, changes: list[tuple[str, Any]], node: str) -> list[tuple[str, Any]]:
        """Apply a step's changes to the state; the checked changes."""
        try:
            return apply_changes(self.graph.spec, self.state, changes, node=node)
        except TornUpdate as torn:
            # Some of this node's deltas are in the state and the rest are not: no checkpoint
            # may capture that (the last good one stands, and a resume re-runs the node).
            self._torn = True
            raise torn.error from torn.error.__cause__

    async def _fell_back(self, spec: NodeSpec, directive: Fallback, step: int, span: str) -> None:
        """Report a Fallback taken (routing itself stays pure)."""
        self.log.warning(
            "fallback", node=spec.name, step=step, span_id=span, reason=directive.reason
        )
        await self.rec.observed(
            step,
            spec.name,
            span,
            ErrorInfo(type="Fallback", message=directive.reason, node=spec.name),
        )

    # -- barriers ----------------------------------------------------------------------------

    async def _barrier(self, spec: NodeSpec) -> None:
        reuse = self.reuse
        if reuse is not None and await self._reused(spec, reuse):
            return  # a re-run keeps this decision (out of the re-run's scope)
        name = spec.name
        step = self._next_step(name, "barrier")
        occurrence = self.pos.barrier_counts.get(name, 0) + 1
        with self._span("barrier", name, step, _barrier_id(name, occurrence)):
            await self._barrier_at(spec, step)

    async def _barrier_at(self, spec: NodeSpec, step: int) -> None:
        name = spec.name
        span = f"{name}@{step}"
        pos = self.pos
        await self.rec.node_start(step, name, span, "barrier")
        t0 = time.perf_counter()
        # The occurrence is counted only once it is decided or pending (no await in between):
        # until then a decision for it, from the handle or the store, is early, not "resolved".
        occurrence = pos.barrier_counts.get(name, 0) + 1
        barrier_id = _barrier_id(name, occurrence)
        # Decisions sent through the store are read with the waiting checkpoint (one round
        # trip), in _wait_and_resolve; here only those already in the process count.
        decision = take_decision(pos, barrier_id, name)
        if decision is not None:
            pos.step = step
            pos.barrier_counts[name] = occurrence
            await self._resolve(spec, step, span, barrier_id, decision, "human", t0)
            return
        try:
            prompt = (
                await invoke(spec.prompt, (self.graph.spec.view(self.state),))
                if (spec.prompt)
                else None
            )
        except Exception as exc:
            # The step is not taken (a resume runs the barrier as this same step), but the
            # span that NodeStart opened is closed.
            await self.rec.node_end(name, step, span, t0, ok=False, next_node=None)
            raise NodeExecutionFailed(
                f"prompt of barrier {name!r} raised {exc!r}", node=name, cause=exc, step=step
            ) from exc
        deadline = now() + spec.timeout if spec.timeout is not None else None
        pos.step = step
        pos.barrier_counts[name] = occurrence
        pos.pending = PendingBarrier(
            barrier_id=barrier_id, node=name, prompt=prompt, deadline=deadline
        )
        await self._wait_and_resolve(spec, step, span, t0)

    async def _reenter_barrier(self, pending: PendingBarrier) -> None:
        """A resumed run that was waiting waits again, with the same barrier id."""
        spec = self.graph.nodes[pending.node]
        if spec.kind != "barrier":  # paused by on_failure="pause": the node's step again
            await self._step(spec, pending)
            return
        step = self.pos.step
        span = f"{spec.name}@{step}"
        with self._span("barrier", spec.name, step, pending.barrier_id):
            await self.rec.node_start(step, spec.name, span, "barrier")
            await self._pull_store_decisions()
            await self._wait_and_resolve(spec, step, span, time.perf_counter(), resumed=True)

    async def _wait_and_resolve(
        self, spec: NodeSpec, step: int, span: str, t0: float, *, resumed: bool = False
    ) -> None:
        pending = self.pos.pending
        assert pending is not None
        decision, by = await self._await_decision(spec, step, pending, resumed=resumed)
        await self._resolve(spec, step, span, pending.barrier_id, decision, by, t0)

    async def _await_decision(
        self, spec: NodeSpec, step: int, pending: PendingBarrier, *, resumed: bool
    ) -> tuple[Decision, str]:
        """The decision for ``pending`` (a barrier, or a node paused by its failure): one
        already there, else checkpoint the wait, send BarrierWaiting and wait for it."""
        pos = self.pos
        decision = take_decision(pos, pending.barrier_id, spec.name)
        by = "human"
        leaves = self.leaves
        deadline = pending.deadline
        if decision is None and leaves and deadline is not None and deadline <= now():
            decision, by = default_decision(spec.default), "timeout"  # claimed at its deadline
        if decision is None and (not resumed or leaves):
            pos.status = "waiting"
            pos.next_node = spec.name
            found = None
            if self.ckpt.on_barrier or leaves:
                # The waiting checkpoint also gives the lease up: a waiting run holds none,
                # so any process may resume it when its decision comes. A driver that leaves
                # writes it on a resume too: the claim cleared the run's ready_at, which this
                # save sets again (the deadline), and the decisions read in its transaction
                # close the gap a decision could slip through unseen.
                found = await self._save(
                    "parked" if resumed else "barrier_waiting",
                    decisions_after=pos.decision_cursor,
                    release=True,
                )
            if found is None:
                if leaves:  # async durability: read the inbox once the wait is committed
                    await self.ckpt.flush()
                await self._pull_store_decisions()
            else:
                await self._merge_stored(found)
            decision = take_decision(pos, pending.barrier_id, spec.name)
        if decision is None:
            pos.status = "waiting"
            pos.next_node = spec.name
            await self.ckpt.flush()  # BarrierWaiting only once the wait is committed
            self.log.info(
                "barrier waiting", node=spec.name, step=step, barrier_id=pending.barrier_id
            )
            self._tel_event(
                "graphexec.barrier.waiting",
                pending.barrier_id,
                spec.name,
                step,
                deadline=pending.deadline,
            )
            emitter = self.rec.emitter
            if emitter is not None:
                # Recorded before it is shown, like the wait's checkpoint: a UI that showed the
                # approval card finds it in the event log after a crash too.
                await emitter.send(
                    BarrierWaiting(
                        trace_id=self.trace_id,
                        step=step,
                        barrier_id=pending.barrier_id,
                        node=spec.name,
                        prompt=pending.prompt,
                        deadline=pending.deadline,
                    ),
                    durable=True,
                )
            if leaves:
                self.leave_waiting()
                await anyio.lowlevel.checkpoint()  # raises the cancellation: _stopped
            await self.ckpt.park()
            decision, by = await self._wait(spec, pending)
        # Take the lease back before anything runs (LeaseLost if another process resumed the
        # run meanwhile: then this driver stops and writes nothing).
        try:
            await self.ckpt.unpark()
        except LeaseLost:
            if not leaves:
                raise
            # The decision found after the wait was committed also made the run ready, and a
            # worker claimed it first: it is theirs; this driver leaves, writing nothing.
            self.log.info("decided run claimed elsewhere", barrier_id=pending.barrier_id)
            self.leave_waiting()
            await anyio.lowlevel.checkpoint()  # raises the cancellation: _stopped
            raise
        return decision, by

    async def _wait(self, spec: NodeSpec, pending: PendingBarrier) -> tuple[Decision, str]:
        if self.must_be_decided and self.store is None and pending.deadline is None:
            raise InvalidGraph(
                f"execute() reached barrier {pending.barrier_id!r} with no decision for it and "
                "nothing that could deliver one; pass decisions={...} for it (or for "
                f"{spec.name!r}: every occurrence), or use execute_stream() and decide through "
                "run.handle",
                node=spec.name,
            )
        try:
            while True:
                decision = take_decision(self.pos, pending.barrier_id, spec.name)
                if decision is not None:
                    return decision, "human"
                wait = math.inf
                if pending.deadline is not None:
                    wait = pending.deadline - now()
                    if wait <= 0:
                        return default_decision(spec.default), "timeout"
                if self.store is not None:
                    wait = min(wait, self.poll_interval)
                with anyio.move_on_after(wait) as waited:
                    await self._wake_recv.receive()
                if waited.cancelled_caught:
                    # Woken by the poll timer, not by the handle (whose decisions are already
                    # in the registry): look in the store for decisions from other processes.
                    await self._pull_store_decisions()
        except anyio.get_cancelled_exc_class():
            if self._cancel_requested:
                self._tel_event(
                    "graphexec.barrier.resolved",
                    pending.barrier_id,
                    spec.name,
                    self.pos.step,
                    decision="reject",
                    by="cancel",
                )
            if self._cancel_requested and self.rec.emitter is not None:
                with anyio.CancelScope(shield=True):
                    await self.rec.send(
                        BarrierResolved(
                            trace_id=self.trace_id,
                            step=self.pos.step,
                            barrier_id=pending.barrier_id,
                            node=spec.name,
                            decision="reject",
                            reason="cancelled",
                            by="cancel",
                        )
                    )
            raise

    async def _pull_store_decisions(self) -> None:
        """Read decisions submitted through the store since the last look."""
        if self.store is None:
            return
        found = await decisions_after(self.store, self.trace_id, self.pos.decision_cursor)
        await self._merge_stored(found)

    async def _merge_stored(self, found: list[StoredDecision]) -> None:
        """Take the usable decisions read from the store; skip and report the others (an
        ObservedError and a log line, and the row marked refused so a corrected decision can
        be submitted): nothing written to the store fails the run or uses up an occurrence."""
        if not found:
            return
        skipped = merge_stored(
            self.graph, self.pos, found, self.trace_id, route=self.host.offer_stored
        )
        for bad in skipped:
            self.log.warning(
                "skipped a stored decision",
                barrier_id=bad.barrier_id,
                decision_id=bad.id,
                reason=bad.reason,
            )
            # Marked refused before the ObservedError goes out: a UI that reacts to the error
            # by submitting a corrected decision must find the occurrence free again.
            if self.store is not None:
                try:
                    await self.store.refuse_decision(self.trace_id, bad.id, bad.reason)
                except Exception as exc:  # noqa: BLE001 - reported; the run goes on
                    self.log.warning(
                        "could not mark a stored decision refused",
                        decision_id=bad.id,
                        error=repr(exc),
                    )
            await self.rec.observed(
                self.pos.step,
                bad.node,
                "",
                ErrorInfo(
                    type="InvalidDecision",
                    message=f"stored decision {bad.id} for {bad.barrier_id!r} skipped: "
                    f"{bad.reason}",
                    node=bad.node,
                ),
            )

    def start_polling(self, poll: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``poll`` (a child host's store poll) beside the loop until the run ends; False
        when there is no store to poll."""
        if self.store is None or self._tg is None:
            return False
        self._tg.start_soon(poll)
        return True

    async def _resolve(
        self,
        spec: NodeSpec,
        step: int,
        span: str,
        barrier_id: str,
        decision: Decision,
        by: str,
        t0: float,
    ) -> None:
        name = spec.name
        changes: list[tuple[str, Any]] = []
        if isinstance(decision, Edit):
            changes.extend(decision.update.items())
        verdict = decision_name(decision)
        reason = decision.reason if isinstance(decision, Reject) else None
        assert spec.record is not None
        changes.append((spec.record, {"decision": verdict, "reason": reason, "by": by}))
        pos = self.pos
        pos.pending = None
        pos.status = "running"
        try:
            changes = self._apply_now(changes, name)
        except GraphError as exc:  # an Edit the state refuses, a reducer that raised
            # The occurrence is not resolved: the failure record shows the barrier not reached
            # yet (its decision is spent), so a resume reaches it again as this same step and
            # asks again.
            pos.step = step - 1
            occurrence = pos.barrier_counts.get(name, 1) - 1
            if occurrence:
                pos.barrier_counts[name] = occurrence
            else:
                pos.barrier_counts.pop(name, None)
            pos.next_node = name
            await self.rec.node_end(name, step, span, t0, ok=False, next_node=None)
            _fill(exc, self.trace_id, name, step)
            raise
        await self.rec.state_changed(step, name, span, changes)
        self.log.info("barrier resolved", node=name, step=step, barrier_id=barrier_id, by=by)
        self._tel_event(
            "graphexec.barrier.resolved",
            barrier_id,
            name,
            step,
            decision=verdict,
            by=by,
            edited=isinstance(decision, Edit),
        )
        if self.rec.emitter is not None:
            await self.rec.send(
                BarrierResolved(
                    trace_id=self.trace_id,
                    step=step,
                    barrier_id=barrier_id,
                    node=name,
                    decision=verdict,  # type: ignore[arg-type]
                    reason=reason,
                    by=by,  # type: ignore[arg-type]
                    edited=isinstance(decision, Edit),
                )
            )
        pos.next_node = None
        nxt = route(self.graph, self.state, name, None)
        pos.next_node = nxt
        await self.rec.node_end(name, step, span, t0, ok=True, next_node=nxt)
        self.ckpt.note_step(step, name, changes)
        if nxt is not None and self.ckpt.on_barrier:
            await self._save("barrier_resolved")
            await anyio.lowlevel.checkpoint_if_cancelled()

    # -- endings -----------------------------------------------------------------------------

    async def _save(
        self,
        trigger: str,
        error: str | None = None,
        *,
        failure: ErrorInfo | None = None,
        final: bool = False,
        release: bool = False,
        decisions_after: int | None = None,
        allow_base: bool = True,
    ) -> Any:
        self.host.prepare()
        return await self.ckpt.save(
            self.pos,
            self.state,
            trigger,
            error=error,
            failure=failure,
            final=final,
            release=release,
            decisions_after=decisions_after,
            allow_base=allow_base,
        )

    def _finish(self, status: RunStatus, error: GraphError | None) -> GraphResult:
        self.pos.status = status
        entries = self.rec.entries
        self.result = GraphResult.of(
            trace_id=self.trace_id,
            state=self.graph.spec.public(self.state),
            status=status,
            steps=self.pos.step,
            duration=time.perf_counter() - self._t0,
            execution_log=entries if entries is not None else [],
            error=error,
            turn=self.pos.turn,
            reused=self.reused,
        )
        return self.result

    async def _completed(self) -> None:
        self.pos.status = "completed"
        # From here a failed save must not cost a node re-run: _failed records the failure as
        # "completion_failed", which resume_from finishes without running anything.
        self._completing = True
        if self.ckpt.on_completion:
            await self._save_final_retrying()
        await self.ckpt.flush()
        result = self._finish("completed", None)
        emitter = self.rec.emitter
        if emitter is not None:
            if emitter.log is not None:  # the recorded GraphComplete refers to that checkpoint
                emitter.log.state_seq = self.ckpt.completion_seq()
            await self.rec.send(
                GraphComplete(
                    trace_id=self.trace_id,
                    step=self.pos.step,
                    state=self.state,
                    steps=result.steps,
                    duration=result.duration,
                )
            )

    async def _save_final_retrying(self) -> None:
        """The completion checkpoint, tried again after a passing store error (disk full, busy
        past the timeout, an I/O error): a failed sync save leaves the checkpointer's buffered
        steps in place, so a later attempt writes the same record."""
        for wait in _FINAL_SAVE_WAITS:
            try:
                await self._save("completion", final=True)
                return
            except CheckpointError as exc:
                self.log.warning("completion checkpoint failed; trying again", error=str(exc))
                await anyio.sleep(wait)
        await self._save("completion", final=True)

    async def _failed(self, exc: GraphError) -> None:
        step = self.pos.step
        _fill(exc, self.trace_id, exc.node, exc.step if exc.step is not None else step)
        self.pos.status = "failed"
        self.log.error(
            "run failed",
            node=exc.node,
            step=exc.step,
            error=str(exc),
            error_type=type(exc).__name__,
        )
        if self.ckpt.on_completion:
            try:
                # A torn node (some of its deltas applied) leaves a half-updated state that no
                # checkpoint may hold: the failure record is then a delta of the steps before
                # it (the failed node's deltas were never noted), so it restores to the last
                # good state, with the failed node as next node: a resume re-runs it.
                await self._save(
                    "completion_failed" if self._completing else "failure",
                    error=f"{type(exc).__name__}: {exc}",
                    failure=error_info(exc, exc.node),
                    final=True,
                    allow_base=not self._torn,
                )
                await self.ckpt.flush()
            except GraphError as ckpt_exc:
                self.log.error("failure checkpoint not written", error=str(ckpt_exc))
        self._finish("failed", exc)
        if self.rec.emitter is not None:
            await self.rec.send(
                GraphFailed(
                    trace_id=self.trace_id,
                    step=step,
                    error=error_info(exc, exc.node),
                    state=self.state,
                )
            )

    async def _stopped(self) -> None:
        """Cancelled (handle.cancel(), the consumer leaving, or an outer cancel scope), or
        interrupted (the executor's shutdown)."""
        pos = self.pos
        self.host.prepare()
        waiting = pos.pending is not None and not self._cancel_requested
        interrupted = self._interrupted and not self._cancel_requested and not waiting
        status: RunStatus = "waiting" if waiting else "interrupted" if interrupted else "cancelled"
        pos.status = status
        error = (
            None
            if waiting or interrupted
            else Cancelled(
                f"run {self.trace_id!r} was cancelled", trace_id=self.trace_id, step=pos.step
            )
        )
        trigger = "left" if waiting else "interrupt" if interrupted else "cancel"
        keeper = getattr(self.ckpt, "keeper", None)
        try:
            if self._leaving and waiting:
                # Left at a barrier (``leaves``): nothing to write when the waiting save gave
                # the lease up; else record the wait now, reading the inbox in the same
                # transaction (decisions found there make the store ready the run again).
                if keeper is None or not keeper.parked:
                    await self._save("parked", final=True, decisions_after=pos.decision_cursor)
                self.log.info(
                    "left the run waiting",
                    barrier_id=pos.pending.barrier_id if pos.pending else None,
                )
            else:
                # A wait read the inbox in the same transaction: a decision that came since the
                # last look makes the store ready the run again (nobody here polls any more).
                await self._save(
                    trigger,
                    failure=None if error is None else error_info(error, None),
                    final=True,
                    decisions_after=pos.decision_cursor if waiting else None,
                )
            await self.ckpt.flush()
        except GraphError as exc:
            self.log.error(f"{trigger} checkpoint not written", error=str(exc))
        self._finish(status, error)
        if interrupted and self.rec.emitter is not None:
            await self.rec.send(
                GraphInterrupted(trace_id=self.trace_id, step=pos.step, state=self.state)
            )
        # Sent even when the consumer left: the event log records it (a tail ends there).
        if error is not None and self.rec.emitter is not None:
            await self.rec.send(
                GraphFailed(
                    trace_id=self.trace_id,
                    step=pos.step,
                    error=error_info(error, None),
                    state=self.state,
                    status="cancelled",
                )
            )


def _fill(exc: GraphError, trace_id: str, node: str | None, step: int | None) -> None:
    if exc.trace_id is None:
        exc.trace_id = trace_id
    if exc.node is None:
        exc.node = node
    if exc.step is None:
        exc.step = step
