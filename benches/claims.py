"""What a worker's claim costs (``store.claim_runs``, issue 14): prints a table.

Each store gets ``--runs`` runs in its runs table (all completed but ``--queued`` of them), then:

- ``idle poll``: a claim of 4 when nothing needs a driver (what an idle worker repeats);
- ``claim 4``: claims of 4 queued runs, until the queue is empty (per claim);
- ``take over 4``: a claim of 4 running runs whose holder, a process of this host, is dead
  (Postgres: SQL cannot see the process table, so these take a short transaction each).

Postgres also counts the statements each call sends (one round trip each). Usage:
``.venv/bin/python benches/claims.py [--runs 10000] [--queued 200] [--pg DSN]``. Medians
[min-max].
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

import graphexec as gx
from graphexec.checkpoint._leases import this_process
from graphexec.checkpoint._record import Lease, RunInfo, StoredCheckpoint

STATEMENTS = [0]
"""Statements sent to Postgres (counted by wrapping psycopg's cursor)."""


def _count_statements() -> None:
    import psycopg

    execute = psycopg.AsyncCursor.execute

    async def counted(self: Any, *args: Any, **kw: Any) -> Any:
        STATEMENTS[0] += 1
        return await execute(self, *args, **kw)

    psycopg.AsyncCursor.execute = counted  # type: ignore[method-assign]


def _row(trace_id: str, status: str) -> StoredCheckpoint:
    body = f"{trace_id}:{status}".encode()  # stores never read bodies
    return StoredCheckpoint(
        trace_id=trace_id,
        seq=0,
        kind="base",
        step=0,
        next_node="work",
        status=status,
        trigger="step",
        created_at=time.time(),
        body=body,
        checksum=zlib.crc32(body),
        snapshot=b"\x80",
        snapshot_checksum=zlib.crc32(b"\x80"),
    )


def _run(trace_id: str, status: str, t: float) -> RunInfo:
    return RunInfo(
        trace_id=trace_id,
        graph_name="g",
        graph_hash="h",
        status=status,
        step=0,
        next_node="work",
        last_seq=0,
        created_at=t,
        updated_at=t,
        ready_at=t if status == "queued" else None,
    )


def _leases(n: int) -> list[Lease]:
    host, pid, started = this_process()
    return [Lease(uuid.uuid4().hex, 30.0, 0, host, pid, started) for _ in range(n)]


async def _timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, int, Any]:
    before = STATEMENTS[0]
    t0 = time.perf_counter()
    result = await fn()
    return (time.perf_counter() - t0) * 1000, STATEMENTS[0] - before, result


def _fmt(ms: list[float]) -> str:
    return f"{statistics.median(ms):7.2f} [{min(ms):.2f}-{max(ms):.2f}]"


async def _dead_pid() -> int:
    done = await anyio.run_process([sys.executable, "-c", "import os; print(os.getpid())"])
    return int(done.stdout)


async def measure(name: str, store: gx.CheckpointStore, runs: int, queued: int) -> list[str]:
    t = time.time() - 3600
    async with store:
        for i in range(runs - queued):
            await store.save([_row(f"done-{i}", "completed")], _run(f"done-{i}", "completed", t))
        idle = [await _timed(lambda: store.claim_runs([], _leases(4))) for _ in range(20)]
        assert all(r == [] for _, _, r in idle)
        for i in range(queued):
            await store.save([_row(f"q-{i}", "queued")], _run(f"q-{i}", "queued", t + i))
        claims = []
        while True:
            ms, n, got = await _timed(lambda: store.claim_runs([], _leases(4)))
            if not got:
                break
            claims.append((ms, n, got))
        assert sum(len(g) for _, _, g in claims) == queued
        host, _, _ = this_process()
        dead = await _dead_pid()
        for i in range(4):
            lease = Lease(f"dead-{i}", 3600.0, 0, host, dead, "x")
            await store.save([_row(f"r-{i}", "running")], _run(f"r-{i}", "running", t), lease=lease)
        ms, n, got = await _timed(lambda: store.claim_runs([], _leases(4)))
        assert len(got) == 4
    statements = name.startswith("postgres")
    return [
        f"{name:10} {'idle poll':12} {_fmt([m for m, _, _ in idle])}"
        + (f"  {idle[0][1]} statement(s)" if statements else ""),
        f"{name:10} {'claim 4':12} {_fmt([m for m, _, _ in claims])}"
        + (f"  {claims[0][1]} statement(s)" if statements else ""),
        f"{name:10} {'take over 4':12} {ms:7.2f}" + (f"  {n} statement(s)" if statements else ""),
    ]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--queued", type=int, default=200)
    parser.add_argument(
        "--pg", default=os.environ.get("GRAPHEXEC_TEST_PG", "postgresql://postgres@127.0.0.1/test")
    )
    args = parser.parse_args()
    lines = [f"{'store':10} {'call':12} {'ms median [min-max]'}"]
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = gx.SQLiteStore(os.path.join(tmp, "claims.db"))
        lines += await measure("sqlite", sqlite, args.runs, args.queued)
    _count_statements()
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    pg = gx.PostgresStore(args.pg, schema=schema)
    try:
        lines += await measure("postgres", pg, args.runs, args.queued)
    finally:
        import psycopg

        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
    print(f"{args.runs} runs in the table, {args.queued} of them queued")
    print("\n".join(lines))


if __name__ == "__main__":
    anyio.run(main)
