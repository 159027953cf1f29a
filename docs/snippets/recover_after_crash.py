"""How-to: recover runs after a crash (docs/how-to/crash-recovery.md shows this file).

Run without arguments: it starts a worker process (this file with --worker) that starts a run
and is killed with SIGKILL in the middle of it; then this process recovers the run.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx


async def fetch(state: Mapping[str, Any]) -> dict[str, Any]:
    return {"pages": [f"page of {state['site']}"]}


CRASHING = sys.argv[1:] == ["--worker"]  # the first process dies in summarize


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
    ex = gx.GraphExecutor(store=gx.SQLiteStore("crawl.db"), graphs=[graph])
    async with ex:
        await ex.start(graph, {"site": "example.org"}, trace_id="crawl-1")
        await anyio.sleep_forever()


async def main() -> None:
    async with await anyio.open_process([sys.executable, __file__, "--worker"]) as proc:
        assert proc.stdout is not None
        output = b""
        while b"working" not in output:
            output += await proc.stdout.receive()
        proc.send_signal(signal.SIGKILL)  # no checkpoint, no cleanup: the process is gone
        await proc.wait()

    # --8<-- [start:recover]
    store = gx.SQLiteStore("crawl.db")
    async with gx.GraphExecutor(store=store, graphs=[graph]) as ex:
        for info in await ex.runs(status="running"):
            print(info.trace_id, info.status, "next:", info.next_node)
        resumed: list[str] = []
        while "crawl-1" not in resumed:  # a dead owner's lease may need to expire first
            resumed += await ex.recover()  # resumes them in the executor's task group
            await anyio.sleep(0.2)
        async for event in ex.events("crawl-1"):  # recorded events, then the live ones
            if isinstance(event, gx.NodeStart):
                print("ran", event.node, "at step", event.step)
        state = await ex.get_state("crawl-1")
        print(state.status, state.state["summary"])
    # --8<-- [end:recover]


if __name__ == "__main__":
    anyio.run(worker if CRASHING else main)
