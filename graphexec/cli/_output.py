"""How the command line prints: plain JSON objects (``--json``), rich tables, event lines."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, assert_never

import msgspec

from .. import _events as ev
from .._executor import RunState
from ..checkpoint import CheckpointSummary, RunInfo

if TYPE_CHECKING:
    from rich.console import Console

__all__ = (
    "describe_event",
    "plain",
    "print_history",
    "print_json",
    "print_runs",
    "print_state",
    "write_line",
)

_encoder = msgspec.json.Encoder()


def plain(value: Any) -> Any:
    """``value`` with every msgspec Struct turned into an object (tag first, if tagged).

    Some records are stored as arrays (``array_like``) to save bytes; on the command line's
    JSON they are objects, so scripts read fields by name.
    """
    if isinstance(value, msgspec.Struct):
        config = value.__struct_config__
        out: dict[str, Any] = {}
        if config.tag is not None:
            out[config.tag_field or "type"] = config.tag
        for field in msgspec.structs.fields(value):
            item = getattr(value, field.name)
            if config.omit_defaults and _is_default(field, item):
                continue
            out[field.encode_name] = plain(item)
        return out
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _is_default(field: msgspec.structs.FieldInfo, item: Any) -> bool:
    if field.default is not msgspec.NODEFAULT:
        return bool(item == field.default)
    if field.default_factory is not msgspec.NODEFAULT:
        return bool(item == field.default_factory())
    return False


def print_json(value: Any) -> None:
    """One JSON document on stdout (a line: JSON Lines when called per item)."""
    write_line(_encoder.encode(plain(value)).decode())


def write_line(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _console() -> Console:
    from rich.console import Console

    # Piped output keeps whole lines (a table cut at 80 columns is no use to grep).
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def _dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def print_runs(runs: Sequence[RunInfo]) -> None:
    """Runs as a table."""
    from rich.table import Table

    if not runs:
        write_line("no runs")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("TRACE", "GRAPH", "STATUS", "STEP", "NEXT", "WAITING AT", "UPDATED"):
        table.add_column(column, no_wrap=True)
    forked = any(r.parent is not None for r in runs)
    if forked:
        table.add_column("FROM", no_wrap=True)
    for r in runs:
        row = [
            r.trace_id,
            r.graph_name,
            r.status,
            str(r.step),
            _dash(r.next_node),
            _dash(r.pending_barrier),
            _when(r.updated_at),
        ]
        if forked:
            row.append(
                f"{r.parent.kind} of {r.parent.trace_id}@{r.parent.seq}" if r.parent else "-"
            )
        table.add_row(*row)
    _console().print(table)


def print_state(state: RunState) -> None:
    """A run's status, position and state."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("trace", state.trace_id)
    grid.add_row("graph", f"{state.graph_name} (hash {state.graph_hash[:12]})")
    grid.add_row("status", state.status)
    grid.add_row("step", str(state.step))
    grid.add_row("next node", _dash(state.next_node))
    pending = state.pending_barrier
    if pending is not None:
        deadline = f", default action at {_when(pending.deadline)}" if pending.deadline else ""
        grid.add_row("waiting at", f"{pending.barrier_id} (barrier {pending.node}{deadline})")
        if pending.prompt is not None:
            grid.add_row("prompt", _encoder.encode(plain(pending.prompt)).decode())
    if state.error is not None:
        where = f" (node {state.error.node})" if state.error.node else ""
        grid.add_row("error", f"{state.error.type}: {state.error.message}{where}")
    if state.parent is not None:
        label = "re-run of" if state.parent.kind == "rerun" else "forked from"
        grid.add_row(label, f"{state.parent.trace_id} at seq {state.parent.seq}")
    grid.add_row("checkpoint", f"seq {state.seq}, {_when(state.updated_at)}")
    console = _console()
    console.print(grid)
    console.print("[bold]state[/bold]")
    console.print_json(_encoder.encode(plain(state.state)).decode(), indent=2)


def print_history(
    trace_id: str, rows: Sequence[CheckpointSummary], *, values: bool = False
) -> None:
    """A run's checkpoints as a table."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False, title_justify="left")
    for column in ("SEQ", "KIND", "STEP", "TRIGGER", "STATUS", "NEXT", "BYTES", "AT"):
        justify: Any = "right" if column in ("SEQ", "STEP", "BYTES") else "left"
        table.add_column(column, no_wrap=True, justify=justify)
    if values:
        table.add_column("STATE", no_wrap=True)
    for r in rows:
        extra = [_compact(r.state, 200)] if values else []
        table.add_row(
            str(r.seq),
            r.kind,
            str(r.step),
            r.trigger,
            r.status,
            _dash(r.next_node),
            str(r.bytes),
            _when(r.created_at),
            *extra,
        )
    _console().print(table)


def _compact(value: Any, limit: int = 120) -> str:
    text = _encoder.encode(plain(value)).decode()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_event(event: ev.GraphEvent) -> str:
    """One human-readable line for an event (``--json`` prints the event itself instead)."""
    head = f"step {event.step:<4} {type(event).__name__:<17}"
    match event:
        case ev.GraphStart():
            how = "resumed" if event.resumed else "started"
            where = f" at {event.node}" if event.node else ""
            origin = f" (fork of {event.parent})" if event.parent else ""
            return f"{head} {event.graph} {how}{where}{origin} [{event.trace_id}]"
        case ev.NodeStart():
            return f"{head} {event.node} ({event.kind})"
        case ev.NodeEnd():
            ok = "ok" if event.ok else "FAILED"
            then = f" -> {event.next_node}" if event.next_node else ""
            return f"{head} {event.node} {ok} in {event.duration * 1000:.1f} ms{then}"
        case ev.StateChanged():
            return f"{head} {event.node}: {event.key} <- {_compact(event.delta)}"
        case ev.ParallelStarted():
            return f"{head} {event.node}: {', '.join(event.branches)}"
        case ev.BranchCompleted():
            ok = "ok" if event.ok else f"FAILED ({event.error})"
            return f"{head} {event.node}[{event.branch}] {ok} in {event.duration * 1000:.1f} ms"
        case ev.ParallelCompleted():
            failed = f", failed: {', '.join(event.failed)}" if event.failed else ""
            return f"{head} {event.node} {'ok' if event.ok else 'FAILED'}{failed}"
        case ev.Custom():
            branch = f"[{event.branch}]" if event.branch else ""
            return f"{head} {event.node}{branch}: {_compact(event.data)}"
        case ev.BarrierWaiting():
            prompt = f": {_compact(event.prompt)}" if event.prompt is not None else ""
            return f"{head} {event.barrier_id}{prompt}"
        case ev.BarrierResolved():
            reason = f" ({event.reason})" if event.reason else ""
            edited = " with edits" if event.edited else ""
            return f"{head} {event.barrier_id}: {event.decision}{edited}{reason} by {event.by}"
        case ev.CheckpointSaved():
            return f"{head} seq {event.seq} ({event.kind}, {event.bytes} B, {event.trigger})"
        case ev.ObservedError():
            return f"{head} {event.node}: {event.error.type}: {event.error.message}"
        case ev.NodeRetry():
            branch = f"[{event.branch}]" if event.branch else ""
            return (
                f"{head} {event.node}{branch} attempt {event.attempt} failed "
                f"({event.error.type}: {event.error.message}); again in {event.wait:.2f} s"
            )
        case ev.CircuitChanged():
            until = f" until {_when(event.until)}" if event.until else ""
            return f"{head} {event.node}: {event.state} after {event.failures} failures{until}"
        case ev.NodeInvalidated():
            return (
                f"{head} {event.node}: fingerprint {event.old_fingerprint} -> "
                f"{event.new_fingerprint}"
            )
        case ev.GraphComplete():
            return f"{head} completed in {event.steps} steps, {event.duration:.3f} s"
        case ev.GraphFailed():
            where = f" at {event.error.node}" if event.error.node else ""
            return f"{head} {event.status}{where}: {event.error.type}: {event.error.message}"
        case ev.GraphInterrupted():
            return f"{head} interrupted by a shutdown at step {event.step}: resumable"
    assert_never(event)
