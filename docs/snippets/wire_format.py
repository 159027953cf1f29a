"""Reference: the JSON wire format (docs/reference/wire.md shows this file's output)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anyio
import msgspec

import graphexec as gx


async def draft(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"amount": state["amount"]}


graph = (
    gx.GraphBuilder("refund")
    .node("draft", draft)
    .barrier("approve", prompt=lambda s: {"amount": s["amount"]})
    .start("draft")
    .edge("draft", "approve")
    .end("approve")
    .build()
)


def show(label: str, value: Any) -> None:
    """Print a value as the JSON a server sends (keys sorted; times and hashes masked)."""
    data = json.loads(msgspec.json.encode(value))
    for item in [data, *data.get("execution_log", [])]:
        for key in ("updated_at", "duration", "graph_hash", "start", "end"):
            if key in item:
                item[key] = "..."
    print(f"{label}: {json.dumps(data, sort_keys=True, indent=2)}")


async def main() -> None:
    # --8<-- [start:decisions]
    for decision in (gx.Approve(), gx.Reject("too risky"), gx.Edit({"amount": 10}), gx.Skip()):
        wire = msgspec.json.encode(decision)
        assert msgspec.json.decode(wire, type=gx.Decision) == decision  # and back
        print(wire.decode())
    # --8<-- [end:decisions]

    store = gx.SQLiteStore("wire.db")
    ex = gx.GraphExecutor(store=store)
    # --8<-- [start:events]
    async with ex.execute_stream(graph, {"amount": 25}, trace_id="refund-9") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                show("BarrierWaiting", event)  # msgspec.json.encode(event)
                break
    show("RunState", await ex.get_state("refund-9"))  # what a reconnecting page reads
    # --8<-- [end:events]

    await store.submit_decision("refund-9", "approve#1", gx.Approve())
    async with ex.resume_from(graph, "refund-9") as run:
        async for _ in run:
            pass
    # --8<-- [start:result]
    show("GraphResult", run.result)  # execution_log: one line per node attempt
    # --8<-- [end:result]


anyio.run(main)
