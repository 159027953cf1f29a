"""``graphexec worker``: a worker process on a store (``gx.Worker``) until SIGINT or SIGTERM.

It claims the runs of the graphs named by ``--graphs`` that need a driver, drives up to
``--concurrency`` of them at once, and writes a line per run claimed and per drive ended to
stderr (``--json``: one JSON object per line on stdout instead). SIGINT or SIGTERM stops it
gracefully: no more claims, its runs handed back as ``"interrupted"`` (another worker takes
them at once), exit 0.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

import anyio
from anyio.abc import TaskStatus

from ..worker import Worker
from . import _output as out
from ._commands import _need_graphs, _run_async, open_cli_store
from ._exit import EXIT_OK, CliError

__all__ = ("cmd_worker",)


def _say(line: str) -> None:
    sys.stderr.write(f"graphexec worker: {line}\n")
    sys.stderr.flush()


def cmd_worker(
    targets: Sequence[str],
    store_url: str,
    *,
    concurrency: int,
    poll_interval: float,
    lease_ttl: float,
    as_json: bool,
) -> int:
    """Run a worker until SIGINT/SIGTERM (graceful: exit 0)."""
    if concurrency < 1:
        raise CliError(f"bad --concurrency {concurrency}: at least 1 run at a time")
    if not poll_interval > 0:
        raise CliError(f"bad --poll-interval {poll_interval}: seconds > 0")
    if not lease_ttl > 0:
        raise CliError(f"bad --lease-ttl {lease_ttl}: seconds > 0")
    registry = _need_graphs(targets)
    store = open_cli_store(store_url, create=True)

    def on_run(what: str, trace_id: str, status: str) -> None:
        if as_json:
            out.print_json({"event": what, "trace_id": trace_id, "status": status})
        elif what == "claimed":
            _say(f"claimed {trace_id} ({status})")
        else:
            _say(f"{status} {trace_id}")

    worker = Worker(
        store,
        list(registry.values()),
        concurrency=concurrency,
        poll_interval=poll_interval,
        lease_ttl=lease_ttl,
        on_run=on_run,
    )

    async def go() -> None:
        async with store, anyio.create_task_group() as tg:

            async def watch(*, task_status: TaskStatus[None]) -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    task_status.started()  # from here a signal is a graceful stop
                    async for signum in signals:
                        _say(f"{signal.Signals(signum).name}: stopping, handing runs back")
                        worker.stop()

            await tg.start(watch)
            if not as_json:
                _say(
                    f"started: graphs {', '.join(worker.graph_names)}, concurrency "
                    f"{concurrency}, store {store_url}"
                )
            await worker.run()
            tg.cancel_scope.cancel()
        stats = worker.stats
        if as_json:
            out.print_json({"event": "stopped", **out.plain(stats)})
        else:
            _say(
                f"stopped: {stats.claimed} claimed, {stats.completed} completed, "
                f"{stats.failed} failed, {stats.waiting} left waiting, "
                f"{stats.interrupted} handed back"
            )

    _run_async(go)
    return EXIT_OK
