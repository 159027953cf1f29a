"""What each command does, against the public API: GraphExecutor and the store contract.

Each ``cmd_*`` function takes the parsed options and returns the exit code; errors leave as
:class:`CliError` or as graphexec errors, which the entry point turns into one line and a code.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio

from .. import _events as ev
from .._decisions import Approve, Decision, Edit, Reject
from .._executor import GraphExecutor, RunState
from .._graph import Graph
from .._run import Run
from ..checkpoint import CheckpointStore, CheckpointSummary, RunInfo, open_store
from ..checkpoint._base import PRUNABLE_STATUSES, parse_barrier_id
from ..exceptions import CheckpointError, InvalidDecision, RunNotFound
from ..typing import RUN_STATUSES
from . import _output as out
from ._exit import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    report,
)
from ._inputs import check_choice, load_registry, parse_assignments, parse_duration, pick
from ._logs import configure_logging

__all__ = (
    "cmd_decide",
    "cmd_fork",
    "cmd_history",
    "cmd_mermaid",
    "cmd_prune",
    "cmd_resume",
    "cmd_runs",
    "cmd_show",
    "make_decision",
    "open_cli_store",
)

T = TypeVar("T")


def _run_async(fn: Callable[[], Awaitable[T]]) -> T:
    # asyncio: every store runs on it (SQLiteStore also runs on trio; others may not).
    return anyio.run(fn, backend="asyncio")


def open_cli_store(url: str, *, create: bool = False) -> CheckpointStore:
    """The store ``--store`` names; a SQLite file must already exist (the command line never
    creates an empty store by a typo), unless ``create`` (``serve`` and ``worker`` start on a
    new store)."""
    try:
        store = open_store(url)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    path = getattr(store, "path", None)  # file-backed stores (SQLite) have one
    if not create and isinstance(path, str) and not os.path.exists(path):
        raise CliError(f"no store at {path!r}: the file does not exist", EXIT_NOT_FOUND)
    return store


async def _need_run(store: CheckpointStore, trace_id: str) -> RunInfo:
    info = await store.get_run(trace_id)
    if info is None:
        raise RunNotFound(f"no run with trace id {trace_id!r} in the store", trace_id=trace_id)
    return info


# -- reading ------------------------------------------------------------------------------------


def cmd_runs(
    store_url: str, *, status: str | None, graph: str | None, limit: int, as_json: bool
) -> int:
    if status is not None:
        check_choice(status, RUN_STATUSES, option="--status")
    if limit < 1:
        raise CliError(f"bad --limit {limit}: must be >= 1")

    async def go() -> list[RunInfo]:
        async with open_cli_store(store_url) as store:
            return await GraphExecutor(store=store).runs(
                status=status, graph_name=graph, limit=limit
            )

    runs = _run_async(go)
    if as_json:
        out.print_json(runs)
    else:
        out.print_runs(runs)
    return EXIT_OK


def cmd_show(
    store_url: str, trace_id: str, *, seq: int | None, graphs: Sequence[str], as_json: bool
) -> int:
    registry = load_registry(graphs)

    async def go() -> RunState:
        async with open_cli_store(store_url) as store:
            info = await _need_run(store, trace_id)
            graph = pick(registry, info.graph_name, trace_id=trace_id) if registry else None
            ex = GraphExecutor(store=store)
            if seq is not None:
                await _need_seq(ex, trace_id, seq)
            try:
                return await ex.get_state(trace_id, seq=seq, graph=graph)
            except CheckpointError as exc:
                raise _with_graphs_hint(exc, graph, info.graph_name) from None

    state = _run_async(go)
    if as_json:
        out.print_json(state)
    else:
        out.print_state(state)
    return EXIT_OK


def cmd_history(
    store_url: str,
    trace_id: str,
    *,
    limit: int | None,
    before: int | None,
    values: bool,
    graphs: Sequence[str],
    as_json: bool,
) -> int:
    if limit is not None and limit < 0:
        raise CliError(f"bad --limit {limit}: must be >= 0")
    registry = load_registry(graphs)

    async def go() -> list[CheckpointSummary]:
        async with open_cli_store(store_url) as store:
            info = await _need_run(store, trace_id)
            graph = pick(registry, info.graph_name, trace_id=trace_id) if registry else None
            try:
                return await GraphExecutor(store=store).history(
                    trace_id, limit=limit, before=before, values=values, graph=graph
                )
            except CheckpointError as exc:
                raise _with_graphs_hint(exc, graph, info.graph_name) from None

    rows = _run_async(go)
    if as_json:
        out.print_json(rows)
    else:
        out.print_history(trace_id, rows, values=values)
    return EXIT_OK


def _with_graphs_hint(exc: CheckpointError, graph: Graph | None, graph_name: str) -> Exception:
    """A restore that needs the run's custom reducers says how to pass them here."""
    if graph is None and "reducer" in exc.message:
        return CliError(
            f"{exc}; here: pass --graphs module:attr holding graph {graph_name!r}, or a module "
            "that registers the reducer",
            EXIT_ERROR,
        )
    return exc


async def _need_seq(ex: GraphExecutor, trace_id: str, seq: int) -> None:
    seqs = [row.seq for row in await ex.history(trace_id)]
    if seq not in seqs:
        raise CliError(
            f"run {trace_id!r} has no checkpoint with seq {seq} (it has {_span(seqs)}; "
            f"'graphexec history {trace_id}' lists them)",
            EXIT_NOT_FOUND,
        )


def cmd_mermaid(target: str, *, graph_name: str | None, as_json: bool) -> int:
    registry = load_registry([target])
    if graph_name is not None:
        graph = registry.get(graph_name)
        if graph is None:
            raise CliError(
                f"{target!r} has no graph {graph_name!r} (it holds: {', '.join(sorted(registry))})",
                EXIT_NOT_FOUND,
            )
    elif len(registry) == 1:
        (graph,) = registry.values()
    else:
        raise CliError(
            f"{target!r} holds {len(registry)} graphs ({', '.join(sorted(registry))}): choose one "
            "with --graph NAME"
        )
    if as_json:
        out.print_json({"graph": graph.name, "hash": graph.hash, "mermaid": graph.to_mermaid()})
    else:
        out.write_line(graph.to_mermaid().rstrip("\n"))
    return EXIT_OK


# -- deciding -----------------------------------------------------------------------------------


def cmd_decide(
    store_url: str, trace_id: str, barrier_id: str, decision: Decision, *, as_json: bool
) -> int:
    """approve, reject and edit: queue the decision in the store's inbox for the run."""
    try:
        node, occurrence = parse_barrier_id(barrier_id)
    except InvalidDecision as exc:
        raise CliError(exc.message) from None
    if occurrence is None:
        raise CliError(
            f"{barrier_id!r} names no occurrence: give the barrier id, e.g. {barrier_id}#1 "
            f"('graphexec show {trace_id}' prints the one the run waits at)"
        )

    async def go() -> tuple[int, RunInfo]:
        async with open_cli_store(store_url) as store:
            info = await _need_run(store, trace_id)
            if info.barrier_nodes and node not in info.barrier_nodes:
                raise CliError(
                    f"run {trace_id!r} (graph {info.graph_name!r}) has no barrier {node!r}; its "
                    f"barriers: {', '.join(sorted(info.barrier_nodes)) or 'none'}",
                    EXIT_NOT_FOUND,
                )
            inbox_id = await store.submit_decision(trace_id, barrier_id, decision)
            return inbox_id, info

    inbox_id, info = _run_async(go)
    if as_json:
        out.print_json(
            {"trace_id": trace_id, "barrier_id": barrier_id, "decision": decision, "id": inbox_id}
        )
        return EXIT_OK
    kind = out.plain(decision)["type"]
    out.write_line(f"queued {kind} for {barrier_id} of run {trace_id} (decision {inbox_id})")
    if info.pending_barrier == barrier_id:
        report(
            "a process waiting on this run applies it within its poll interval; otherwise "
            f"'graphexec resume {trace_id} --graphs MODULE:ATTR' does",
            prefix="note",
        )
    return EXIT_OK


def make_decision(kind: str, *, reason: str | None = None, update: Any = None) -> Decision:
    if kind == "approve":
        return Approve()
    if kind == "reject":
        return Reject(reason)
    return Edit(update)


# -- driving ------------------------------------------------------------------------------------


async def _stream(run: Run, *, as_json: bool, wait: bool) -> bool:
    """Print the run's events until it ends (or waits, unless ``wait``); True if a SIGINT or
    SIGTERM stopped it.

    A signal stops the reading, not the process: leaving the run's block then checkpoints it
    (``"waiting"`` at a barrier, else ``"cancelled"``) and releases its lease, so it can be
    resumed at once instead of after ``lease_ttl``.
    """
    interrupted = False
    stop = anyio.CancelScope()

    async def watch() -> None:
        nonlocal interrupted
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                interrupted = True
                stop.cancel()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        with stop:
            async for event in run:
                if as_json:
                    out.print_json(event)
                else:
                    out.write_line(out.describe_event(event))
                if isinstance(event, ev.BarrierWaiting) and not wait:
                    break
        tg.cancel_scope.cancel()
    return interrupted


def _outcome(run: Run, *, as_json: bool, interrupted: bool) -> int:
    result = run.result
    status = result.status
    if interrupted:
        report(
            f"interrupted: run {result.trace_id} was checkpointed as {status}; continue it with "
            f"'graphexec resume {result.trace_id}'",
        )
        return EXIT_INTERRUPTED
    if status == "completed":
        return EXIT_OK
    if status == "waiting":
        if not as_json:
            barrier = run.handle.pending_barrier or "a barrier"
            report(
                f"run {result.trace_id} waits at {barrier}: decide with 'graphexec approve "
                f"{result.trace_id} {barrier}' (or reject, edit), then resume it",
                prefix="note",
            )
        return EXIT_OK
    error = result.error
    message = str(error) if error is not None else f"the run ended {status}"
    raise CliError(f"run {result.trace_id} {status}: {message}", EXIT_ERROR)


def cmd_resume(
    store_url: str,
    trace_id: str,
    *,
    graphs: Sequence[str],
    as_json: bool,
    wait: bool,
    on_graph_change: str,
) -> int:
    check_choice(on_graph_change, ("warn", "fail"), option="--on-graph-change")
    configure_logging()
    registry = _need_graphs(graphs)

    async def go() -> int:
        async with open_cli_store(store_url) as store:
            info = await _need_run(store, trace_id)
            graph = pick(registry, info.graph_name, trace_id=trace_id)
            ex = GraphExecutor(store=store)
            mode: Any = on_graph_change
            async with ex.resume_from(graph, trace_id, on_graph_change=mode) as run:
                interrupted = await _stream(run, as_json=as_json, wait=wait)
            return _outcome(run, as_json=as_json, interrupted=interrupted)

    return _run_async(go)


def cmd_fork(
    store_url: str,
    trace_id: str,
    seq: int,
    *,
    graphs: Sequence[str],
    updates: Sequence[str],
    new_trace_id: str | None,
    as_json: bool,
    wait: bool,
) -> int:
    configure_logging()
    registry = _need_graphs(graphs)
    update = parse_assignments(updates, option="--update")

    async def go() -> int:
        async with open_cli_store(store_url) as store:
            info = await _need_run(store, trace_id)
            graph: Graph = pick(registry, info.graph_name, trace_id=trace_id)
            ex = GraphExecutor(store=store)
            await _need_seq(ex, trace_id, seq)
            if new_trace_id is not None and await store.get_run(new_trace_id) is not None:
                raise CliError(
                    f"trace id {new_trace_id!r} is taken: choose another --trace-id",
                    EXIT_CONFLICT,
                )
            async with ex.fork(
                graph, trace_id, seq, update=update or None, new_trace_id=new_trace_id
            ) as run:
                interrupted = await _stream(run, as_json=as_json, wait=wait)
            return _outcome(run, as_json=as_json, interrupted=interrupted)

    return _run_async(go)


def cmd_rerun(
    store_url: str,
    trace_id: str,
    from_node: str,
    *,
    graphs: Sequence[str],
    updates: Sequence[str],
    dry_run: bool,
    new_trace_id: str | None,
    as_json: bool,
    wait: bool,
) -> int:
    configure_logging()
    registry = _need_graphs(graphs)
    update = parse_assignments(updates, option="--update") or None

    async def go() -> int:
        async with open_cli_store(store_url) as store:
            info = await _need_run(store, trace_id)
            graph: Graph = pick(registry, info.graph_name, trace_id=trace_id)
            if from_node not in graph.nodes:
                raise CliError(
                    f"graph {graph.name!r} has no node {from_node!r}; its nodes: "
                    f"{', '.join(graph.nodes)}",
                    EXIT_NOT_FOUND,
                )
            ex = GraphExecutor(store=store)
            plan = await ex.plan_rerun(graph, trace_id, from_node, update=update)
            if dry_run:
                if as_json:
                    out.print_json(plan)
                else:
                    out.write_line(plan.table())
                return EXIT_OK
            if new_trace_id is not None and await store.get_run(new_trace_id) is not None:
                raise CliError(
                    f"trace id {new_trace_id!r} is taken: choose another --trace-id",
                    EXIT_CONFLICT,
                )
            async with ex.rerun(
                graph, trace_id, from_node, update=update, plan=plan, new_trace_id=new_trace_id
            ) as run:
                interrupted = await _stream(run, as_json=as_json, wait=wait)
            return _outcome(run, as_json=as_json, interrupted=interrupted)

    return _run_async(go)


def _need_graphs(graphs: Sequence[str]) -> dict[str, Graph]:
    if not graphs:
        raise CliError(
            "this command runs graph code: pass --graphs module:attr (or set GRAPHEXEC_GRAPHS)"
        )
    return load_registry(graphs)


def _span(seqs: Sequence[int]) -> str:
    if not seqs:
        return "no checkpoints"
    return f"seqs {seqs[0]}..{seqs[-1]}" if len(seqs) > 1 else f"seq {seqs[0]}"


# -- housekeeping -------------------------------------------------------------------------------


def cmd_prune(
    store_url: str, *, older_than: str, statuses: Sequence[str], dry_run: bool, as_json: bool
) -> int:
    seconds = parse_duration(older_than)
    wanted = list(dict.fromkeys(statuses or ["completed"]))
    for status in wanted:
        check_choice(status, sorted(PRUNABLE_STATUSES), option="--status")
    cutoff = time.time() - seconds

    async def go() -> list[str]:
        async with open_cli_store(store_url) as store:
            if not dry_run:
                return await store.prune(older_than=cutoff, statuses=wanted)
            found = []
            for status in wanted:
                for run in await store.runs(status=status, limit=2**62):
                    if run.updated_at < cutoff:
                        found.append((run.updated_at, run.trace_id))
            return [trace for _, trace in sorted(found)]

    gone = _run_async(go)
    if as_json:
        out.print_json({"pruned": gone, "dry_run": dry_run})
        return EXIT_OK
    verb = "would prune" if dry_run else "pruned"
    out.write_line(f"{verb} {len(gone)} run{'' if len(gone) == 1 else 's'}")
    for trace in gone:
        out.write_line(f"  {trace}")
    return EXIT_OK
