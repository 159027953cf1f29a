"""Graphs for the command-line tests, importable as ``--graphs cli_graphs:graphs``.

``seed(path)`` fills a SQLite file with one run in each state the tests need:
``wait-1`` waits at barrier ``approval#1``, ``done-1`` completed, ``fail-1`` failed at node
``boom`` (resumable: it fails there again).
"""

from __future__ import annotations

import sys
from typing import Any

import anyio

import graphexec as gx
from graphexec.checkpoint import open_store


async def assess(state: dict[str, Any]) -> dict[str, Any]:
    return {"amount": 120.0, "log": ["assessed"]}


async def refund(state: dict[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
    await ctx.emit({"token": "refunding"})
    return {"refunded": state["amount"], "log": ["refunded"]}


async def decline(state: dict[str, Any]) -> dict[str, Any]:
    reason = (state.get("approval") or {}).get("reason")
    return {"refunded": 0.0, "log": [f"declined: {reason}"]}


refund_graph = (
    gx.GraphBuilder("refund")
    .node("assess", assess)
    .barrier("approval", prompt=lambda s: {"amount": s["amount"]})
    .node("refund", refund)
    .node("decline", decline)
    .edge("assess", "approval")
    .edge("approval", "refund", when=lambda s: s["approval"]["decision"] == "approve")
    .edge("approval", "decline")
    .reducer("log", gx.reducers.append)
    .start("assess")
    .end("refund", "decline")
    .build()
)


async def first(state: dict[str, Any]) -> dict[str, Any]:
    return {"n": state.get("n", 0) + 1}


async def second(state: dict[str, Any]) -> dict[str, Any]:
    return {"n": state["n"] * 10}


simple_graph = (
    gx.GraphBuilder("simple")
    .node("first", first)
    .node("second", second)
    .edge("first", "second")
    .start("first")
    .end("second")
    .build()
)


async def boom(state: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("the flaky service is down")


failing_graph = (
    gx.GraphBuilder("failing")
    .node("first", first)
    .node("boom", boom)
    .edge("first", "boom")
    .start("first")
    .end("boom")
    .build()
)

graphs = [refund_graph, simple_graph, failing_graph]
by_name = {g.name: g for g in graphs}


async def seed(path: str) -> None:
    """Create the runs ``wait-1``, ``done-1`` and ``fail-1`` in the SQLite file ``path`` (or
    the store a ``postgresql://`` URL names)."""
    store = open_store(path) if "://" in path else gx.SQLiteStore(path)
    async with store:
        ex = gx.GraphExecutor(store=store)
        async with ex.execute_stream(refund_graph, {"ticket": "t"}, trace_id="wait-1") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        await ex.execute(simple_graph, {"n": 1}, trace_id="done-1")
        try:
            await ex.execute(failing_graph, {}, trace_id="fail-1")
        except gx.NodeExecutionFailed:
            pass


if __name__ == "__main__":
    anyio.run(seed, sys.argv[1])
