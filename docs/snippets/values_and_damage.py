"""Concepts: value and name checks, damage detection (docs/concepts/values-and-damage.md)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx


async def locate(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"point": (3, 4)}  # a tuple: msgpack would give it back as a list


graph = gx.GraphBuilder("geo").node("locate", locate).start("locate").end("locate").build()


async def main() -> None:
    ex = gx.GraphExecutor(store=gx.SQLiteStore("geo.db"))
    # --8<-- [start:values]
    try:
        await ex.execute(graph, {})
    except gx.StateError as exc:
        print(exc)  # names the node and the key, and says what to use instead
    # --8<-- [end:values]

    # --8<-- [start:names]
    try:
        await ex.get_state("conv\x0042")
    except gx.InvalidTraceId as exc:  # a ValueError, raised before anything is read
        print(exc)
    # --8<-- [end:names]

    async def locate_ok(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"point": [3, 4]}

    fixed = gx.GraphBuilder("geo").node("locate", locate_ok).start("locate").end("locate")
    await ex.execute(fixed.build(), {}, trace_id="geo-1")

    # --8<-- [start:damage]
    with sqlite3.connect("geo.db") as db:  # flip one bit of the run's last record
        seq, body = db.execute(
            "SELECT seq, body FROM checkpoints WHERE trace_id = 'geo-1' ORDER BY seq DESC"
        ).fetchone()
        damaged = bytearray(body)
        damaged[len(damaged) // 2] ^= 0x01
        db.execute(
            "UPDATE checkpoints SET body = ? WHERE trace_id = 'geo-1' AND seq = ?",
            (bytes(damaged), seq),
        )
    try:
        await ex.get_state("geo-1")
    except gx.CheckpointError as exc:  # never a wrong state, never another exception type
        print(exc)
    # --8<-- [end:damage]


anyio.run(main)
