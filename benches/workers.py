"""Worker fleets: runs and checkpoints per second with 1, 2 and 4 worker processes.

    python benches/workers.py [--runs 200] [--workers 1,2,4] [--stores postgres,sqlite]
                              [--dsn postgresql://...] [--concurrency 16] [--poll 0.5]

For each store (Postgres: a database of the script's own, a fresh schema per measurement;
SQLite: a fresh file, every process on it), each workload and each fleet size: start that many
``gx.Worker`` processes (``tests/checkpoint/fleet_worker.py``, the chaos test's), wait until
they are ready, stop them (SIGSTOP), queue ``--runs`` runs from this process with
``ex.start(..., queue=True)``, let them go on (SIGCONT) and wait until every run has completed.
Workloads:

- ``short``: 4 nodes, a checkpoint after every step (5 records per run beside the queued one);
- ``gate``: the same with a barrier after the first node, decided by a separate decider process
  (``ex.decide`` from its own executor) as soon as it sees the run waiting: each run is
  claimed twice (queued, then ready again once its decision arrived).

Per row: runs/s and checkpoints/s (records the workers wrote, from the runs index) between the
first record a worker wrote and the last completion record (the store's ``created_at``: the
fleet's drain rate, not the queuing process's nor Python's start-up); for ``gate`` the median
time from the decider's ``ex.decide`` to the run's completion record; how long queuing one run
took; and the CPU each party used while the queue drained (the workers, every ``postgres``
process on the machine, this process with the decider) as a share of the machine's cores:
what bounds the curve.

``idle wake-up`` rows: one idle worker with ``--poll`` between claims, runs queued one at a time
0.2 to 0.2 + poll s apart: a run's queued record to the first record a worker wrote for it.
Well under the poll interval only when a hint wakes the worker (Postgres NOTIFY; none between
SQLite processes). ``claim_runs`` rows: the cost of one call granting 16 queued runs, with no
worker running.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "checkpoint"))

import fleet
import fleet_worker

import graphexec as gx
from graphexec.checkpoint import open_store

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _postgres_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii") as f:
                    if f.read().strip() == "postgres":
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    return {p: _cpu(p) for p in pids}


def _machine_busy() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot (/proc/stat)."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    total = sum(ticks[:8])  # guest time is already counted in user
    return total - idle, total


async def _backends(store: gx.CheckpointStore) -> list[int]:
    """Pids of the server processes connected to the store's database now (Postgres)."""
    import psycopg

    if not isinstance(store, gx.PostgresStore):
        return []
    async with await psycopg.AsyncConnection.connect(store.dsn, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [int(r[0]) for r in await cur.fetchall()]


@contextmanager
def _postgres_db(dsn: str) -> Iterator[str]:
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"graphexec_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(dsn, dbname=name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _latencies(store: gx.CheckpointStore, traces: list[str]) -> list[float]:
    """Per run: seconds from its queued record to the first record a worker wrote."""
    ex = gx.GraphExecutor(store=store)
    out = []
    for trace_id in traces:
        history = await ex.history(trace_id)
        if len(history) >= 2:
            out.append(history[1].created_at - history[0].created_at)
    return out


async def _span(
    store: gx.CheckpointStore, traces: list[str], decided: dict[str, float] | None
) -> tuple[float, float, list[float]]:
    """When the first record after a queued one was written, when the last run completed
    (wall clock, from the records), and with ``decided`` (trace id to the time its barrier
    was decided) each run's time from its decision to the first record after it (the
    resumed driver's: a worker woke, claimed the run and restored it)."""
    ex = gx.GraphExecutor(store=store)
    first, last, to_resumed = float("inf"), 0.0, []
    for trace_id in traces:
        history = await ex.history(trace_id)
        first = min(first, history[1].created_at)
        last = max(last, history[-1].created_at)
        at = decided.get(trace_id) if decided is not None else None
        if at is not None:
            after = [h.created_at for h in history if h.created_at > at]
            if after:
                to_resumed.append(after[0] - at)
    return first, last, to_resumed


async def measure(
    url: str,
    folder: pathlib.Path,
    workload: str,
    workers: int,
    runs: int,
    concurrency: int,
    poll: float,
) -> dict[str, Any]:
    """One fleet size on one fresh store: the figures of one table row.

    The workers start, get ready and are stopped (SIGSTOP) while this process queues the runs;
    then they go on (SIGCONT) and drain the queue. Throughput is timed by the store's clock,
    from the first record a worker wrote to the last completion record: the fleet's drain
    rate, not how fast one process queues, nor how fast Python starts.
    """
    f = fleet.Fleet(url, workload, folder, concurrency, poll, 30.0)
    async with open_store(url) as store:
        await store.runs(limit=1)  # migrate before the workers start
        for _ in range(workers):
            f.start_worker()
        if workload == "gate":
            # It decides until stopped (its CPU is read before that).
            f.start_decider(10**9, poll=0.02)
        try:
            f.wait_ready()
            graph = fleet_worker.graph(workload)
            ex = gx.GraphExecutor(store=store, graphs=[graph])
            traces = [f"{workload}-{i}" for i in range(runs)]
            for p in f.workers:
                p.send_signal(signal.SIGSTOP)
            t0 = time.perf_counter()
            for trace_id in traces:
                await ex.start(graph, {"n": 0}, trace_id=trace_id, queue=True)
            queued = time.perf_counter() - t0
            pids = [p.pid for p in f.workers] + ([f.decider.pid] if f.decider else [])
            cpu0 = [_cpu(p) for p in pids]
            server0 = _cpu_by_pid(_postgres_pids())
            busy0, me0, t1 = _machine_busy(), time.process_time(), time.perf_counter()
            for p in f.workers:
                p.send_signal(signal.SIGCONT)
            while len(await store.runs(status="completed", limit=runs + 1)) < runs:
                f.check_alive()
                await anyio.sleep(0.05)
            elapsed = time.perf_counter() - t1
            busy1 = _machine_busy()
            cpu = [_cpu(p) - c for p, c in zip(pids, cpu0, strict=True)]
            cpu_me = time.process_time() - me0
            # The server processes serving this database (a new one's CPU all counts).
            backends = await _backends(store)
            cpu_server = sum(_cpu(p) - server0.get(p, 0.0) for p in backends)
        finally:
            for p in f.workers:
                p.send_signal(signal.SIGCONT)
            codes = f.stop()
        if codes != [0] * len(codes):
            raise RuntimeError(f"workers exited with {codes}: {f.output()}")
        infos = await store.runs(limit=runs + 1)
        assert len(infos) == runs and all(i.status == "completed" for i in infos)
        checkpoints = sum(i.last_seq - 1 for i in infos)  # seq 1: the queued record
        decided = (
            {t: at for t, (_b, _k, at) in fleet.read_decisions(f.decisions).items()}
            if workload == "gate"
            else None
        )
        first, last, resumed = await _span(store, traces, decided)
    wall = last - first
    cores = os.cpu_count() or 1
    n = len(f.workers)
    return {
        "runs_per_s": runs / wall,
        "checkpoints_per_s": checkpoints / wall,
        "queue_ms_per_run": queued / runs * 1e3,
        "decided_to_resumed_p50_ms": statistics.median(resumed) * 1e3 if resumed else None,
        "cpu_workers": sum(cpu[:n]) / (elapsed * cores),
        "cpu_server": cpu_server / (elapsed * cores) if backends else None,
        "cpu_other": (cpu_me + sum(cpu[n:])) / (elapsed * cores),
        "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
        "cpu_ms_per_run": (sum(cpu[:n]) + cpu_server) / runs * 1e3,
    }


async def idle_wakeup(url: str, folder: pathlib.Path, poll: float, runs: int = 10) -> list[float]:
    """One idle worker; runs queued one at a time: queue-to-first-record latencies."""
    f = fleet.Fleet(url, "short", folder, 4, poll, 30.0)
    async with open_store(url) as store:
        await store.runs(limit=1)
        f.start_worker()
        try:
            f.wait_ready()
            graph = fleet_worker.graph("short")
            ex = gx.GraphExecutor(store=store, graphs=[graph])
            traces = [f"idle-{i}" for i in range(runs)]
            jitter = random.Random(0)  # spaced off the poll's phase
            await anyio.sleep(poll)  # past its first claim pass: the worker waits now
            for trace_id in traces:
                await ex.start(graph, {"n": 0}, trace_id=trace_id, queue=True)
                await anyio.sleep(0.2 + jitter.uniform(0, poll))
            while len(await store.runs(status="completed", limit=runs + 1)) < runs:
                f.check_alive()
                await anyio.sleep(0.05)
        finally:
            f.stop()
        return await _latencies(store, traces)


async def claim_cost(url: str, leases: int = 16, rounds: int = 8) -> list[float]:
    """Seconds per ``claim_runs`` call granting ``leases`` queued runs, this process alone
    (no worker running): the claim's own cost, round trips included."""
    from graphexec._manager import new_leases

    async with open_store(url) as store:
        graph = fleet_worker.graph("short")
        ex = gx.GraphExecutor(store=store, graphs=[graph])
        for i in range(leases * rounds):
            await ex.start(graph, {"n": 0}, trace_id=f"claim-{i}", queue=True)
        out = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            claims = await store.claim_runs([graph.name], new_leases(leases, 30.0))
            out.append(time.perf_counter() - t0)
            assert len(claims) == leases
        return out


Row = list[str]


def _row(store: str, workload: str, workers: int, r: dict[str, Any]) -> Row:
    return [
        store,
        workload,
        str(workers),
        f"{r['runs_per_s']:.0f}",
        f"{r['checkpoints_per_s']:.0f}",
        "-" if r["decided_to_resumed_p50_ms"] is None else f"{r['decided_to_resumed_p50_ms']:.0f}",
        f"{r['queue_ms_per_run']:.1f}",
        f"{r['cpu_workers']:.0%} / "
        + ("-" if r["cpu_server"] is None else f"{r['cpu_server']:.0%}")
        + f" / {r['cpu_other']:.0%}",
        f"{r['cpu_ms_per_run']:.1f}",
        f"{r['machine_busy']:.0%}",
    ]


async def main_async(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = [
        [
            "store",
            "workload",
            "workers",
            "runs/s",
            "ckpt/s",
            "decided->resumed p50 ms",
            "queue ms/run",
            "CPU workers/server/other",
            "CPU ms/run",
            "machine busy",
        ]
    ]
    sizes = [int(w) for w in args.workers.split(",")]
    for kind in args.stores.split(","):
        with tempfile.TemporaryDirectory(prefix="gx-workers-") as tmp:
            root = pathlib.Path(tmp)
            with _store_urls(kind, args.dsn, root) as new_url:
                for workload in ("short", "gate"):
                    for n in sizes:
                        folder = fleet_folder(root, f"{kind}-{workload}-{n}")
                        r = await measure(
                            new_url(), folder, workload, n, args.runs, args.concurrency, args.poll
                        )
                        print(f"{kind} {workload} x{n}: {r}", file=sys.stderr)
                        rows.append(_row(kind, workload, n, r))
                lat = await idle_wakeup(new_url(), fleet_folder(root, f"{kind}-idle"), args.poll)
                rows.append(
                    [
                        kind,
                        f"idle wake-up (poll {args.poll}s)",
                        "1",
                        "-",
                        "-",
                        f"queued->claimed {statistics.median(lat) * 1e3:.0f} ms, max "
                        + f"{max(lat) * 1e3:.0f}",
                        "-",
                        "-",
                        "-",
                        "-",
                    ]
                )
                claims = await claim_cost(new_url())
                rows.append(
                    [
                        kind,
                        "claim_runs, 16 leases",
                        "-",
                        f"{16 / statistics.median(claims):.0f}",
                        "-",
                        f"{statistics.median(claims) * 1e3:.1f} ms a call",
                        "-",
                        "-",
                        "-",
                        "-",
                    ]
                )
    return rows


def fleet_folder(root: pathlib.Path, name: str) -> pathlib.Path:
    folder = root / name
    folder.mkdir()
    return folder


@contextmanager
def _store_urls(kind: str, dsn: str, root: pathlib.Path) -> Iterator[Callable[[], str]]:
    """A factory of fresh stores' URLs: a new schema (Postgres) or file (SQLite) each call."""
    if kind == "postgres":
        with _postgres_db(dsn) as db:
            yield lambda: fleet.pg_url(db, f"b_{uuid.uuid4().hex[:12]}")
    elif kind == "sqlite":
        yield lambda: str(root / f"{uuid.uuid4().hex[:12]}.db")
    else:
        raise SystemExit(f"unknown store {kind!r}: postgres or sqlite")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("GRAPHEXEC_TEST_PG", DEFAULT_DSN))
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--stores", default="postgres,sqlite")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    t0 = time.perf_counter()
    rows = anyio.run(main_async, args)
    print(
        f"graphexec workers: {args.runs} runs per row, concurrency {args.concurrency} per "
        f"worker, poll {args.poll}s; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}; {time.perf_counter() - t0:.0f}s"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "runs/s, ckpt/s: from the first record a worker wrote to the last completion (the "
        "runs were queued while the workers were stopped). decided->resumed: the decider's "
        "ex.decide to the next record of the run (a worker woke, claimed and restored it). "
        "queued->claimed: a run's queued record to the first record a worker wrote for it. "
        "claim_runs: one call granting 16 queued runs, this process alone (runs/s column: "
        "runs claimed per second). CPU: share of all cores used while the queue drained by "
        "the workers, the Postgres backends serving this database, and this process with the "
        "decider; CPU ms/run: the workers' and the backends' CPU per run; machine busy: every "
        "core's busy share then, whoever used it."
    )


if __name__ == "__main__":
    main()
