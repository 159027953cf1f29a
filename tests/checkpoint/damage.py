"""A small SQLite checkpoint file with several traces, and the checks damage tests share.

``build(path)`` writes three traces (a completed chain of one base and nine deltas, a
completed chain with a second base, one waiting at a barrier) and returns what each should load as. ``outcome(path, expected)``
opens the file the way a restarted process would, loads every trace, and classifies each:
``"ok"`` (exactly the expected run), ``"error"`` (a graphexec error), or raises AssertionError
for anything else (a wrong state, or an exception that is not a graphexec error). The chaos
bench (``benches/chaos.py``) uses the same helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import graphexec as gx

TRACES = ("alpha", "beta", "gamma")


def chain(name: str, length: int) -> gx.Graph:
    """``n0 -> n1 -> ...``: node i appends i to ``log`` and sets ``last`` to a small dict."""
    builder = gx.GraphBuilder(name)
    for i in range(length):
        builder.node(f"n{i}", _step(i))
    for i in range(length - 1):
        builder.edge(f"n{i}", f"n{i + 1}")
    return builder.reducer("log", gx.reducers.append).start("n0").end(f"n{length - 1}").build()


def gate() -> gx.Graph:
    """``prep -> approve (barrier) -> done``."""
    return (
        gx.GraphBuilder("gate")
        .node("prep", lambda s: {"draft": "refund 42", "n": 1})
        .barrier("approve", prompt=lambda s: {"text": s["draft"]})
        .node("done", lambda s: {"n": 2})
        .edge("prep", "approve")
        .edge("approve", "done")
        .start("prep")
        .end("done")
        .build()
    )


def _step(i: int) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    def node(state: Mapping[str, Any]) -> dict[str, Any]:
        return {"log": [i], "last": {"i": i, "text": f"step {i} é"}}

    return node


Expected = dict[str, tuple[dict[str, Any], str, int, str | None]]
"""trace id -> (state, status, step, next node)."""


async def build(path: Path) -> Expected:
    """Write the three traces to a new file at ``path`` (closed, WAL folded back)."""
    async with gx.SQLiteStore(path) as store:
        # alpha: one base and nine deltas; beta: bases at seq 1 and 4 (compact_every=3)
        ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(chain("long", 9), {"log": []}, trace_id="alpha")
        compacting = gx.GraphExecutor(
            store=store, policy=gx.CheckpointPolicy(every_step=True, compact_every=3)
        )
        await compacting.execute(chain("short", 4), {"log": [], "tag": "b"}, trace_id="beta")
        async with ex.execute_stream(gate(), {}, trace_id="gamma") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        found: Expected = {}
        for trace in TRACES:
            s = await ex.get_state(trace)
            found[trace] = (s.state, s.status, s.step, s.next_node)
    return found


async def outcome(path: Path, expected: Expected) -> dict[str, str]:
    """Load every trace of ``path``; ``"ok"`` or ``"error"`` per trace (see the module doc)."""
    found: dict[str, str] = {}
    try:
        async with gx.SQLiteStore(path) as store:
            ex = gx.GraphExecutor(store=store)
            for trace in TRACES:
                try:
                    s = await ex.get_state(trace)
                except gx.GraphError:
                    found[trace] = "error"
                    continue
                got = (s.state, s.status, s.step, s.next_node)
                assert got == expected[trace], f"wrong run for {trace}: {got} != {expected[trace]}"
                found[trace] = "ok"
    except gx.GraphError:
        # Closing (folding the WAL back) may fail on a damaged file: also a graphexec error.
        for trace in TRACES:
            found.setdefault(trace, "error")
    return found
