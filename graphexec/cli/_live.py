"""The commands that need the run manager: ``events`` (the event log, ``--follow`` to tail it),
``cancel`` (from any process) and ``serve`` (the web server, extra ``web``).

Like ``_commands``, each ``cmd_*`` takes the parsed options and returns the exit code; errors
leave as :class:`CliError` or graphexec errors, which the entry point reports in one line.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence

import anyio

from .._eventcodec import read_events
from .._events import GraphEvent
from .._executor import GraphExecutor
from . import _output as out
from ._commands import _need_graphs, _need_run, _run_async, open_cli_store
from ._exit import EXIT_INTERRUPTED, EXIT_OK, CliError

__all__ = ("cmd_cancel", "cmd_events", "cmd_serve")


def _print(event: GraphEvent, as_json: bool) -> None:
    if as_json:
        out.print_json(event)
    else:
        out.write_line(f"{event.event_id:>14}  {out.describe_event(event)}")


def cmd_events(
    store_url: str, trace_id: str, *, follow: bool, after: int | None, as_json: bool
) -> int:
    """Print a trace's recorded events after ``after``; with ``follow``, then its live ones
    until the run stops (or SIGINT/SIGTERM: exit 130)."""
    if after is not None and after < 0:
        raise CliError(f"bad --after {after}: an event id is >= 0")

    async def go() -> int:
        async with open_cli_store(store_url) as store:
            await _need_run(store, trace_id)
            if not follow:
                cursor = after or 0
                for event in await read_events(store, trace_id, cursor):
                    _print(event, as_json)
                return EXIT_OK
            ex = GraphExecutor(store=store)
            interrupted = False
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal interrupted
                    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                        async for _ in signals:
                            interrupted = True
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch)
                async for event in ex.events(trace_id, after=after):
                    _print(event, as_json)
                tg.cancel_scope.cancel()
            return EXIT_INTERRUPTED if interrupted else EXIT_OK

    return _run_async(go)


def cmd_cancel(store_url: str, trace_id: str, *, as_json: bool) -> int:
    """Cancel a run from this process: a request its driver takes at its next poll, or, when no
    one drives it, the run recorded cancelled at once."""

    async def go() -> str:
        async with open_cli_store(store_url) as store:
            await _need_run(store, trace_id)
            await GraphExecutor(store=store).cancel(trace_id)
            info = await _need_run(store, trace_id)
            return "cancelled" if info.status == "cancelled" else "requested"

    outcome = _run_async(go)
    if as_json:
        out.print_json({"trace_id": trace_id, "cancel": outcome})
    elif outcome == "cancelled":
        out.write_line(f"run {trace_id} cancelled")
    else:
        out.write_line(
            f"cancel requested for run {trace_id}: the process driving it stops it at its next poll"
        )
    return EXIT_OK


def cmd_serve(
    targets: Sequence[str],
    store_url: str,
    *,
    host: str,
    port: int,
    token: str | None,
) -> int:
    """Serve the graphs' runs over HTTP with the chat page until SIGINT or SIGTERM."""
    try:
        from ..web import serve
    except ImportError as exc:
        raise CliError(
            f"graphexec serve needs the web extra: pip install 'graphexec[web]' ({exc})"
        ) from None
    registry = _need_graphs(targets)
    store = open_cli_store(store_url, create=True)

    def ready(url: str) -> None:
        out.write_line(f"serving {', '.join(sorted(registry))} on {url}/ (store {store_url})")

    async def go() -> None:
        async with store:
            await serve(
                list(registry.values()),
                store=store,
                host=host,
                port=port,
                token=token,
                on_ready=ready,
            )

    _run_async(go)
    return EXIT_OK
