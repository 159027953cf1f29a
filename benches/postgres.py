"""W2 and W5 on PostgreSQL: graphexec's PostgresStore beside LangGraph's AsyncPostgresSaver.

    python benches/postgres.py [--reps 5] [--quick] [--dsn postgresql://...] [--baseline PATH]

The server comes from ``--dsn``, else ``GRAPHEXEC_TEST_PG``, else the local default
(``postgresql://postgres@127.0.0.1:5432/postgres``). The script creates a database of its own
(``graphexec_bench_<random>``) and drops it at the end; every rep of either library starts on
a fresh, empty Postgres schema (its tables created outside the timed region), as the SQLite
workloads start on a fresh file. One warm-up rep per library, then ``--reps`` measured reps,
alternating the two; medians [min-max] in one table. The workloads are those of
BENCHMARKS.md (W2: the 200-node chain with a checkpoint after every step, sync durability;
W5: the approval round trip), with the graphs of gx_workloads.py and lg_workloads.py.

``--baseline PATH``: also run graphexec's reps against another checkout (e.g. a worktree of
``main`` before a change), each in a process of its own with that checkout first on
``PYTHONPATH``, alternating with the others: before and after in one run, one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _common
import psycopg
from psycopg.conninfo import make_conninfo

import graphexec as gx

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
Rep = Callable[[str], Awaitable[dict[str, float]]]


def _schema(conninfo: str) -> str:
    name = f"b_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return name


# ---------------------------------------------------------------- graphexec


async def gx_w2(dsn: str) -> dict[str, float]:
    import gx_workloads as g

    store = gx.PostgresStore(dsn, schema=_schema(dsn))
    ex = g._executor(store, "sync")
    await g._open(store)
    runs = _common.count("W2")
    graph = g.counter_chain()
    results = []
    t0 = time.perf_counter()
    for k in range(runs):
        results.append(await ex.execute(graph, {"n": 0}, trace_id=f"w2-{k}"))
    dt = time.perf_counter() - t0
    assert all(r.state["n"] == _common.CHAIN for r in results)
    await store.aclose()
    steps = runs * _common.CHAIN
    return {"us_per_step": dt / steps * 1e6, "checkpoints_per_s": steps / dt}


async def gx_w5(dsn: str) -> dict[str, float]:
    import gx_workloads as g

    store = gx.PostgresStore(dsn, schema=_schema(dsn))
    await g._open(store)
    return await g._w5(g._executor(store), store)


# ---------------------------------------------------------------- LangGraph


async def lg_w2(dsn: str) -> dict[str, float]:
    import lg_workloads as lg
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    conninfo = make_conninfo(dsn, options=f"-c search_path={_schema(dsn)}")
    runs = _common.count("W2")
    outs = []
    async with AsyncPostgresSaver.from_conn_string(conninfo) as saver:
        await saver.setup()
        graph = lg.counter_chain().compile(checkpointer=saver)
        cfgs = [lg._cfg(f"w2-{k}") for k in range(runs)]
        t0 = time.perf_counter()
        for cfg in cfgs:
            outs.append(await graph.ainvoke({"n": 0}, cfg, durability="sync"))
        dt = time.perf_counter() - t0
    assert all(o["n"] == _common.CHAIN for o in outs)
    steps = runs * _common.CHAIN
    return {"us_per_step": dt / steps * 1e6, "checkpoints_per_s": steps / dt}


async def lg_w5(dsn: str) -> dict[str, float]:
    import lg_workloads as lg
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from langgraph.types import Command

    conninfo = make_conninfo(dsn, options=f"-c search_path={_schema(dsn)}")
    cycles = _common.count("W5")
    waits, outs = [], []
    async with AsyncPostgresSaver.from_conn_string(conninfo) as saver:
        await saver.setup()
        graph = lg.approval_builder().compile(checkpointer=saver)
        cfgs = [lg._cfg(f"w5-{k}") for k in range(cycles)]
        t0 = time.perf_counter()
        for cfg in cfgs:
            first = await graph.ainvoke({"x": 0}, cfg)
            waits.append("__interrupt__" in first)
            outs.append(await graph.ainvoke(Command(resume="approve"), cfg))
        dt = time.perf_counter() - t0
    assert all(waits) and all(o.get("done") is True for o in outs)
    return {"ms_per_cycle": dt / cycles * 1e3}


WORKLOADS: dict[str, tuple[Rep, Rep]] = {"W2": (gx_w2, lg_w2), "W5": (gx_w5, lg_w5)}

# One graphexec rep in a process of its own, against the checkout first on PYTHONPATH.
CHILD = r"""
import asyncio, json, logging, os, sys
sys.path.insert(0, sys.argv[1])
import graphexec
assert graphexec.__file__.startswith(os.environ["PYTHONPATH"]), graphexec.__file__
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
import _common, postgres
_common.set_quick(sys.argv[4] == "1")
print(json.dumps(asyncio.run(getattr(postgres, sys.argv[2])(sys.argv[3]))))
"""


def baseline_rep(path: pathlib.Path, name: str) -> Rep:
    """``name`` (gx_w2, gx_w5) run with the graphexec of the checkout at ``path``."""

    async def rep(dsn: str) -> dict[str, float]:
        env = dict(os.environ, PYTHONPATH=str(path))
        args = [sys.executable, "-c", CHILD, str(HERE), name, dsn, "1" if _common._quick else "0"]
        # cwd: `python -c` puts the current directory first on sys.path.
        done = await asyncio.to_thread(
            subprocess.run, args, env=env, cwd=path, capture_output=True, text=True, check=True
        )
        result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    return rep


def _fmt(values: list[float]) -> str:
    med = statistics.median(values)
    text = f"{med:,.0f}" if med >= 100 else f"{med:.2f}"
    return f"{text} [{min(values):.4g}-{max(values):.4g}]"


async def main_async(dsn: str, reps: int, baseline: pathlib.Path | None = None) -> list[list[str]]:
    name = f"graphexec_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    bench_dsn = make_conninfo(dsn, dbname=name)
    head = ["workload", "metric", "graphexec median [min-max]"]
    if baseline is not None:
        head += ["baseline median [min-max]", "base/gx"]
    rows = [[*head, "LangGraph median [min-max]", "LG/gx"]]
    try:
        for workload, (gx_rep, lg_rep) in WORKLOADS.items():
            sides: list[tuple[str, Rep]] = [("gx", gx_rep), ("lg", lg_rep)]
            if baseline is not None:
                sides.insert(1, ("base", baseline_rep(baseline, gx_rep.__name__)))
            got: dict[str, dict[str, list[float]]] = {side: {} for side, _ in sides}
            for i in range(reps + 1):
                for side, rep in sides:
                    result = await rep(bench_dsn)
                    print(f"{workload} {side} rep {i}: {result}", file=sys.stderr)
                    if i == 0:
                        continue  # warm-up
                    for metric, value in result.items():
                        got[side].setdefault(metric, []).append(value)
            for metric, gv in got["gx"].items():
                row = [workload, metric, _fmt(gv)]
                g = statistics.median(gv)
                others = [("base", got["base"])] if baseline is not None else []
                for _side, figures in [*others, ("lg", got["lg"])]:
                    ov = figures.get(metric, [])
                    o = statistics.median(ov)
                    ratio = g / o if metric.endswith("_per_s") else o / g
                    row += [_fmt(ov), f"{ratio:.1f}x"]
                rows.append(row)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("GRAPHEXEC_TEST_PG", DEFAULT_DSN))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller inner loops")
    parser.add_argument(
        "--baseline", type=pathlib.Path, default=None, help="another checkout to compare"
    )
    args = parser.parse_args()
    _common.set_quick(args.quick)
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    t0 = time.perf_counter()
    baseline = None if args.baseline is None else args.baseline.resolve()
    rows = asyncio.run(main_async(args.dsn, args.reps, baseline))
    with psycopg.connect(args.dsn) as conn:
        server = conn.info.server_version
    from importlib import metadata

    print(
        f"graphexec {metadata.version('graphexec')} PostgresStore vs LangGraph "
        f"{metadata.version('langgraph')} AsyncPostgresSaver "
        f"(langgraph-checkpoint-postgres {metadata.version('langgraph-checkpoint-postgres')}); "
        f"PostgreSQL {server // 10000}.{server % 10000}, psycopg {psycopg.__version__}, "
        f"{os.cpu_count()} CPUs; {args.reps} reps after 1 warm-up; {time.perf_counter() - t0:.0f}s"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "LG/gx (base/gx): LangGraph's (the baseline's) median over graphexec's for times, "
        "graphexec's over theirs for rates (above 1: graphexec better)."
    )
    if baseline is not None:
        print(f"baseline: graphexec from {baseline}")


if __name__ == "__main__":
    main()
