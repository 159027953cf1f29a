"""Fan-out: static parallel nodes and map nodes in one anyio task group, and their merge.

Branch failures are caught inside each branch task and kept, instead of letting them propagate
into the task group (which would wrap them in an ExceptionGroup and cancel the siblings in every
mode): the failure policy is then decided in one place, ``_outcome`` below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from .._callables import UserFn
from .._context import NodeContext, _Usage
from .._directives import End, Fallback, Goto
from .._events import BranchCompleted, ParallelCompleted, ParallelStarted
from .._graph import NodeSpec
from .._state import changes_of
from .._view import fresh
from ..checkpoint._record import BranchRecord
from ..exceptions import NodeExecutionFailed, StateError
from .invoke import invoke
from .recorder import Recorder, error_info

__all__ = ("run_map", "run_parallel")


async def _fan_out(
    rec: Recorder,
    usage: _Usage,
    spec: NodeSpec,
    step: int,
    span: str,
    jobs: Sequence[tuple[str, UserFn, Any]],
    limit: int | None,
) -> tuple[list[Any], dict[str, BaseException]]:
    """Run every (branch name, callable, first argument) job; return results in job order."""
    emitter = rec.emitter
    trace_id = rec.trace_id
    name = spec.name
    results: list[Any] = [None] * len(jobs)
    failures: dict[str, BaseException] = {}
    limiter = anyio.CapacityLimiter(limit) if limit else None
    if emitter is not None:
        await emitter.send(
            ParallelStarted(
                trace_id=trace_id, step=step, node=name, span_id=span, branches=[j[0] for j in jobs]
            )
        )

    async def branch(i: int, bname: str, call: UserFn, arg: Any, scope: anyio.CancelScope) -> None:
        t0 = time.perf_counter()
        ctx = NodeContext(trace_id, step, name, span, bname, emitter) if call.takes_ctx else None
        args = (arg, ctx) if ctx is not None else (arg,)
        error = None
        try:
            if limiter is not None:
                async with limiter:
                    results[i] = await invoke(call, args)
            else:
                results[i] = await invoke(call, args)
        except Exception as exc:  # noqa: BLE001 - kept; the policy is applied in _outcome
            failures[bname] = exc
            error = f"{type(exc).__name__}: {exc}"
            if spec.on_error == "fail_fast":
                scope.cancel()
        else:
            if ctx is not None:
                usage.tokens += ctx._usage.tokens
                usage.side_effects = usage.side_effects or ctx._usage.side_effects
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
    await _outcome(rec, spec, step, span, failures)
    return results, failures


async def _outcome(
    rec: Recorder, spec: NodeSpec, step: int, span: str, failures: dict[str, BaseException]
) -> None:
    """The one place the failure policy is applied."""
    if not failures:
        return
    name = spec.name
    if spec.on_error == "fail_fast":
        first_branch, first = next(iter(failures.items()))
        raise NodeExecutionFailed(
            f"branch {first_branch!r} of node {name!r} failed: {first!r} "
            "(on_error='fail_fast' cancelled the other branches)",
            node=name,
            cause=first,
            failures=failures,
        )
    if spec.on_error == "collect":
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


async def run_parallel(
    rec: Recorder,
    usage: _Usage,
    reducers: Mapping[str, Any],
    spec: NodeSpec,
    step: int,
    span: str,
    view: Callable[[], Any],
    known: Callable[[str], tuple[list[tuple[str, Any]], list[str] | None] | None] | None = None,
) -> tuple[list[tuple[str, Any]], list[BranchRecord], set[str] | None]:
    """Run a static parallel node; merged deltas in branch declaration order, per branch that
    succeeded what it read and how many of the deltas it wrote, and the keys all branches read
    (None: unknown, typed state).

    Each branch gets its own view (``view()``), so the keys each one reads are known.
    ``known`` (a re-run): ``known(branch)`` is the changes and read keys the source recorded
    for a branch that need not run again, or None."""
    reused: dict[str, tuple[list[tuple[str, Any]], list[str] | None]] = {}
    if known is not None:
        for b in spec.branches:
            found = known(b.name)
            if found is not None:
                reused[b.name] = found
    views = {b.name: view() for b in spec.branches if b.name not in reused}
    jobs = [(b.name, b.call, views[b.name]) for b in spec.branches if b.name not in reused]
    results, failures = await _fan_out(rec, usage, spec, step, span, jobs, None)
    outs = {bname: out for (bname, _c, _a), out in zip(jobs, results, strict=True)}
    writers: dict[str, list[str]] = {}
    merged: list[tuple[str, Any]] = []
    records: list[BranchRecord] = []
    for b in spec.branches:
        bname = b.name
        if bname in failures:
            continue
        keys: Any
        if bname in reused:
            changes, keys = reused[bname]
        else:
            out = outs[bname]
            if isinstance(out, Goto | End | Fallback):
                raise StateError(
                    f"branch {bname!r} of parallel node {spec.name!r} returned "
                    f"{type(out).__name__}; branches return None or a mapping of updates",
                    node=spec.name,
                )
            changes = changes_of(out, node=f"{spec.name}.{bname}")
            keys = getattr(views[bname], "keys_read", None)
        for key, value in changes:
            writers.setdefault(key, []).append(bname)
            merged.append((key, value))
        records.append(
            BranchRecord(
                bname,
                sorted(keys) if keys is not None else None,
                len(changes),
                b.fingerprint,
            )
        )
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
    return merged, records, _union(records, views.values())


def _union(records: list[BranchRecord], views: Any) -> set[str] | None:
    """The keys the node read: every branch's, the failed ones' included (None: typed)."""
    read: set[str] = set()
    for r in records:
        if r.keys_read is None:
            return None
        read.update(r.keys_read)
    for v in views:
        keys = getattr(v, "keys_read", None)
        if keys is None:
            return None
        read.update(keys)
    return read


async def run_map(
    rec: Recorder,
    usage: _Usage,
    spec: NodeSpec,
    step: int,
    span: str,
    state: dict[str, Any],
    known: Callable[[Any], tuple[bool, Any]] | None = None,
) -> list[tuple[str, Any]]:
    """Run a map node over ``state[over]``; one delta appending the results to ``into``.

    ``known`` (a re-run): ``known(item)`` is ``(True, result)`` for an item whose result the
    source trace recorded, which is then not run again."""
    assert spec.call is not None and spec.over is not None and spec.into is not None
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
    reused: dict[int, Any] = {}
    if known is not None:
        for i, item in enumerate(items):
            found, result = known(item)
            if found:
                reused[i] = result
    jobs = [
        (f"{spec.name}[{i}]", spec.call, fresh(item))
        for i, item in enumerate(items)
        if i not in reused
    ]
    results, failures = await _fan_out(rec, usage, spec, step, span, jobs, spec.max_concurrency)
    if not reused:
        kept = [
            r for (bname, _c, _a), r in zip(jobs, results, strict=True) if bname not in failures
        ]
        return [(spec.into, kept)]
    ran = {bname: r for (bname, _c, _a), r in zip(jobs, results, strict=True)}
    kept = []
    for i in range(len(items)):
        if i in reused:
            kept.append(reused[i])
        elif (bname := f"{spec.name}[{i}]") not in failures:
            kept.append(ran[bname])
    return [(spec.into, kept)]
