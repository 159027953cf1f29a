"""How-to: queue runs and drive them with workers (docs/how-to/workers.md shows this file).

Queues three refund runs in a SQLite file, runs a worker with two slots in this process (a
second process, `graphexec worker`, would do the same), decides the one that waits at its
barrier from another executor, and stops the worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx


async def assess(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"amount": state["amount"], "risky": state["amount"] > 100}


async def pay(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"paid": state["amount"]}


async def decline(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"paid": 0}


# --8<-- [start:graph]
graph = (
    gx.GraphBuilder("refund")
    .node("assess", assess)
    .barrier("approve", prompt=lambda s: {"amount": s["amount"]}, timeout=24 * 3600)
    .node("pay", pay, side_effects=True)
    .node("decline", decline)
    .edge("assess", "approve", when=lambda s: s["risky"])
    .edge("assess", "pay")
    .edge("approve", "pay", when=lambda s: s["approve"]["decision"] == "approve")
    .edge("approve", "decline")
    .start("assess")
    .end("pay", "decline")
    .build()
)
# --8<-- [end:graph]


async def until(store: gx.CheckpointStore, trace_id: str, status: str) -> None:
    for _ in range(500):
        info = await store.get_run(trace_id)
        if info is not None and info.status == status:
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"{trace_id} never got {status}")


async def main() -> None:
    # --8<-- [start:queue]
    store = gx.SQLiteStore("refunds.db")
    ex = gx.GraphExecutor(store=store)  # no `async with`: nothing is driven here
    for trace_id, amount in [("r-1", 20), ("r-2", 450), ("r-3", 35)]:
        await ex.start(graph, {"amount": amount}, trace_id=trace_id, queue=True)
    print(sorted((r.trace_id, r.status) for r in await ex.runs(status="queued")))
    # --8<-- [end:queue]

    # --8<-- [start:worker]
    worker = gx.Worker(gx.SQLiteStore("refunds.db"), [graph], concurrency=2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run)  # claims, drives, waits for work; until stop()
        # --8<-- [end:worker]
        await until(store, "r-2", "waiting")
        await until(store, "r-1", "completed")
        await until(store, "r-3", "completed")
        # --8<-- [start:decide]
        state = await ex.get_state("r-2")
        print("r-2 waits at", state.pending_barrier.barrier_id, state.pending_barrier.prompt)  # type: ignore[union-attr]
        print("running now:", worker.running)  # a run waiting for a human holds no slot
        await ex.decide("r-2", "approve#1", gx.Approve())  # from any process
        # --8<-- [end:decide]
        await until(store, "r-2", "completed")
        # --8<-- [start:stop]
        worker.stop()  # stop claiming; runs in hand are recorded "interrupted" for others
    print(worker.stats)
    # --8<-- [end:stop]
    print({t: (await ex.get_state(t)).state.get("paid") for t in ("r-1", "r-2", "r-3")})
    await store.aclose()


if __name__ == "__main__":
    anyio.run(main)
