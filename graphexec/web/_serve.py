"""Serving the app: an executor with a task group, recovery, uvicorn, and a clean shutdown.

``serve()`` is what ``graphexec serve`` and ``examples/chat`` run. It enters the executor (its
runs live in its task group), resumes what the store says needs a driver (``ex.recover()``),
then serves the app with uvicorn until SIGINT or SIGTERM. Leaving stops the server first (open
event streams are told to end), then the executor, which checkpoints its runs as
``"interrupted"`` (a run waiting at a barrier stays ``"waiting"``). While serving, recovery runs
again at every "work" hint (a run queued or handed back, a decision for a waiting run: in this
process, or from any process over Postgres's LISTEN/NOTIFY) and at least every
``recover_interval`` seconds, so a decision made in another process (the command line, another
server) for a run waiting here is picked up.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING

import anyio
import uvicorn

from .._executor import GraphExecutor
from .._log import get_logger
from ..checkpoint._hints import WORK
from ._app import create_app

if TYPE_CHECKING:
    from .._graph import Graph
    from ..checkpoint._base import CheckpointStore

__all__ = ("serve",)


class _Server(uvicorn.Server):
    """uvicorn's server, with signals handled by ``serve()`` (anyio) instead of replaced
    process-wide and raised again after shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(
    graphs: Iterable[Graph],
    *,
    store: CheckpointStore,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    recover_interval: float = 2.0,
    on_ready: Callable[[str], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve ``graphs`` from ``store`` over HTTP until SIGINT or SIGTERM.

    Args:
        graphs: the graphs ``POST /runs`` may start and recovery resumes.
        store: the checkpoint store (runs, decisions and events live there).
        host, port: where to listen (port 0: any free port, reported to ``on_ready``).
        token: require ``Authorization: Bearer <token>`` on the API.
        recover_interval: the longest wait between two ``ex.recover()`` passes while serving
            (a "work" hint starts one at once).
        on_ready: called with the base URL once the server accepts connections.
        log_level: uvicorn's log level.
    """
    log = get_logger()
    async with GraphExecutor(store=store, graphs=graphs) as ex:
        resumed = await ex.recover()
        if resumed:
            log.info("runs recovered", trace_ids=resumed)
        app = create_app(ex, token=token)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            lifespan="off",
            timeout_graceful_shutdown=3,
        )
        server = _Server(config)
        async with anyio.create_task_group() as tg:

            async def on_signals() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for sig in signals:
                        # uvicorn's own handler (which sse-starlette wraps to end open streams)
                        server.handle_exit(sig, None)

            async def recovering() -> None:
                while True:
                    # A "work" hint (a decision made anywhere, a run queued or handed back:
                    # in process, or over LISTEN/NOTIFY on Postgres) ends the wait at once.
                    await store.wait_for(WORK, recover_interval)
                    try:
                        await ex.recover()
                    except Exception as exc:  # noqa: BLE001 - a busy store: try again next time
                        log.warning("recover pass failed", error=repr(exc))

            async def announce() -> None:
                while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event
                    await anyio.sleep(0.01)
                bound = port
                for s in server.servers:
                    for sock in s.sockets:
                        bound = sock.getsockname()[1]
                if on_ready is not None:
                    on_ready(f"http://{host}:{bound}")

            tg.start_soon(on_signals)
            tg.start_soon(recovering)
            tg.start_soon(announce)
            await server.serve()
            tg.cancel_scope.cancel()
