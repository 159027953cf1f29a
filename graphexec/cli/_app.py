"""The typer application: commands, options and their help.

Only typer is imported here: each command imports its implementation (``_commands``, which
loads rich and the stores) when it runs, so ``graphexec --help`` costs typer and nothing else.
Help is click's plain format (``rich_markup_mode=None``): rich's help panels would double the
startup time of every ``--help``.
"""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ("app",)

app = typer.Typer(
    name="graphexec",
    help=(
        "Inspect and steer graphexec runs in a checkpoint store: list them, show their state "
        "and history, approve/reject/edit waiting barriers, resume, fork, cancel, prune, follow "
        "their events, serve them over HTTP.\n\n"
        "Exit codes: 0 ok, 1 graph error, 2 usage, 3 not found, 4 conflict, 130 interrupted."
    ),
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

Store = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        envvar="GRAPHEXEC_STORE",
        help="A SQLite file path or sqlite:///path URL.",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON objects instead of a table.")]
Graphs = Annotated[
    list[str],
    typer.Option(
        "--graphs",
        "-g",
        envvar="GRAPHEXEC_GRAPHS",
        help="module:attr naming a Graph, a list of graphs or a dict of them (repeatable).",
        show_default=False,
    ),
]
Trace = Annotated[str, typer.Argument(help="The run's trace id.", show_default=False)]
Barrier = Annotated[
    str, typer.Argument(help="The barrier id, e.g. approve#1 (see 'show').", show_default=False)
]
Wait = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="At a barrier, keep waiting for a decision from another process instead of "
        "stopping (the run stays resumable either way).",
    ),
]


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"graphexec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """graphexec: inspect and steer runs in a checkpoint store."""


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


@app.command()
def runs(
    store: Store,
    status: Annotated[
        str | None,
        typer.Option(help="Only runs with this status (running, waiting, completed, ...)."),
    ] = None,
    graph: Annotated[str | None, typer.Option(help="Only runs of this graph name.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 50,
    as_json: Json = False,
) -> None:
    """List runs, most recently updated first."""
    from ._commands import cmd_runs

    _exit(cmd_runs(store, status=status, graph=graph, limit=limit, as_json=as_json))


@app.command()
def show(
    trace_id: Trace,
    store: Store,
    seq: Annotated[
        int | None,
        typer.Option(help="The run as of this checkpoint (see 'history'); default: the latest."),
    ] = None,
    graphs: Graphs = [],  # noqa: B006 - typer's way to default a repeatable option
    as_json: Json = False,
) -> None:
    """Show a run: status, step, next node, the barrier it waits at, and its state.

    --graphs is needed only when the run uses custom reducers that have no registered name.
    """
    from ._commands import cmd_show

    _exit(cmd_show(store, trace_id, seq=seq, graphs=graphs, as_json=as_json))


@app.command()
def history(
    trace_id: Trace,
    store: Store,
    limit: Annotated[
        int | None, typer.Option(help="Only the newest N checkpoints (of those before --before).")
    ] = None,
    before: Annotated[
        int | None, typer.Option(help="Only checkpoints with a smaller seq (to page backwards).")
    ] = None,
    values: Annotated[bool, typer.Option(help="Add the state at each checkpoint.")] = False,
    graphs: Graphs = [],  # noqa: B006 - typer's way to default a repeatable option
    as_json: Json = False,
) -> None:
    """List a run's checkpoints, oldest first."""
    from ._commands import cmd_history

    _exit(
        cmd_history(
            store,
            trace_id,
            limit=limit,
            before=before,
            values=values,
            graphs=graphs,
            as_json=as_json,
        )
    )


@app.command()
def approve(trace_id: Trace, barrier_id: Barrier, store: Store, as_json: Json = False) -> None:
    """Approve a waiting (or upcoming) barrier of a run."""
    from ._commands import cmd_decide, make_decision

    _exit(cmd_decide(store, trace_id, barrier_id, make_decision("approve"), as_json=as_json))


@app.command()
def reject(
    trace_id: Trace,
    barrier_id: Barrier,
    store: Store,
    reason: Annotated[
        str | None, typer.Option(help="Why; recorded in the run's state.", show_default=False)
    ] = None,
    as_json: Json = False,
) -> None:
    """Reject a waiting (or upcoming) barrier of a run."""
    from ._commands import cmd_decide, make_decision

    decision = make_decision("reject", reason=reason)
    _exit(cmd_decide(store, trace_id, barrier_id, decision, as_json=as_json))


@app.command()
def edit(
    trace_id: Trace,
    barrier_id: Barrier,
    store: Store,
    assignments: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="key=<json>: a state update applied through the reducers (repeatable).",
            show_default=False,
        ),
    ],
    as_json: Json = False,
) -> None:
    """Approve a barrier with changes to the state (an Edit decision)."""
    from ._commands import cmd_decide, make_decision
    from ._inputs import parse_assignments

    update = parse_assignments(assignments, option="--set")
    decision = make_decision("edit", update=update)
    _exit(cmd_decide(store, trace_id, barrier_id, decision, as_json=as_json))


@app.command()
def resume(
    trace_id: Trace,
    store: Store,
    graphs: Graphs = [],  # noqa: B006 - typer's way to default a repeatable option
    wait: Wait = False,
    on_graph_change: Annotated[
        str,
        typer.Option(help="warn or fail when the graph changed since the run was checkpointed."),
    ] = "warn",
    as_json: Json = False,
) -> None:
    """Resume a run by its trace id, printing its events as lines (JSON Lines with --json).

    A run waiting at a barrier whose decision is in the store goes on; without a decision it
    stops again at the barrier (exit 0) unless --wait.
    """
    from ._commands import cmd_resume

    _exit(
        cmd_resume(
            store,
            trace_id,
            graphs=graphs,
            as_json=as_json,
            wait=wait,
            on_graph_change=on_graph_change,
        )
    )


@app.command()
def fork(
    trace_id: Trace,
    seq: Annotated[int, typer.Argument(help="The checkpoint to start from (see 'history').")],
    store: Store,
    graphs: Graphs = [],  # noqa: B006 - typer's way to default a repeatable option
    updates: Annotated[
        list[str],
        typer.Option(
            "--update",
            help="key=<json>: applied through the reducers before the fork runs (repeatable).",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer's way to default a repeatable option
    new_trace_id: Annotated[
        str | None,
        typer.Option("--trace-id", help="The new run's trace id (default: a random one)."),
    ] = None,
    wait: Wait = False,
    as_json: Json = False,
) -> None:
    """Start a new run from checkpoint SEQ of a run (the original is untouched)."""
    from ._commands import cmd_fork

    _exit(
        cmd_fork(
            store,
            trace_id,
            seq,
            graphs=graphs,
            updates=updates,
            new_trace_id=new_trace_id,
            as_json=as_json,
            wait=wait,
        )
    )


@app.command()
def rerun(
    trace_id: Trace,
    from_node: Annotated[str, typer.Argument(help="The node to run again (the target).")],
    store: Store,
    graphs: Graphs = [],  # noqa: B006 - typer's way to default a repeatable option
    updates: Annotated[
        list[str],
        typer.Option(
            "--update",
            help="key=<json>: applied before the target runs (repeatable).",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer's way to default a repeatable option
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan (what runs, what is reused, and why)."),
    ] = False,
    new_trace_id: Annotated[
        str | None,
        typer.Option("--trace-id", help="The re-run's trace id (default: a random one)."),
    ] = None,
    wait: Wait = False,
    as_json: Json = False,
) -> None:
    """Run a trace again from FROM_NODE as a new trace, reusing every node execution whose code
    and inputs are unchanged; --dry-run prints the plan and writes nothing."""
    from ._commands import cmd_rerun

    _exit(
        cmd_rerun(
            store,
            trace_id,
            from_node,
            graphs=graphs,
            updates=updates,
            dry_run=dry_run,
            new_trace_id=new_trace_id,
            as_json=as_json,
            wait=wait,
        )
    )


@app.command()
def mermaid(
    target: Annotated[
        str, typer.Argument(help="module:attr naming a graph (or several).", show_default=False)
    ],
    graph: Annotated[
        str | None, typer.Option(help="Which graph, when the target holds several.")
    ] = None,
    as_json: Json = False,
) -> None:
    """Print a graph as a Mermaid flowchart."""
    from ._commands import cmd_mermaid

    _exit(cmd_mermaid(target, graph_name=graph, as_json=as_json))


@app.command()
def prune(
    store: Store,
    older_than: Annotated[
        str,
        typer.Option(
            help="Only runs last updated longer ago than this: 90 (seconds), 45s, 15m, 12h, "
            "7d, 2w, 1d12h.",
            show_default=False,
        ),
    ],
    statuses: Annotated[
        list[str],
        typer.Option(
            "--status",
            help="completed (default), failed or cancelled (repeatable); waiting and running "
            "runs are never pruned.",
            show_default=False,
        ),
    ] = [],  # noqa: B006 - typer's way to default a repeatable option
    dry_run: Annotated[bool, typer.Option(help="List what would go; delete nothing.")] = False,
    as_json: Json = False,
) -> None:
    """Delete old finished runs with their checkpoints and decisions."""
    from ._commands import cmd_prune

    _exit(
        cmd_prune(store, older_than=older_than, statuses=statuses, dry_run=dry_run, as_json=as_json)
    )


# -- commands that need the run manager (_live.py) ----------------------------------------------


@app.command()
def events(
    trace_id: Trace,
    store: Store,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Then print the live events until the run stops (Ctrl-C ends)."
        ),
    ] = False,
    after: Annotated[
        int | None,
        typer.Option(help="Only events after this event id (the first column, or event_id)."),
    ] = None,
    as_json: Json = False,
) -> None:
    """Print a run's recorded events (every turn), with their event ids."""
    from ._live import cmd_events

    _exit(cmd_events(store, trace_id, follow=follow, after=after, as_json=as_json))


@app.command()
def cancel(trace_id: Trace, store: Store, as_json: Json = False) -> None:
    """Cancel a run: the process driving it stops it at its next poll; a run no one drives
    (waiting, interrupted, failed) is recorded cancelled at once."""
    from ._live import cmd_cancel

    _exit(cmd_cancel(store, trace_id, as_json=as_json))


@app.command()
def serve(
    graphs: Annotated[
        list[str],
        typer.Argument(
            help="module:attr naming a Graph, a list of graphs or a dict of them.",
            show_default=False,
        ),
    ],
    store: Annotated[
        str,
        typer.Option(
            "--store",
            "-s",
            envvar="GRAPHEXEC_STORE",
            help="A SQLite file path or sqlite:///path URL (created if missing).",
        ),
    ] = "graphexec.db",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one).")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="GRAPHEXEC_TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on the API (the page asks for it).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the graphs' runs over HTTP, with the chat page at / (extra 'web')."""
    from ._live import cmd_serve

    _exit(cmd_serve(graphs, store, host=host, port=port, token=token))


@app.command()
def worker(
    store: Annotated[
        str,
        typer.Option(
            "--store",
            "-s",
            envvar="GRAPHEXEC_STORE",
            help="A SQLite file path or sqlite:///path URL (created if missing), or a "
            "postgresql:// URL.",
            show_default=False,
        ),
    ],
    graphs: Graphs,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Runs driven at once.")
    ] = 8,
    poll_interval: Annotated[
        float,
        typer.Option(
            "--poll-interval", help="Seconds between claim passes when no wake-up hint comes."
        ),
    ] = 1.0,
    lease_ttl: Annotated[
        float,
        typer.Option(
            "--lease-ttl",
            help="Seconds a run's lease outlives its last renewal (how long a vanished "
            "worker on another host blocks its runs).",
        ),
    ] = 30.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line on stdout per run event.")
    ] = False,
) -> None:
    """Claim and drive the runs of the graphs that need a driver (queued, interrupted, left by
    a dead worker, decided) until SIGINT/SIGTERM, which hands the runs back (exit 0)."""
    from ._worker import cmd_worker

    _exit(
        cmd_worker(
            graphs,
            store,
            concurrency=concurrency,
            poll_interval=poll_interval,
            lease_ttl=lease_ttl,
            as_json=as_json,
        )
    )
