"""A worker process for test_concurrency: runs several traces into one shared SQLite file."""

from __future__ import annotations

import sys
from functools import partial

import anyio
import anyio.lowlevel

import graphexec as gx


async def add(state: gx.typing.State) -> dict[str, list[int]]:
    await anyio.lowlevel.checkpoint()
    return {"log": [len(state["log"])]}


def chain(n: int) -> gx.Graph:
    b = gx.GraphBuilder("multi").reducer("log", gx.reducers.append)
    for i in range(n):
        b.node(f"n{i}", add)
        if i:
            b.edge(f"n{i - 1}", f"n{i}")
    return b.start("n0").end(f"n{n - 1}").build()


async def main(db: str, prefix: str, runs: int, steps: int) -> None:
    graph = chain(steps)
    async with gx.SQLiteStore(db) as store:
        ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
        async with anyio.create_task_group() as tg:
            for r in range(runs):
                tg.start_soon(partial(ex.execute, graph, {"log": []}, trace_id=f"{prefix}-{r}"))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
