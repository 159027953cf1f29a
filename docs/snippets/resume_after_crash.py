"""How-to: resume a run after its process was killed (docs/how-to/crash-recovery.md).

Run without arguments: it starts a worker process (this file with --worker) that runs the graph
and is killed with SIGKILL in the middle of a node; then this process resumes the run.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx

CRASHING = sys.argv[1:] == ["--worker"]  # the first process dies in summarize


async def fetch(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"pages": [f"page of {state['site']}"]}


async def summarize(state: Mapping[str, Any]) -> dict[str, Any]:
    if CRASHING:
        print("working", flush=True)
        await anyio.sleep(60)
    return {"summary": f"{len(state['pages'])} page(s)"}


graph = (
    gx.GraphBuilder("crawl")
    .node("fetch", fetch, side_effects=True)  # a checkpoint follows it: not fetched twice
    .node("summarize", summarize)
    .edge("fetch", "summarize")
    .start("fetch")
    .end("summarize")
    .build()
)


async def worker() -> None:
    ex = gx.GraphExecutor(store=gx.SQLiteStore("crawl.db"))
    await ex.execute(graph, {"site": "example.org"}, trace_id="crawl-1")


# --8<-- [start:resume]
async def resume(ex: gx.GraphExecutor, trace_id: str) -> gx.GraphResult:
    while True:
        try:
            async with ex.resume_from(graph, trace_id) as run:
                async for event in run:
                    if isinstance(event, gx.NodeStart):
                        print("running", event.node, "at step", event.step)
            return run.result
        except gx.RunLocked as exc:  # a live owner, or one on another host not yet expired
            print("locked:", exc)
            await anyio.sleep(max(0.1, (exc.expires_at or 0) - time.time()))


# --8<-- [end:resume]


async def main() -> None:
    async with await anyio.open_process([sys.executable, __file__, "--worker"]) as proc:
        assert proc.stdout is not None
        output = b""
        while b"working" not in output:
            output += await proc.stdout.receive()
        proc.send_signal(signal.SIGKILL)  # no checkpoint, no cleanup: the process is gone
        await proc.wait()

    # --8<-- [start:find]
    ex = gx.GraphExecutor(store=gx.SQLiteStore("crawl.db"))
    for info in await ex.runs(status="running"):  # their driver may have died
        print(info.trace_id, info.status, "next:", info.next_node)
        result = await resume(ex, info.trace_id)
        print(result.status, result.state["summary"])
    # --8<-- [end:find]


if __name__ == "__main__":
    anyio.run(worker if CRASHING else main)
