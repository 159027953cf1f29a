"""Events across processes on Postgres: from a node's ``ctx.emit`` to another process's tail.

    python benches/pg_events.py [--events 100] [--gap 0.02] [--idle 3] [--dsn postgresql://...]

Process A (a subprocess) drives one run whose node emits ``--events`` custom events
``--gap`` seconds apart, each carrying the wall-clock time it was emitted; this process tails
the trace with ``ex.events`` on a store of its own and takes, for each event, the time it
arrived minus the time it was emitted. Two tails, each against its own run: one woken by
NOTIFY (the default: its poll interval is then 1 s, only a fallback), one with the hints off
(``event_poll_interval=0.05``, a store whose LISTEN is never opened: the behaviour before
hints). Each tail first idles ``--idle`` seconds on the run before A emits (a page open on a
run that waits): the store reads per second it makes then are its cost at rest. Prints median,
p90 and p99 latency, the reads while events came, and the reads per second at rest. Both
clocks are this machine's, so no skew.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

import anyio
import psycopg
from psycopg.conninfo import make_conninfo

import graphexec as gx

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

CHILD = r"""
import sys, time, anyio
import graphexec as gx
dsn, schema, trace_id, n, gap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
async def emitter(state, ctx):
    while not await anyio.Path(sys.argv[6]).exists():
        await anyio.sleep(0.005)
    for i in range(n):
        await ctx.emit({"i": i, "t": time.time()})
        await anyio.sleep(gap)
    return {"done": True}
async def main():
    graph = gx.GraphBuilder("emitter").node("emit", emitter).start("emit").end("emit").build()
    async with gx.PostgresStore(dsn, schema=schema, max_size=2) as store:
        await gx.GraphExecutor(store=store).execute(graph, {}, trace_id=trace_id)
anyio.run(main)
"""


class _NoHints(gx.PostgresStore):
    """A PostgresStore whose waits never open LISTEN: waiters poll (as before hints)."""

    async def wait_for(self, topic: str, within: float) -> bool:
        return await self.hints.wait(topic, within)


def start_a(dsn: str, schema: str, trace_id: str, n: int, gap: float, go: str) -> Any:
    """Process A: drives the emitting run once ``go`` exists."""
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, dsn, schema, trace_id, str(n), str(gap), go]
    )


async def tail(
    dsn: str, schema: str, n: int, gap: float, hinted: bool, idle: float
) -> dict[str, Any]:
    trace_id = f"tail-{uuid.uuid4().hex[:8]}"
    go = anyio.Path(f"/tmp/gx-pg-events-{trace_id}")
    proc = start_a(dsn, schema, trace_id, n, gap, str(go))
    store_cls = gx.PostgresStore if hinted else _NoHints
    reads = 0
    idle_reads = 0
    lat: list[float] = []
    try:
        async with store_cls(dsn, schema=schema, max_size=2) as store:
            original = store.events_after

            async def counted(trace: str, after: int) -> Any:
                nonlocal reads
                reads += 1
                return await original(trace, after)

            store.events_after = counted  # type: ignore[method-assign]
            ex = gx.GraphExecutor(store=store, event_poll_interval=None if hinted else 0.05)
            # Another process writes the run: nothing to await but its row.
            while await store.get_run(trace_id) is None:  # noqa: ASYNC110
                await anyio.sleep(0.01)

            async def follow() -> None:
                async for event in ex.events(trace_id):
                    if isinstance(event, gx.Custom):
                        lat.append((time.time() - event.data["t"]) * 1e3)

            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                await anyio.sleep(idle)  # the run is there but sends nothing yet
                idle_reads = reads
                await go.touch()
    finally:
        await anyio.to_thread.run_sync(proc.wait, 60)
        await go.unlink(missing_ok=True)
    assert len(lat) == n, (len(lat), n)
    lat.sort()
    return {
        "median_ms": statistics.median(lat),
        "p90_ms": lat[int(len(lat) * 0.9)],
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "idle_reads_per_s": idle_reads / idle,
        "reads": reads - idle_reads,
    }


async def main_async(dsn: str, n: int, gap: float, idle: float) -> None:
    name = f"graphexec_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    bench_dsn = make_conninfo(dsn, dbname=name)
    try:
        print(
            f"{n} events {gap * 1e3:.0f} ms apart, emitted in another process after the tail "
            f"idled {idle:.0f} s on the run"
        )
        print("tail                           median ms  p90 ms  p99 ms  reads  idle reads/s")
        for label, hinted in (
            ("NOTIFY (poll 1 s as fallback)", True),
            ("poll every 0.05 s", False),
        ):
            r = await tail(bench_dsn, f"e_{uuid.uuid4().hex[:12]}", n, gap, hinted, idle)
            print(
                f"{label:<30} {r['median_ms']:9.1f}  {r['p90_ms']:6.1f}  {r['p99_ms']:6.1f}  "
                f"{r['reads']:5d}  {r['idle_reads_per_s']:12.1f}"
            )
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("GRAPHEXEC_TEST_PG", DEFAULT_DSN))
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--gap", type=float, default=0.02)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds before A emits")
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    anyio.run(main_async, args.dsn, args.events, args.gap, args.idle)


if __name__ == "__main__":
    main()
