"""A process for test_postgres.py to kill: crash_worker.py's chain and barrier runs, on a
PostgresStore. ``python pg_crash_worker.py <dsn> <schema> <side file> <trace_id> <mode>``; the
modes and the lines printed are crash_worker.py's."""

from __future__ import annotations

import functools
import sys
import time

import anyio

import graphexec as gx

from crash_worker import LEASE_TTL, barrier_graph, chain_graph, report, resume, say  # isort: skip


async def main(dsn: str, schema: str, side: str, trace_id: str, mode: str) -> None:
    """Run the mode."""
    async with gx.PostgresStore(dsn, schema=schema, max_size=2) as store:
        ex = gx.GraphExecutor(
            store=store,
            policy=gx.CheckpointPolicy(every_step=True),
            lease_ttl=LEASE_TTL,
            decision_poll_interval=0.05,
        )
        if mode == "run":
            t0 = time.perf_counter()
            events: list[str] = []
            async with ex.execute_stream(chain_graph(side), {"log": []}, trace_id=trace_id) as run:
                async for event in run:
                    events.append(type(event).__name__)
                    if isinstance(event, gx.CheckpointSaved) and event.seq == 1:
                        say("STARTED")
            report(run, t0, events)
        elif mode == "resume":
            await resume(ex, chain_graph(side), trace_id)
        elif mode == "barrier":
            async with ex.execute_stream(barrier_graph(), trace_id=trace_id) as run:
                async for event in run:
                    if isinstance(event, gx.BarrierWaiting):
                        say("WAITING", event.barrier_id)
        elif mode == "barrier-resume":
            await resume(ex, barrier_graph(), trace_id)
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    anyio.run(functools.partial(main, *sys.argv[1:6]))
