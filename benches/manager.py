"""Figures of the run manager and the event log (issue 9).

    python benches/manager.py [--rounds 5] [--samples 200]

- ``W2 log on / off``: W2 (a 200-node chain, SQLite checkpoint after every step, 5 runs per rep,
  ``execute()``) with the event log on (the default: every event recorded, riding each
  checkpoint's transaction) and off (``record_events=False``); the variants alternate in one
  process, each rep in a fresh file. Median us/step and the ratio.
- ``tail latency``: a child process drives a run whose node emits ``time.time()`` as a Custom
  event every 20 ms; this process follows the trace with ``ex.events`` (polling the shared
  SQLite file) and takes receive time minus emit time per event (same host, same clock).
  Median and p99 in ms, with the default ``event_flush_interval`` and ``event_poll_interval``
  (0.05 s each).
- ``SIGKILL -> resumed``: a child process drives a run and is SIGKILLed while a node works;
  this process calls ``ex.recover()`` until the run is resumed. Median over 5 kills, with the
  child's ``lease_ttl`` given (default 30 s, the library's): the child runs on this host, so
  its lease is found dead at once (``/proc/<pid>/stat``) and never waited for; the figure does
  not depend on ``lease_ttl``. ``max`` is the worst of the 5.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import anyio

import graphexec as gx

HERE = pathlib.Path(__file__).resolve().parent
CHAIN = 200
RUNS = 5

CHILD = r"""
import sys, time, anyio
import graphexec as gx
db, trace_id, mode, samples, ttl = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])

async def ticker(state, ctx):
    for _ in range(samples):
        await anyio.sleep(0.02)
        ctx.emit(time.time())
    return {"done": True}

async def hang(state):
    print("READY", flush=True)
    await anyio.sleep_forever()

async def main():
    node = ticker if mode == "tail" else hang
    g = gx.GraphBuilder("bench").node("n", node, side_effects=True).start("n").end("n").build()
    async with gx.SQLiteStore(db) as store, gx.GraphExecutor(store=store, lease_ttl=ttl) as ex:
        await ex.start(g, {}, trace_id=trace_id)
        print("STARTED", flush=True)
        async for e in ex.events(trace_id):
            pass

anyio.run(main)
"""


def chain() -> gx.Graph:
    b = gx.GraphBuilder("w2")
    names = [f"n{i}" for i in range(CHAIN)]

    async def incr(state: dict[str, Any]) -> dict[str, int]:
        return {"n": state["n"] + 1}

    for name in names:
        b.node(name, incr)
    for a, c in itertools.pairwise(names):
        b.edge(a, c)
    return b.start(names[0]).end(names[-1]).build()


async def w2_rep(tmp: pathlib.Path, record: bool, k: int) -> float:
    db = tmp / f"w2-{record}-{k}.db"
    store = gx.SQLiteStore(db)
    ex = gx.GraphExecutor(
        store=store,
        policy=gx.CheckpointPolicy(every_step=True),
        max_steps=CHAIN + 10,
        record_events=record,
    )
    await store.get_run("prime")
    graph = chain()
    t0 = time.perf_counter()
    for r in range(RUNS):
        result = await ex.execute(graph, {"n": 0}, trace_id=f"t{r}")
        assert result.state["n"] == CHAIN
    dt = time.perf_counter() - t0
    await store.aclose()
    return dt / (RUNS * CHAIN) * 1e6


def child(db: pathlib.Path, trace_id: str, mode: str, samples: int, ttl: float) -> Any:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), trace_id, mode, str(samples), str(ttl)],
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_line(proc: Any, word: str) -> None:
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"child ended before {word}")
        if line.startswith(word):
            return


async def tail_latency(tmp: pathlib.Path, samples: int) -> list[float]:
    db = tmp / "tail.db"
    proc = child(db, "tail", "tail", samples, 30.0)
    wait_line(proc, "STARTED")
    lags: list[float] = []
    async with gx.SQLiteStore(db) as store:
        ex = gx.GraphExecutor(store=store)
        async for e in ex.events("tail"):
            if isinstance(e, gx.Custom):
                lags.append((time.time() - e.data) * 1000)
    proc.wait()
    return lags


async def kill_to_resume(tmp: pathlib.Path, ttl: float, k: int) -> float:
    db = tmp / f"kill-{k}.db"
    proc = child(db, "k", "hang", 0, ttl)
    wait_line(proc, "READY")
    await anyio.sleep(0.1)
    graph = (
        gx.GraphBuilder("bench")
        .node("n", lambda s: {"ok": True}, side_effects=True)
        .start("n")
        .end("n")
        .build()
    )
    async with gx.SQLiteStore(db) as store, gx.GraphExecutor(store=store, graphs=[graph]) as ex:
        await store.get_run("k")
        proc.kill()
        proc.wait()
        t0 = time.perf_counter()
        for _ in range(100_000):
            if "k" in await ex.recover():
                break
            await anyio.sleep(0.01)
        dt = time.perf_counter() - t0
    return dt * 1000


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def main(rounds: int, samples: int, ttl: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        on: list[float] = []
        off: list[float] = []
        await w2_rep(tmp, True, -1)  # warm-up
        for k in range(rounds):
            off.append(await w2_rep(tmp, False, k))
            on.append(await w2_rep(tmp, True, k))
        lags = await tail_latency(tmp, samples)
        kills = [await kill_to_resume(tmp, ttl, k) for k in range(5)]
    m_on, m_off = statistics.median(on), statistics.median(off)
    print("| figure | value |")
    print("|---|---|")
    print(f"| W2 event log off, us/step (median of {rounds}) | {m_off:.0f} |")
    print(f"| W2 event log on, us/step (median of {rounds}) | {m_on:.0f} |")
    print(f"| W2 on / off | {m_on / m_off:.3f} |")
    print(
        f"| tail latency across processes, median ms ({len(lags)} events) | "
        f"{statistics.median(lags):.1f} |"
    )
    print(f"| tail latency across processes, p99 ms | {pct(lags, 0.99):.1f} |")
    print(
        f"| SIGKILL -> recover() resumed, median ms (lease_ttl={ttl:g}) | "
        f"{statistics.median(kills):.1f} |"
    )
    print(f"| SIGKILL -> recover() resumed, max ms of {len(kills)} | {max(kills):.1f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--lease-ttl", type=float, default=30.0)
    a = p.parse_args()
    anyio.run(main, a.rounds, a.samples, a.lease_ttl)
