"""One node execution: call the node (or fan it out), and collect what it returned as deltas.

This is the seam where a node's execution is wrapped: :func:`run_attempts` calls
:func:`execute_node` once per attempt under the node's retry policy, timeout, heartbeat timeout
and circuit breaker (``attempts.py``), keeping the attempt count in the run's position so a
checkpoint taken before a backoff records the budget spent. Neither applies deltas nor routes
(the loop does both once the execution has succeeded). What the execution read goes into a
:class:`Reads` the loop records with the step. A re-run asks its reuse rule
(``graphexec/_rerun/reuse.py``) before any of this (``Driver._reused``: a reused execution is
replayed, never retried or timed); for a fan-out node that runs again, the branches or items
whose recorded output stands are handed in as kept outputs, the mechanism a failed fan-out's
next attempt uses.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeAlias, assert_never

from .._context import NodeContext, _Usage
from .._directives import End, Fallback, Goto
from .._graph import Graph, NodeSpec
from .._state import changes_of
from ..checkpoint._record import BranchRecord
from ..exceptions import GraphError, NodeExecutionFailed, NodeTimeout, RetriesExhausted
from .attempts import Resilience, attempt_call, cause_of
from .child import run_child, state_in, subgraph_changes
from .fanout import BranchBackoff, FanOut, run_map, run_parallel
from .invoke import invoke
from .position import Position
from .recorder import Recorder
from .routing import Directive

__all__ = ("Outcome", "Reads", "execute_node", "run_attempts")


Outcome: TypeAlias = tuple[Directive | None, list[tuple[str, Any]], _Usage | None]
"""What one execution produced: the routing directive, the changes, and the tokens and side
effects the node reported through its context (if it had one). A plain tuple: built per step."""


class Reads:
    """What one node execution read, filled by :func:`execute_node`; the loop keeps one and
    records it in the step's record (the re-run's reuse test compares these keys' values)."""

    __slots__ = ("branches", "keys", "known")

    def __init__(self) -> None:
        self.keys: set[str] | frozenset[str] | None = None
        """The state keys read (None: unknown, typed state)."""
        self.branches: list[BranchRecord] | None = None
        """A parallel node: per branch that succeeded, what it read and how many deltas."""
        self.known: dict[str, list[str] | None] | None = None
        """A re-run: the recorded reads of the branches handed in as kept outputs."""

    def reset(self) -> None:
        self.keys = self.branches = self.known = None


async def execute_node(
    graph: Graph,
    state: dict[str, Any],
    spec: NodeSpec,
    step: int,
    span: str,
    rec: Recorder,
    res: Resilience | None = None,
    attempt: int = 1,
    beat: list[float] | None = None,
    fan: FanOut | None = None,
    reads: Reads | None = None,
) -> Outcome:
    """Run node ``spec`` once against ``state`` (not changed here).

    A GraphError passes through; any other exception becomes NodeExecutionFailed naming the
    node. Barriers are not executed here: the loop resolves them with a decision. ``fan``:
    for a fan-out node, its progress kept from an earlier execution at this step and what to
    do before a branch's backoff.
    """
    name = spec.name
    try:
        kind = spec.kind
        if kind == "node":
            call = spec.call
            assert call is not None
            view = graph.spec.view(state)
            if call.takes_ctx:
                ctx = NodeContext(rec.trace_id, step, name, span, None, rec.emitter, attempt, beat)
                result = await invoke(call, (view, ctx))
                usage: _Usage | None = ctx._usage
            else:
                result = await call.fn(view) if call.is_async else await invoke(call, (view,))
                usage = None
            if reads is not None and graph.state_type is None:
                reads.keys = view.keys_read
            if result is None:
                return None, [], usage
            if type(result) is dict:  # the usual return, decided without isinstance checks
                return None, list(result.items()), usage
            if isinstance(result, Goto | End | Fallback):
                return result, changes_of(result.update, node=name), usage
            return None, changes_of(result, node=name), usage
        if fan is None:
            fan = FanOut(res if res is not None else Resilience(), graph.name, None)
        if kind == "parallel":
            usage = _Usage()
            changes, failures = await run_parallel(
                rec,
                usage,
                graph.reducers,
                spec,
                step,
                span,
                lambda: graph.spec.view(state),
                fan,
                reads,
            )
            return _fell_back(spec, failures), changes, usage
        if kind == "map":
            usage = _Usage()
            changes, failures = await run_map(rec, usage, spec, step, span, state, fan)
            if reads is not None:
                assert spec.over is not None
                reads.keys = frozenset((spec.over,))
            return _fell_back(spec, failures), changes, usage
        if kind == "subgraph":
            child = spec.child
            assert child is not None
            initial = state_in(child, graph.spec.view(state), name, item=False)
            final, typed = await run_child(child.graph, child, initial, name, rec, step)
            return None, changes_of(subgraph_changes(child, name, final, typed), node=name), None
        if kind == "barrier":
            raise AssertionError(f"barrier {name!r} is resolved by the loop, not executed")
        assert_never(kind)
    except GraphError:
        raise
    except Exception as exc:
        raise NodeExecutionFailed(f"node {name!r} raised {exc!r}", node=name, cause=exc) from exc


def _fell_back(spec: NodeSpec, failures: dict[str, BaseException]) -> Fallback | None:
    """A fan-out with ``on_failure="fallback"`` whose branches failed takes its fallback edge
    (with the successful branches' deltas)."""
    if failures and spec.on_failure == "fallback":
        return Fallback(
            "; ".join(f"{b} failed: {type(e).__name__}: {e}" for b, e in failures.items())
        )
    return None


async def run_attempts(
    graph: Graph,
    state: dict[str, Any],
    spec: NodeSpec,
    step: int,
    span: str,
    rec: Recorder,
    res: Resilience,
    pos: Position,
    before_wait: Callable[[], Awaitable[None]],
    first: GraphError | None = None,
    first_t0: float = 0.0,
    branch_backoff: BranchBackoff | None = None,
    reads: Reads | None = None,
) -> tuple[Outcome, int]:
    """Execute ``spec`` until an attempt succeeds or its Retry gives up; the outcome and the
    number of the attempt that succeeded.

    The failed attempts so far and the time of the next one live in ``pos`` (``attempt``,
    ``retry_at``); ``before_wait`` runs once they are set, before each backoff (the loop
    checkpoints there), so a crash during a backoff resumes with the remaining budget and
    waits out the rest of the backoff. ``first``: the error of an attempt the loop already
    made (started at ``first_t0``): the loop calls a node with only a retry policy directly,
    and comes here once it failed, so a node that does not fail pays nothing for its policy.
    A fan-out node is executed once: its retries and timeouts apply to each branch inside it,
    and ``branch_backoff`` runs before each branch's backoff (see fanout.BranchBackoff).
    Raises the last error, as RetriesExhausted when the budget ran out.
    """
    if spec.kind in ("parallel", "map"):
        kept = pos.kept
        if kept is not None and (kept.node != spec.name or kept.step != step):
            kept = None
        fan = FanOut(res, graph.name, kept, branch_backoff)
        if rec.tel is None:
            outcome = await execute_node(
                graph, state, spec, step, span, rec, res, 1, None, fan, reads
            )
        else:  # its branches' spans are children of this one
            with rec.tel.span("node", spec.name, step, span):
                outcome = await execute_node(
                    graph, state, spec, step, span, rec, res, 1, None, fan, reads
                )
        return outcome, 1
    policy = spec.retry
    clock = res.clock
    errors: list[BaseException] = []
    name = spec.name
    error = first
    while True:
        attempt = pos.attempt + 1
        if error is None:
            if pos.retry_at is not None:  # a backoff to wait out (maybe begun before a crash)
                wait = pos.retry_at - clock.now()
                if wait > 0:
                    await clock.sleep(wait)
                pos.retry_at = None
            t0 = time.perf_counter()
            call = partial(
                execute_node, graph, state, spec, step, span, rec, res, attempt, reads=reads
            )
            try:
                if rec.tel is None:
                    outcome = await attempt_call(res, rec, graph.name, spec, step, attempt, call)
                else:
                    with rec.tel.span("node", name, step, span, attempt=attempt):
                        outcome = await attempt_call(
                            res, rec, graph.name, spec, step, attempt, call
                        )
            except GraphError as exc:
                error = exc
            else:
                pos.attempt = 0
                return outcome, attempt
        else:
            t0 = first_t0
        cause = cause_of(error)
        errors.append(cause)
        retryable = (
            policy is not None
            and isinstance(error, NodeExecutionFailed | NodeTimeout)
            and policy.retries(cause)
        )
        if not retryable or policy is None or attempt >= policy.attempts:
            pos.attempt = 0  # the execution is over: a later one starts a fresh budget
            if retryable and policy is not None and policy.attempts > 1:
                raise RetriesExhausted(
                    f"node {name!r} failed {attempt} attempts (the last: "
                    f"{type(cause).__name__}: {cause})",
                    node=name,
                    attempts=attempt,
                    errors=errors,
                    step=step,
                ) from cause
            raise error
        wait = policy.wait(attempt, cause, res.rand)
        rec.log_line(name, step, t0, ok=False, attempt=attempt)
        pos.attempt = attempt
        pos.retry_at = clock.now() + wait
        await rec.retry(step, name, span, attempt, cause, wait)
        await before_wait()
        error = None
