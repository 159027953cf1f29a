"""A process for test_postgres.py to kill: crash_worker.py's chain and barrier runs, on a
PostgresStore. ``python pg_crash_worker.py <dsn> <schema> <side file> <trace_id> <mode>``; the
modes and the lines printed are crash_worker.py's."""

from __future__ import annotations

import functools
import sys

import anyio

import graphexec as gx

from crash_worker import run_mode  # isort: skip


async def main(dsn: str, schema: str, side: str, trace_id: str, mode: str) -> None:
    """Run the mode."""
    async with gx.PostgresStore(dsn, schema=schema, max_size=2) as store:
        await run_mode(store, side, trace_id, mode)


if __name__ == "__main__":
    anyio.run(functools.partial(main, *sys.argv[1:6]))
