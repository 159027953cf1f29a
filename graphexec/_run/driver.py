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
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .._apply import TornUpdate, apply_changes
from .._barrier_ids import barrier_id as _barrier_id
from .._checkpointer import Checkpointer, NullCheckpointer
from .._decisions import Decision, Edit, Reject, decision_name, default_decision
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
)
from .._graph import Graph, NodeSpec
from ..checkpoint._base import CheckpointStore
from ..checkpoint._record import PendingBarrier, now
from ..exceptions import (
    Cancelled,
    GraphError,
    InvalidGraph,
    NodeExecutionFailed,
    RunFinished,
    StepsExceeded,
)
from ..typing import RunStatus
from .decisions import check_offer, merge_stored, take_decision
from .invoke import invoke
from .position import Position
from .recorder import Recorder, error_info
from .result import GraphResult
from .routing import route
from .step import execute_node

__all__ = ("Driver",)


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
    ) -> None:
        self.graph = graph
        self.state = state
        self.trace_id = trace_id
        self.pos = position
        self.max_steps = max_steps
        self.ckpt = checkpointer
        self.store = store
        """Where decisions from other processes arrive (None: only the handle decides)."""
        self.poll_interval = poll_interval
        self.rec = Recorder(trace_id, graph.name, emitter, keep_log=keep_log)
        self.start_trigger = start_trigger
        self.resumed = resumed
        self.parent = parent
        self.must_be_decided = must_be_decided
        self.result: GraphResult | None = None
        self._scope: anyio.CancelScope | None = None
        self._cancel_requested = False
        self._interrupted = False
        self.recorded = anyio.Event()
        """Set once the run's first checkpoint is committed (or the run ended without one):
        from then on other processes find it in the store."""
        self._torn = False
        self._t0 = 0.0
        self._wake_send, self._wake_recv = anyio.create_memory_object_stream[str](math.inf)

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

    async def main(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run to the end; never raises a GraphError (it becomes the result and an event)."""
        task_status.started()
        self._t0 = time.perf_counter()
        emitter = self.rec.emitter
        log = emitter.log if emitter is not None else None
        try:
            async with anyio.create_task_group() as tg:
                await self.ckpt.start(tg)
                if log is not None and log.store is not None:
                    tg.start_soon(log.run)
                if self.store is not None:
                    tg.start_soon(self._watch_cancel)
                try:
                    await self._guarded()
                finally:
                    with anyio.CancelScope(shield=True):
                        try:
                            await self.ckpt.close()
                        except GraphError as exc:
                            self.log.error("final checkpoint flush failed", error=str(exc))
                    tg.cancel_scope.cancel()
        finally:
            self.recorded.set()
            self._wake_send.close()
            self._wake_recv.close()
            if emitter is not None:
                with anyio.CancelScope(shield=True):
                    await emitter.flush()
                    if log is not None:
                        await log.close()
                emitter.close()

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
        """Take a cancel requested through the store (ex.cancel() in another process)."""
        assert self.store is not None
        while not self.finished:
            await anyio.sleep(self.poll_interval)
            try:
                if await self.store.take_cancel_request(self.trace_id):
                    self.log.info("cancel requested through the store")
                    self.request_cancel()
                    return
            except GraphError as exc:  # a passing store error: look again at the next poll
                self.log.warning("cancel request not read", error=str(exc))

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
                )
            )
        if self.start_trigger is not None:
            await self._save(self.start_trigger)
            await anyio.lowlevel.checkpoint_if_cancelled()
        self.recorded.set()
        if pos.pending is not None:
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
        if step > self.max_steps:
            raise StepsExceeded(
                f"the run reached max_steps={self.max_steps} before {what} {name!r}",
                max_steps=self.max_steps,
                node=name,
                step=self.pos.step,
            )
        return step

    async def _step(self, spec: NodeSpec) -> None:
        # The hot path of every run: the recorder is awaited only when someone listens (an
        # await of a coroutine that returns at once still costs its creation, per step).
        name = spec.name
        pos = self.pos
        step = pos.step + 1
        if step > self.max_steps:
            self._next_step(name, "node")  # raises StepsExceeded
        span = f"{name}@{step}"
        rec = self.rec
        listening = rec.emitter is not None
        if listening:
            await rec.node_start(step, name, span, spec.kind)
        t0 = time.perf_counter()
        try:
            directive, changes, usage = await execute_node(
                self.graph, self.state, spec, step, span, rec
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
            await rec.node_end(name, step, span, t0, ok=False, next_node=None)
            _fill(exc, self.trace_id, name, step)
            raise
        # The step is committed before routing: a routing failure leaves the state with the
        # node's deltas applied and no next node (see resume_from for what that means).
        pos.step = step
        pos.next_node = None
        nxt = route(self.graph, self.state, name, directive)
        if directive is not None and type(directive) is Fallback:
            await self._fell_back(spec, directive, step, span)
        pos.next_node = nxt
        t1 = rec.log_line(name, step, t0, ok=True)
        if listening:
            await rec.send_end(name, step, span, t1 - t0, ok=True, next_node=nxt)
        trigger = self.ckpt.after_step(
            step,
            name,
            changes,
            t1 - t0,
            usage,
            spec.side_effects,
            more=nxt is not None,
        )
        if trigger is not None:
            await self._save(trigger)
            # The commit is shielded: a cancel from an outer scope that came meanwhile
            # is raised here, before the next node starts.
            await anyio.lowlevel.checkpoint_if_cancelled()

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
        name = spec.name
        step = self._next_step(name, "barrier")
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
        step = self.pos.step
        span = f"{spec.name}@{step}"
        await self.rec.node_start(step, spec.name, span, "barrier")
        await self._pull_store_decisions()
        await self._wait_and_resolve(spec, step, span, time.perf_counter(), resumed=True)

    async def _wait_and_resolve(
        self, spec: NodeSpec, step: int, span: str, t0: float, *, resumed: bool = False
    ) -> None:
        pos = self.pos
        pending = pos.pending
        assert pending is not None
        decision = take_decision(pos, pending.barrier_id, spec.name)
        by = "human"
        if decision is None and not resumed:
            pos.status = "waiting"
            pos.next_node = spec.name
            found = None
            if self.ckpt.on_barrier:
                found = await self._save("barrier_waiting", decisions_after=pos.decision_cursor)
            if found is None:
                await self._pull_store_decisions()
            else:
                merge_stored(self.graph, pos, found, self.log)
            decision = take_decision(pos, pending.barrier_id, spec.name)
        if decision is None:
            pos.status = "waiting"
            pos.next_node = spec.name
            await self.ckpt.flush()  # BarrierWaiting only once the wait is committed
            self.log.info(
                "barrier waiting", node=spec.name, step=step, barrier_id=pending.barrier_id
            )
            if self.rec.emitter is not None:
                await self.rec.send(
                    BarrierWaiting(
                        trace_id=self.trace_id,
                        step=step,
                        barrier_id=pending.barrier_id,
                        node=spec.name,
                        prompt=pending.prompt,
                        deadline=pending.deadline,
                    )
                )
            decision, by = await self._wait(spec, pending)
        await self._resolve(spec, step, span, pending.barrier_id, decision, by, t0)

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
        found = await self.store.decisions_after(self.trace_id, self.pos.decision_cursor)
        merge_stored(self.graph, self.pos, found, self.log)

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
        final: bool = False,
        decisions_after: int | None = None,
        allow_base: bool = True,
    ) -> Any:
        return await self.ckpt.save(
            self.pos,
            self.state,
            trigger,
            error=error,
            final=final,
            decisions_after=decisions_after,
            allow_base=allow_base,
        )

    def _finish(self, status: RunStatus, error: GraphError | None) -> GraphResult:
        self.pos.status = status
        entries = self.rec.entries
        self.result = GraphResult(
            trace_id=self.trace_id,
            state=self.graph.spec.public(self.state),
            status=status,
            steps=self.pos.step,
            duration=time.perf_counter() - self._t0,
            execution_log=entries if entries is not None else [],
            error=error,
        )
        return self.result

    async def _completed(self) -> None:
        self.pos.status = "completed"
        if self.ckpt.on_completion:
            await self._save("completion", final=True)
        await self.ckpt.flush()
        result = self._finish("completed", None)
        if self.rec.emitter is not None:
            await self.rec.send(
                GraphComplete(
                    trace_id=self.trace_id,
                    step=self.pos.step,
                    state=self.state,
                    steps=result.steps,
                    duration=result.duration,
                )
            )

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
                    "failure",
                    error=f"{type(exc).__name__}: {exc}",
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
        try:
            await self._save(trigger, final=True)
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
