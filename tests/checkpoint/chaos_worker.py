"""A process for the chaos suite to kill: ``python chaos_worker.py <db> <trace_id> <mode> <config>``.

The graph loops ``work`` 40 times with a fan-out (``fan``, three parallel branches) after every
seventh pass, a barrier (``approve``) after the 25th, and a 2 KiB payload every fifth pass, so
kills land inside steps, saves, fan-outs, compactions and barrier waits. ``config`` picks the
checkpoint policy (``sync``: every step, committed before the step ends; ``async``: every step,
committed behind the run; ``compact``: every step with a base every third checkpoint;
``adaptive``: the default policy, which checkpoints only at the barrier and the end).

Modes: ``run`` starts the trace; ``resume`` resumes it; both retry while a killed process's
lease lasts. Both print ``STARTED`` when the run starts, ``SAVED <seq> <step>`` after each committed checkpoint (the
CheckpointSaved event is sent after the commit, in both durabilities), answer the barrier
through the store after a short wait, and end with ``RESULT <json>``. A graphexec error ends
the process with ``GRAPHERROR <type> <message>`` (exit 3), any other exception with
``FOREIGN <repr>`` (exit 4): the chaos suite counts the latter as failures.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx

PASSES = 40
BARRIER_AFTER = 25
FAN_EVERY = 7
LEASE_TTL = 0.4
WORK_SECONDS = 0.002
CONFIGS = ("sync", "async", "compact", "adaptive")


def payload(i: int) -> str:
    """2 KiB, deterministic."""
    return "".join(hashlib.sha256(f"{i}:{j}".encode()).hexdigest() for j in range(32))


def work(state: Mapping[str, Any]) -> dict[str, Any]:
    time.sleep(WORK_SECONDS)  # the node's work: a kill often lands here
    i = state["i"] + 1
    update: dict[str, Any] = {"i": i, "log": [f"w{i}"]}
    if i % 5 == 0:
        update["blob"] = payload(i)
    return update


def branch(name: str) -> Any:
    async def run(state: Mapping[str, Any]) -> dict[str, Any]:
        await anyio.sleep(0.001)
        return {"fan": [f"{name}{state['i']}"]}

    return run


def graph() -> gx.Graph:
    """The chaos graph (see the module doc)."""
    return (
        gx.GraphBuilder("chaos")
        .node("work", work)
        .parallel("fan", {b: branch(b) for b in ("a", "b", "c")})
        .barrier("approve", prompt=lambda s: {"i": s["i"]})
        .node("finish", lambda s: {"done": True})
        .edge("work", "finish", when=lambda s: s["i"] >= PASSES)
        .edge("work", "approve", when=lambda s: s["i"] == BARRIER_AFTER and "approve" not in s)
        .edge("work", "fan", when=lambda s: s["i"] % FAN_EVERY == 0)
        .edge("work", "work")
        .edge("fan", "work")
        .edge("approve", "work")
        .reducer("log", gx.reducers.append)
        .reducer("fan", gx.reducers.append)
        .start("work")
        .end("finish")
        .build()
    )


INITIAL: dict[str, Any] = {"i": 0, "log": [], "fan": []}


def policy(config: str) -> gx.CheckpointPolicy:
    if config == "sync":
        return gx.CheckpointPolicy(every_step=True)
    if config == "async":
        return gx.CheckpointPolicy(every_step=True, durability="async")
    if config == "compact":
        return gx.CheckpointPolicy(every_step=True, compact_every=3)
    if config == "adaptive":
        return gx.CheckpointPolicy()
    raise SystemExit(f"unknown config {config!r}")


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def drive(store: gx.SQLiteStore, run: gx.Run) -> None:
    """Consume the events: report commits, answer the barrier through the store."""
    async for event in run:
        if isinstance(event, gx.GraphStart):
            say("STARTED")
        elif isinstance(event, gx.CheckpointSaved):
            say("SAVED", event.seq, event.step)
        elif isinstance(event, gx.BarrierWaiting):
            await anyio.sleep(0.01)  # a kill may land while the run waits
            try:
                await store.submit_decision(run.trace_id, event.barrier_id, gx.Approve())
            except gx.InvalidDecision:
                pass  # decided before a kill, picked up on resume


async def main(db: str, trace_id: str, mode: str, config: str) -> None:
    async with gx.SQLiteStore(db) as store:
        ex = gx.GraphExecutor(
            store=store, policy=policy(config), lease_ttl=LEASE_TTL, decision_poll_interval=0.01
        )
        g = graph()
        if mode not in ("run", "resume"):
            raise SystemExit(f"unknown mode {mode!r}")
        # A killed process keeps its lease until it expires, also when it died before its first
        # checkpoint (the lease is taken first): both modes wait for it.
        deadline = time.monotonic() + 20
        while True:
            try:
                if mode == "run":
                    async with ex.execute_stream(g, dict(INITIAL), trace_id=trace_id) as run:
                        await drive(store, run)
                else:
                    async with ex.resume_from(g, trace_id) as run:
                        await drive(store, run)
                break
            except gx.RunLocked:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.02)
        say("RESULT", json.dumps({"status": run.result.status, "state": run.result.state}))


if __name__ == "__main__":
    try:
        anyio.run(functools.partial(main, *sys.argv[1:5]))
    except gx.GraphError as exc:
        say("GRAPHERROR", type(exc).__name__, str(exc).replace("\n", " "))
        sys.exit(3)
    except Exception as exc:  # noqa: BLE001 - reported to the chaos suite, which fails on it
        say("FOREIGN", repr(exc).replace("\n", " "))
        sys.exit(4)
