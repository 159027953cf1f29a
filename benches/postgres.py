"""W2 and W5 on PostgreSQL: graphexec's PostgresStore beside LangGraph's AsyncPostgresSaver.

    python benches/postgres.py [--reps 5] [--quick] [--dsn postgresql://...]

The server comes from ``--dsn``, else ``GRAPHEXEC_TEST_PG``, else the local default
(``postgresql://postgres@127.0.0.1:5432/postgres``). The script creates a database of its own
(``graphexec_bench_<random>``) and drops it at the end; every rep of either library starts on
a fresh, empty Postgres schema (its tables created outside the timed region), as the SQLite
workloads start on a fresh file. One warm-up rep per library, then ``--reps`` measured reps,
alternating the two; medians [min-max] in one table. The workloads are those of
BENCHMARKS.md (W2: the 200-node chain with a checkpoint after every step, sync durability;
W5: the approval round trip), with the graphs of gx_workloads.py and lg_workloads.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
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


def _fmt(values: list[float]) -> str:
    med = statistics.median(values)
    text = f"{med:,.0f}" if med >= 100 else f"{med:.2f}"
    return f"{text} [{min(values):.4g}-{max(values):.4g}]"


async def main_async(dsn: str, reps: int) -> list[list[str]]:
    name = f"graphexec_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    bench_dsn = make_conninfo(dsn, dbname=name)
    rows = [
        ["workload", "metric", "graphexec median [min-max]", "LangGraph median [min-max]", "LG/gx"]
    ]
    try:
        for workload, (gx_rep, lg_rep) in WORKLOADS.items():
            got: dict[str, dict[str, list[float]]] = {"gx": {}, "lg": {}}
            for i in range(reps + 1):
                for side, rep in (("gx", gx_rep), ("lg", lg_rep)):
                    result = await rep(bench_dsn)
                    print(f"{workload} {side} rep {i}: {result}", file=sys.stderr)
                    if i == 0:
                        continue  # warm-up
                    for metric, value in result.items():
                        got[side].setdefault(metric, []).append(value)
            for metric, gv in got["gx"].items():
                lv = got["lg"].get(metric, [])
                g, lg = statistics.median(gv), statistics.median(lv)
                ratio = g / lg if metric.endswith("_per_s") else lg / g
                rows.append([workload, metric, _fmt(gv), _fmt(lv), f"{ratio:.1f}x"])
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("GRAPHEXEC_TEST_PG", DEFAULT_DSN))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller inner loops")
    args = parser.parse_args()
    _common.set_quick(args.quick)
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    t0 = time.perf_counter()
    rows = asyncio.run(main_async(args.dsn, args.reps))
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
        "LG/gx: LangGraph's median over graphexec's for times, graphexec's over LangGraph's "
        "for rates (above 1: graphexec better)."
    )


if __name__ == "__main__":
    main()
