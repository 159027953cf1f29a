"""Process A for test_pg_hints.py: drives a run on Postgres while the test tails it.

``python pg_events_worker.py <dsn> <schema> <trace_id> <go file>``: runs ``wait -> n1 .. n5``
on a PostgresStore. Node ``wait`` prints ``STARTED`` and waits until ``<go file>`` exists; each
``n<i>`` sleeps 0.2 s and emits one custom event, so the run's later events are committed one
by one over about a second, after the test has started tailing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx

STEPS = 5


def graph(go: str) -> gx.Graph:
    """``wait -> n1 -> ... -> n5``."""

    async def wait(state: Mapping[str, Any]) -> dict[str, Any]:
        print("STARTED", flush=True)
        # Another process creates the file: there is no event to wait on, so poll for it.
        while not await anyio.Path(go).exists():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return {"n": 0}

    def step(i: int) -> Any:
        async def node(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
            await anyio.sleep(0.2)
            await ctx.emit({"step": i})
            return {"n": state["n"] + 1}

        return node

    builder = gx.GraphBuilder("ticker").node("wait", wait)
    previous = "wait"
    for i in range(1, STEPS + 1):
        builder = builder.node(f"n{i}", step(i)).edge(previous, f"n{i}")
        previous = f"n{i}"
    return builder.start("wait").end(previous).build()


async def main(dsn: str, schema: str, trace_id: str, go: str) -> None:
    async with gx.PostgresStore(dsn, schema=schema, max_size=2) as store:
        ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
        result = await ex.execute(graph(go), {"n": 0}, trace_id=trace_id)
        print("DONE", result.status, flush=True)


if __name__ == "__main__":
    anyio.run(functools.partial(main, *sys.argv[1:5]))
