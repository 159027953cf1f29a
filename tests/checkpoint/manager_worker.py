"""Process A for test_run_manager_processes.py: ``python manager_worker.py <db> <trace_id> <mode>``.

Starts a run with ``ex.start`` inside ``async with GraphExecutor(...)`` on the SQLite file
``<db>`` and consumes it with its own ``ex.events`` (the in-process tail), printing every event
as ``EVENT <json>``; ``WAITING <barrier_id>`` at the barrier, ``SLOW`` when node ``slow``
starts. Mode ``hang``: node ``slow`` never returns (the test kills the process there); mode
``run``: it returns at once. Nodes ``charge`` and ``send`` have side effects: each appends its
name to ``<db>.side`` (fsynced) so the test counts executions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec

import graphexec as gx

LEASE_TTL = 3600.0  # an hour: a killed A is found dead (same host), not waited for
"""Short: until dead-owner detection lands, recovery waits for a killed owner's lease to expire."""


def _side(path: str, name: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())


def graph(side: str, *, hang: bool = False) -> gx.Graph:
    """``prep -> charge (side effects) -> slow -> approve (barrier) -> send (side effects)``."""

    async def prep(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"amount": 42}

    async def charge(state: Mapping[str, Any], ctx: gx.NodeContext) -> dict[str, Any]:
        await ctx.emit({"token": "charging"})
        _side(side, "charge")
        return {"charged": True}

    async def slow(state: Mapping[str, Any]) -> dict[str, Any]:
        if hang:
            await anyio.sleep_forever()
        return {"slow": True}

    async def send(state: Mapping[str, Any]) -> dict[str, Any]:
        _side(side, "send")
        return {"sent": True}

    return (
        gx.GraphBuilder("refund")
        .node("prep", prep)
        .node("charge", charge, side_effects=True)
        .node("slow", slow)
        .barrier("approve", prompt=lambda s: {"amount": s["amount"]})
        .node("send", send, side_effects=True)
        .edge("prep", "charge")
        .edge("charge", "slow")
        .edge("slow", "approve")
        .edge("approve", "send")
        .start("prep")
        .end("send")
        .build()
    )


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def main(db: str, trace_id: str, mode: str) -> None:
    g = graph(f"{db}.side", hang=mode == "hang")
    async with (
        gx.SQLiteStore(db) as store,
        gx.GraphExecutor(
            store=store, graphs=[g], lease_ttl=LEASE_TTL, decision_poll_interval=0.05
        ) as ex,
    ):
        await ex.start(g, {}, trace_id=trace_id)
        say("STARTED")
        async for event in ex.events(trace_id):
            say("EVENT", msgspec.json.encode(event).decode())
            if isinstance(event, gx.BarrierWaiting):
                say("WAITING", event.barrier_id)
            if isinstance(event, gx.NodeStart) and event.node == "slow":
                say("SLOW")
    say("DONE")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
