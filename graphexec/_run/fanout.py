"""Fan-out: static parallel nodes and map nodes in one anyio task group, and their merge.

Branch failures are caught inside each branch task and kept, instead of letting them propagate
into the task group (which would wrap them in an ExceptionGroup and cancel the siblings in every
mode): the failure policy is then decided in one place, ``_outcome`` below.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeAlias

import anyio

from .._callables import UserFn
from .._context import NodeContext, _Usage
from .._directives import End, Fallback, Goto
from .._events import BranchCompleted, ParallelCompleted, ParallelStarted
from .._graph import NodeSpec
from .._spec import ERRORS_KEY, Branch, Child
from .._state import changes_of
from .._view import StateView, fresh
from ..checkpoint._record import BranchRecord, KeptOutputs
from ..exceptions import NodeExecutionFailed, StateError
from .attempts import Resilience, error_record, retry_branch
from .child import item_value, run_child, state_in, subgraph_changes
from .invoke import invoke
from .recorder import Recorder, error_info

__all__ = ("FanOut", "run_map", "run_parallel")

# on_failure values under which a failed branch does not fail its node: "skip" drops the
# branch (recording its error), "fallback" lets the node take its fallback edge.
_SURVIVED = ("skip", "fallback")


BranchBackoff: TypeAlias = Callable[[dict[str, tuple[int, float]], dict[str, Any]], Awaitable[None]]
"""Called with (branches entering a backoff: their failed attempts and next attempt's time;
the outputs of the branches finished so far) before a branch's backoff, and again each time a
branch finishes while another has backed off: the loop checkpoints the fan-out's progress."""


class FanOut:
    """What a fan-out needs besides its node: the executor's resilience, the graph's name
    (breakers are per graph and node), the progress kept from an earlier execution at this
    step, and what to do before a branch's backoff."""

    __slots__ = ("graph_name", "kept", "on_backoff", "res")

    def __init__(
        self,
        res: Resilience,
        graph_name: str,
        kept: KeptOutputs | None,
        on_backoff: BranchBackoff | None = None,
    ) -> None:
        self.res = res
        self.graph_name = graph_name
        self.kept = kept
        self.on_backoff = on_backoff


async def _fan_out(
    rec: Recorder,
    usage: _Usage,
    spec: NodeSpec,
    step: int,
    span: str,
    jobs: Sequence[tuple[str, UserFn, Any]],
    limit: int | None,
    fan: FanOut,
) -> tuple[list[Any], dict[str, BaseException]]:
    """Run every (branch name, callable, first argument) job; return results in job order.

    Jobs whose output ``fan.kept`` holds (a failed earlier execution of this node at this
    step) are not run again: their kept output is used.
    """
    emitter = rec.emitter
    trace_id = rec.trace_id
    name = spec.name
    results: list[Any] = [None] * len(jobs)
    failures: dict[str, BaseException] = {}
    limiter = anyio.CapacityLimiter(limit) if limit else None
    kept = fan.kept.results if fan.kept is not None else {}
    resumed_attempts = fan.kept.attempts if fan.kept is not None else {}
    done = set(kept)
    """Branches that returned (or whose output was kept)."""
    survive = spec.on_failure in _SURVIVED
    if emitter is not None:
        await emitter.send(
            ParallelStarted(
                trace_id=trace_id, step=step, node=name, span_id=span, branches=[j[0] for j in jobs]
            )
        )

    async def one_call(call: UserFn, arg: Any, bname: str, attempt: int, beat: Any) -> Any:
        if call.is_async and not call.takes_ctx:  # the common branch: one await, no context
            return await call.fn(arg)
        ctx = (
            NodeContext(trace_id, step, name, span, bname, emitter, attempt, beat)
            if call.takes_ctx
            else None
        )
        result = await invoke(call, (arg, ctx) if ctx is not None else (arg,))
        if ctx is not None:
            usage.tokens += ctx._usage.tokens
            usage.side_effects = usage.side_effects or ctx._usage.side_effects
        return result

    backed_off: set[str] = set()

    async def progress(waiting: dict[str, tuple[int, float]]) -> None:
        if fan.on_backoff is not None:
            finished = {b: results[i] for i, (b, _c, _a) in enumerate(jobs) if b in done}
            await fan.on_backoff(waiting, finished)

    async def before_backoff(bname: str, attempt: int, retry_at: float) -> None:
        backed_off.add(bname)
        await progress({bname: (attempt, retry_at)})

    # Without a retry, timeout or breaker (and without telemetry) a branch is one call.
    plain = not spec.resilient and rec.tel is None

    async def run_one(bname: str, call: UserFn, arg: Any) -> Any:
        if plain:
            return await one_call(call, arg, bname, 1, None)
        failed, retry_at = resumed_attempts.get(bname, (0, None))
        return await retry_branch(
            fan.res,
            rec,
            fan.graph_name,
            spec,
            step,
            span,
            bname,
            lambda attempt, beat: one_call(call, arg, bname, attempt, beat),
            failed,
            retry_at,
            partial(before_backoff, bname),
        )

    async def branch(i: int, bname: str, call: UserFn, arg: Any, scope: anyio.CancelScope) -> None:
        t0 = time.perf_counter()
        error = None
        try:
            if limiter is not None:
                async with limiter:
                    results[i] = await run_one(bname, call, arg)
            elif plain:
                results[i] = await one_call(call, arg, bname, 1, None)
            else:
                results[i] = await run_one(bname, call, arg)
            done.add(bname)
            if backed_off:  # a checkpoint of this fan-out's progress exists: keep it current
                await progress({})
        except Exception as exc:  # noqa: BLE001 - kept; the policy is applied in _outcome
            failures[bname] = exc
            error = f"{type(exc).__name__}: {exc}"
            if spec.on_error == "fail_fast" and not survive:
                scope.cancel()
        if emitter is not None:
            emitter.send_soon(
                BranchCompleted(
                    trace_id=trace_id,
                    step=step,
                    node=name,
                    span_id=span,
                    branch=bname,
                    ok=error is None,
                    duration=time.perf_counter() - t0,
                    error=error,
                )
            )

    async with anyio.create_task_group() as tg:
        for i, (bname, call, arg) in enumerate(jobs):
            if bname in kept:
                results[i] = kept[bname]
                continue
            tg.start_soon(branch, i, bname, call, arg, tg.cancel_scope, name=bname)
    if spec.on_error != "fail_fast":
        # In declaration order, not completion order (which is the scheduler's): what the
        # error and the events list does not depend on the backend. fail_fast keeps the
        # first failure first: it is the one that cancelled the others.
        failures = {b: failures[b] for b, _c, _a in jobs if b in failures}
    if emitter is not None:
        await emitter.send(
            ParallelCompleted(
                trace_id=trace_id,
                step=step,
                node=name,
                span_id=span,
                ok=not failures,
                failed=list(failures),
            )
        )
    try:
        await _outcome(rec, spec, step, span, failures)
    except NodeExecutionFailed as exc:
        # What succeeded is kept (the loop records it in the checkpoint): the next execution
        # of this node at this step runs only the failed branches.
        # (A branch cancelled by fail_fast finished nothing: it is not kept.)
        exc.kept = {bname: results[i] for i, (bname, _c, _a) in enumerate(jobs) if bname in done}
        raise
    return results, failures


async def _outcome(
    rec: Recorder, spec: NodeSpec, step: int, span: str, failures: dict[str, BaseException]
) -> None:
    """The one place the failure policy is applied."""
    if not failures:
        return
    name = spec.name
    if spec.on_error == "fail_fast" and spec.on_failure not in _SURVIVED:
        first_branch, first = next(iter(failures.items()))
        # A branch or item that is a child graph: the error names the path of the node that
        # failed inside it ("tools[2]/search"), not only the fan-out node.
        inner = getattr(first, "node", None)
        raise NodeExecutionFailed(
            f"branch {first_branch!r} of node {name!r} failed: {first!r} "
            "(on_error='fail_fast' cancelled the other branches)",
            node=inner if isinstance(inner, str) and inner.startswith(f"{name}[") else name,
            cause=first,
            failures=failures,
        )
    if spec.on_error == "collect" and spec.on_failure not in _SURVIVED:
        group = ExceptionGroup(
            f"{len(failures)} branch(es) of node {name!r} failed",
            [e if isinstance(e, Exception) else RuntimeError(repr(e)) for e in failures.values()],
        )
        raise NodeExecutionFailed(
            f"{len(failures)} branch(es) of node {name!r} failed: "
            + "; ".join(f"{b}: {e!r}" for b, e in failures.items()),
            node=name,
            cause=group,
            failures=failures,
        )
    for bname, exc in failures.items():
        rec.log.warning("branch failed", node=name, step=step, span_id=span, branch=bname)
        await rec.observed(step, name, span, error_info(exc, name), bname)


def _branch_call(branch: Branch, node: str, rec: Recorder, step: int) -> UserFn:
    """A branch's callable: its function, or for a branch that is a graph, a call that runs
    the child at path ``<node>[<branch>]`` and returns ``output=``'s updates."""
    child = branch.child
    if child is None:
        assert branch.call is not None
        return branch.call
    path = f"{node}[{branch.name}]"

    async def run(view: Any) -> Any:
        initial = state_in(child, view, path, item=False)
        final, typed = await run_child(child.graph, child, initial, path, rec, step)
        out = subgraph_changes(child, branch.name, final, typed)
        await rec.host.saved_done(branch.name, out)
        return out

    return UserFn(run, True, False, True)


def _item_call(child: Child, path: str, rec: Recorder, step: int) -> UserFn:
    """A map item's callable when each item runs a graph: the child at ``path``
    (``"<node>[<i>]"``), whose final state gives the item's result."""

    async def run(item: Any) -> Any:
        initial = state_in(child, item, path, item=True)
        final, typed = await run_child(child.graph, child, initial, path, rec, step)
        out = item_value(child, path, final, typed)
        await rec.host.saved_done(path, out)
        return out

    return UserFn(run, True, False, True)


async def run_parallel(
    rec: Recorder,
    usage: _Usage,
    reducers: Mapping[str, Any],
    spec: NodeSpec,
    step: int,
    span: str,
    view: Callable[[], Any],
    fan: FanOut,
    reads: Any = None,
) -> tuple[list[tuple[str, Any]], dict[str, BaseException]]:
    """Run a static parallel node; merged deltas in branch declaration order, and the branches
    that failed without failing the node.

    Each branch gets its own view (``view()``), so ``reads`` (a ``step.Reads``) gets what each
    branch read: per branch that succeeded, its keys and how many of the deltas it wrote, and
    for the node every branch's keys (a branch whose output was kept: the keys ``reads.known``
    gives for it, else unknown)."""
    views: list[Any] = []
    for _ in spec.branches:
        # Nothing records what each branch read (reads None), and a StateView hands out
        # copies: then one view serves every branch. (A typed state's instance is the branch's
        # own to mutate.)
        share = views and reads is None and type(views[0]) is StateView
        views.append(views[0] if share else view())
    jobs = [
        (b.name, b.call if b.child is None and b.call else _branch_call(b, spec.name, rec, step), v)
        for b, v in zip(spec.branches, views, strict=True)
    ]
    results, failures = await _fan_out(rec, usage, spec, step, span, jobs, None, fan)
    writers: dict[str, list[str]] = {}
    merged: list[tuple[str, Any]] = []
    kept = fan.kept.results if fan.kept is not None else {}
    known = reads.known if reads is not None and reads.known is not None else {}
    records: list[BranchRecord] | None = [] if reads is not None else None
    union: set[str] | None = set() if reads is not None else None
    fingerprints = {b.name: b.fingerprint for b in spec.branches}
    for (bname, _call, arg), out in zip(jobs, results, strict=True):
        keys = None
        if records is not None:
            if bname in kept:
                keys = known.get(bname)
            else:
                keys = getattr(arg, "keys_read", None)  # None: typed state
            if union is not None:
                if keys is None:
                    union = None
                else:
                    union.update(keys)
        if bname in failures:
            continue
        if type(out) is not dict and isinstance(out, Goto | End | Fallback):
            raise StateError(
                f"branch {bname!r} of parallel node {spec.name!r} returned "
                f"{type(out).__name__}; branches return None or a mapping of updates",
                node=spec.name,
            )
        changes = changes_of(out, node=f"{spec.name}.{bname}")
        for key, value in changes:
            writers.setdefault(key, []).append(bname)
            merged.append((key, value))
        if records is not None:
            records.append(
                BranchRecord(
                    bname,
                    sorted(keys) if keys is not None else None,
                    len(changes),
                    fingerprints[bname],
                )
            )
    if reads is not None:
        reads.keys = union
        reads.branches = records
    for key, names in writers.items():
        if len(set(names)) > 1 and key not in reducers:  # one branch may write a key twice
            raise StateError(
                f"parallel node {spec.name!r}: branches {', '.join(map(repr, names))} all wrote "
                f"key {key!r}, which has no reducer (overwrite); declare one with "
                f".reducer({key!r}, ...) or write different keys",
                key=key,
                branches=names,
                node=spec.name,
            )
    if failures and spec.on_failure == "skip":
        merged.append(
            (ERRORS_KEY, {f"{spec.name}.{b}": error_record(e) for b, e in failures.items()})
        )
    return merged, failures


async def run_map(
    rec: Recorder,
    usage: _Usage,
    spec: NodeSpec,
    step: int,
    span: str,
    state: dict[str, Any],
    fan: FanOut,
) -> tuple[list[tuple[str, Any]], dict[str, BaseException]]:
    """Run a map node over ``state[over]``; one delta appending the results to ``into`` (a
    failed item that did not fail the node contributes nothing), and the failed items."""
    assert spec.over is not None and spec.into is not None
    items = state.get(spec.over)
    if items is None:
        items = []
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise StateError(
            f"map node {spec.name!r}: state[{spec.over!r}] must be a list, "
            f"got {type(items).__name__}",
            key=spec.over,
            node=spec.name,
        )
    # Each item is a copy (fresh): a map function mutating its item cannot change the state.
    child = spec.child
    call = spec.call
    jobs: list[tuple[str, UserFn, Any]] = []
    for i, item in enumerate(items):
        path = f"{spec.name}[{i}]"
        if child is not None:
            call = _item_call(child, path, rec, step)
        assert call is not None
        jobs.append((path, call, fresh(item)))
    results, failures = await _fan_out(
        rec, usage, spec, step, span, jobs, spec.max_concurrency, fan
    )
    kept = [r for (bname, _c, _a), r in zip(jobs, results, strict=True) if bname not in failures]
    changes: list[tuple[str, Any]] = [(spec.into, kept)]
    if failures and spec.on_failure == "skip":
        changes.append((ERRORS_KEY, {b: error_record(e) for b, e in failures.items()}))
    return changes, failures
