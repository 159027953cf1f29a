"""A process for test_ownership.py: ``python owner_worker.py <db> <trace_id> <lease_ttl>``.

Drives ``a -> hold -> b`` on the SQLite file ``<db>`` with a checkpoint after every step. The
``hold`` node prints ``HOLDING`` and waits until the file ``<db>.go`` exists. Prints
``RESULT <json>`` (status, error type, state) when the run ends.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

import graphexec as gx

HoldFn = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


async def _a(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"log": ["a"]}


async def _b(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"log": ["b"]}


async def no_hold(state: Mapping[str, Any]) -> dict[str, Any]:
    """The hold node of a driver that does not wait (the test's own)."""
    return {"log": ["hold"]}


def hold_graph(hold: HoldFn = no_hold) -> gx.Graph:
    """``a -> hold -> b``; the hash does not depend on the node functions."""
    return (
        gx.GraphBuilder("hold")
        .node("a", _a)
        .node("hold", hold)
        .node("b", _b)
        .edge("a", "hold")
        .edge("hold", "b")
        .reducer("log", gx.reducers.append)
        .start("a")
        .end("b")
        .build()
    )


async def main(db: str, trace_id: str, ttl: float) -> None:
    go = f"{db}.go"

    async def hold(state: Mapping[str, Any]) -> dict[str, Any]:
        print("HOLDING", os.getpid(), flush=True)
        while not await anyio.Path(go).exists():  # noqa: ASYNC110 - another process creates it
            await anyio.sleep(0.01)
        return {"log": ["hold"]}

    async with gx.SQLiteStore(db) as store:
        ex = gx.GraphExecutor(
            store=store, policy=gx.CheckpointPolicy(every_step=True), lease_ttl=ttl
        )
        async with ex.execute_stream(hold_graph(hold), trace_id=trace_id) as run:
            async for _ in run:
                pass
        result = run.result
        error = type(result.error).__name__ if result.error is not None else None
        print("RESULT", json.dumps({"status": result.status, "error": error}), flush=True)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
