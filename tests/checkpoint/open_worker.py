"""A worker process for test_sqlite's concurrent first opens: opens new files at agreed instants.

Every worker opens ``<folder>/<i>.db`` for i in 0..n-1 at wall-clock time ``start + i * gap``
(spinning for the last two milliseconds, so the workers hit each new file together), reads the
runs index through a fresh SQLiteStore, closes it, and prints one line per failed open.
"""

from __future__ import annotations

import sys
import time

import anyio

from graphexec.checkpoint import SQLiteStore
from graphexec.exceptions import CheckpointError


async def main(folder: str, n: int, start: float, gap: float) -> None:
    for i in range(n):
        at = start + i * gap
        if at - time.time() > 0.002:
            await anyio.sleep(at - time.time() - 0.002)
        while time.time() < at:
            pass
        store = SQLiteStore(f"{folder}/{i}.db")
        try:
            await store.runs()
        except CheckpointError as exc:
            print(f"failed {i}: {exc}", flush=True)
        finally:
            await store.aclose()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
