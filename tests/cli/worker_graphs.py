"""Graphs for the ``graphexec worker`` tests, importable as ``--graphs worker_graphs:graphs``.

``quick`` runs one node; ``gated`` runs one node that waits until the file named by the
``WORKER_GATE`` environment variable exists (the test opens the gate when it wants the run to
finish), so a run can be caught inside a worker.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

import graphexec as gx


async def bump(state: dict[str, Any]) -> dict[str, Any]:
    return {"n": state.get("n", 0) + 1}


async def wait_for_gate(state: dict[str, Any]) -> dict[str, Any]:
    gate = anyio.Path(os.environ["WORKER_GATE"])
    for _ in range(3000):  # a minute at most
        if await gate.exists():
            return {"passed": True}
        await anyio.sleep(0.02)
    raise TimeoutError(f"the gate {gate} never opened")


quick = gx.GraphBuilder("quick").node("bump", bump).start("bump").end("bump").build()
gated = gx.GraphBuilder("gated").node("wait", wait_for_gate).start("wait").end("wait").build()
graphs = [quick, gated]
