"""Run the BENCHMARKS.md workloads for graphexec and its peers side by side, in one process.

    python benches/run.py [--only W1,W4] [--reps 5] [--no-langgraph] [--no-peers] [--quick]
                          [--json out.json]

Peers: LangGraph (every workload), Apache Burr (W1-W4, W7) and pydantic-graph (W1, W4, W7; it
has no persistence for W2/W3). For each workload: one warm-up rep per library, then N measured
reps, alternating the libraries (graphexec, LangGraph, Burr, pydantic-graph, graphexec, ...);
then one table of medians [min-max], each peer's ratio peer/graphexec and the target of
BENCHMARKS.md (targets are stated against LangGraph). A workload that raises is reported as an
error; the others still run. A peer that is not installed or does not support a workload says
so in its column. "MEM" (graphexec only) is a long run with every-step checkpoints under
tracemalloc.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import inspect
import json
import logging
import os
import pathlib
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import _common

ORDER = ["W1", "W2", "W2-async", "W3", "W4", "W4-sleep", "W5", "W5-nostore", "W6", "W7", "MEM"]
GX, LG, BURR, PG = "graphexec", "langgraph", "burr", "pydantic-graph"
# (side, column title, ratio title, workload module, what it supports when it cannot be imported)
PEERS = [
    (LG, "LangGraph", "LG/gx", "lg_workloads"),
    (BURR, "Burr", "Burr/gx", "burr_workloads"),
    (PG, "pydantic-graph", "PG/gx", "pg_workloads"),
]
PEER_SUPPORT = {
    LG: set(ORDER) - {"W2-async", "W5-nostore", "MEM"},
    BURR: {"W1", "W2", "W3", "W4", "W4-sleep", "W7"},
    PG: {"W1", "W2", "W3", "W4", "W4-sleep", "W7"},
}
# A graphexec-only variant compared with a LangGraph workload (LangGraph's default durability
# with a checkpointer is already "async").
LG_STANDIN = {"W2-async": "W2"}
NO_RATIO = {"bare_python_ms", "steps"}


# ---------------------------------------------------------------- targets (BENCHMARKS.md)


@dataclass
class Ctx:
    gx: dict[str, dict[str, float]]  # workload -> metric -> graphexec median


@dataclass
class Target:
    text: str
    check: Callable[[float, float | None, Ctx], bool | None]


def _ratio_and(min_ratio: float, limit: float | None = None) -> Callable[..., bool | None]:
    def check(g: float, lg: float | None, ctx: Ctx) -> bool | None:
        ok_abs = None if limit is None else g <= limit
        if lg is None:
            return ok_abs
        ok_ratio = lg / g >= min_ratio if g > 0 else False
        return ok_ratio and (ok_abs is not False)

    return check


def _w2_async(g: float, lg: float | None, ctx: Ctx) -> bool | None:
    w1 = ctx.gx.get("W1", {}).get("us_per_step")
    return None if w1 is None else g <= 2 * w1


TARGETS: dict[tuple[str, str], Target] = {
    ("W1", "us_per_step"): Target(">=20x LG (about 10 us)", _ratio_and(20)),
    ("W2", "us_per_step"): Target(">=10x LG and <150 us", _ratio_and(10, 150)),
    ("W2-async", "us_per_step"): Target("close to gx W1 (<=2x)", _w2_async),
    ("W3", "disk_bytes_per_step"): Target(">=50x fewer and <2,500 B", _ratio_and(50, 2500)),
    ("W4", "ms_per_run"): Target(">=5x LG", _ratio_and(5)),
    ("W4-sleep", "ms_per_run"): Target("<=13 ms (10 ms limit + 3)", lambda g, lg, c: g <= 13),
    ("W5", "ms_per_cycle"): Target(">=5x LG", _ratio_and(5)),
    ("W6", "load_ms"): Target(">=5x LG", _ratio_and(5)),
    ("W6", "load_step_ms"): Target(">=5x LG", _ratio_and(5)),
    ("W7", "import_ms"): Target("<150 ms and >=5x LG", _ratio_and(5, 150)),
    ("MEM", "excess_bytes"): Target("flat: <=1 MiB beyond state", lambda g, lg, c: g <= 2**20),
    ("MEM", "unexplained_bytes"): Target("<=1 MiB beyond state+log", lambda g, lg, c: g <= 2**20),
}


# ---------------------------------------------------------------- running


@dataclass
class SideResult:
    values: dict[str, list[float]] = field(default_factory=dict)
    warmup: dict[str, float] | None = None
    error: str | None = None
    skipped: str | None = None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_rep(fn: Callable[[pathlib.Path], Any], base: pathlib.Path, timeout: float) -> dict:
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="rep-", dir=base))
    try:
        gc.collect()
        if inspect.iscoroutinefunction(fn):

            async def bounded() -> dict:
                async with asyncio.timeout(timeout):
                    return await fn(tmp)

            return asyncio.run(bounded())
        return fn(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "TimeoutError: rep did not finish in time"
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def attempt(name: str, side: str, label: str, fn: Callable, base: pathlib.Path, args) -> dict:
    t0 = time.perf_counter()
    out = run_rep(fn, base, args.rep_timeout)
    shown = ", ".join(f"{k}={_fmt(v)}" for k, v in out.items())
    log(f"  {name:<9} {side:<9} {label:<7} {shown}  ({time.perf_counter() - t0:.1f}s)")
    return out


def run_workload(
    name: str, sides: dict[str, Callable | str], reps: int, warmups: int, base, args
) -> dict[str, SideResult]:
    res: dict[str, SideResult] = {}
    order = list(sides)
    live: list[str] = []
    for side, fn in sides.items():
        res[side] = SideResult()
        if isinstance(fn, str):
            res[side].skipped = fn
        else:
            live.append(side)

    def one(side: str, label: str) -> dict | None:
        try:
            return attempt(name, side, label, sides[side], base, args)
        except Exception as exc:  # noqa: BLE001 - report, never crash the table
            res[side].error = _describe(exc)
            log(f"  {name:<9} {side:<9} {label:<7} error: {res[side].error}")
            log("".join(traceback.format_exception(exc)[-6:]).rstrip())
            live.remove(side)
            return None

    for w in range(warmups):
        for side in order:
            if side not in live:
                continue
            out = one(side, f"warm{w + 1}" if warmups > 1 else "warm-up")
            if out is not None:
                res[side].warmup = out
    for r in range(reps):
        for side in order:  # alternate: graphexec, LangGraph, Burr, pydantic-graph, graphexec, ...
            if side not in live:
                continue
            out = one(side, f"rep {r + 1}")
            if out is not None:
                for k, v in out.items():
                    res[side].values.setdefault(k, []).append(float(v))
    return res


# ---------------------------------------------------------------- table


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 10_000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def _cell(vals: list[float] | None) -> str:
    if not vals:
        return ""
    med = statistics.median(vals)
    if len(vals) == 1:
        return _fmt(med)
    return f"{_fmt(med)} [{_fmt(min(vals))}-{_fmt(max(vals))}]"


def _ratio(metric: str, g: float, lg: float) -> str:
    if metric in NO_RATIO or g <= 0 or lg <= 0:
        return "-"
    bytes_metric = "bytes" in metric
    r = lg / g
    if r >= 1:
        return f"{r:.1f}x " + ("fewer bytes" if bytes_metric else "faster")
    return f"{1 / r:.1f}x " + ("more bytes" if bytes_metric else "slower")


def _short(r: SideResult) -> str:
    if r.error:
        return "error: " + r.error.split(":")[0] + " (see below)"
    return (r.skipped or "-")[:40]


def build_table(results: dict[str, dict[str, SideResult]]) -> list[list[str]]:
    ctx = Ctx(gx={})
    for name, sides in results.items():
        g = sides.get(GX)
        if g:
            ctx.gx[name] = {k: statistics.median(v) for k, v in g.values.items() if v}
    rows = [["workload", "metric", "graphexec median [min-max]"]]
    for _side, title, ratio_title, _mod in PEERS:
        rows[0] += [f"{title} median [min-max]", ratio_title]
    rows[0] += ["target", "met"]
    for name, sides in results.items():
        g = sides.get(GX, SideResult())
        lg_name = LG_STANDIN.get(name, name)
        peers: list[SideResult] = []
        for side, *_ in PEERS:
            if side == LG and lg_name != name:
                peers.append(results.get(lg_name, {}).get(LG) or SideResult())
            else:
                peers.append(sides.get(side) or SideResult())
        lgr = peers[0]
        label = name + (f" (LG: {lg_name})" if lg_name != name and lgr.values else "")
        metrics = list(g.values)
        for r in peers:
            metrics += [m for m in r.values if m not in metrics]
        if not metrics:
            row = [name, "-", _short(g)]
            for r in peers:
                row += [_short(r), ""]
            rows.append([*row, "", ""])
            continue
        for m in metrics:
            gv = g.values.get(m)
            gm = statistics.median(gv) if gv else None
            row = [label, m, _cell(gv) or _short(g)]
            for r in peers:
                pv = r.values.get(m)
                pm = statistics.median(pv) if pv else None
                ratio = _ratio(m, gm, pm) if gm is not None and pm is not None else "-"
                row += [_cell(pv) or _short(r), ratio]
            lv = lgr.values.get(m)
            lm = statistics.median(lv) if lv else None
            tgt = TARGETS.get((name, m))
            met = ""
            if tgt is not None and gm is not None:
                ok = tgt.check(gm, lm, ctx)
                met = "n/a" if ok is None else ("met" if ok else "NOT met")
            rows.append([*row, tgt.text if tgt else "", met])
            label = ""
    return rows


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


# ---------------------------------------------------------------- main


def quiet_structlog(level: str) -> None:
    """graphexec logs through structlog and never configures it; structlog's default prints
    every info line to stdout, which would be timed. Configure it as an app would."""
    try:
        import structlog
    except ImportError:
        return
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", help="comma-separated workloads, e.g. W1,W4 (default: all)")
    p.add_argument("--reps", type=int, help="measured reps per library (default 5; quick: 2)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up reps per library (default 1)")
    p.add_argument("--no-langgraph", action="store_true", help="leave LangGraph out")
    p.add_argument("--no-peers", action="store_true", help="leave Burr and pydantic-graph out")
    p.add_argument("--quick", action="store_true", help="smoke run: fewer reps and sizes")
    p.add_argument("--json", type=pathlib.Path, help="write the raw numbers to this file")
    p.add_argument("--tmp", type=pathlib.Path, help="directory for the SQLite files")
    p.add_argument("--rep-timeout", type=float, default=300.0, help="seconds per rep")
    p.add_argument(
        "--log-level",
        default="warning",
        help="structlog level for graphexec's logs (default: warning; LangGraph logs nothing)",
    )
    args = p.parse_args(argv)

    reps = args.reps if args.reps is not None else (2 if args.quick else 5)
    _common.set_quick(args.quick)
    wanted = ORDER
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in ORDER]
        if unknown:
            p.error(f"unknown workload(s) {unknown}; choose from {ORDER}")

    for var in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        if os.environ.get(var, "").lower() in ("1", "true"):
            log(f"note: {var} is on; LangGraph runs would be traced (unfair); unset it.")

    quiet_structlog(args.log_level)
    gx_mod: Any = None
    gx_err = None
    try:
        import gx_workloads as gx_mod
    except Exception as exc:  # noqa: BLE001 - graphexec may be half-written
        gx_err = f"cannot import graphexec workloads: {_describe(exc)}"
        log(gx_err)
    peer_mods: dict[str, Any] = {}
    peer_notes: dict[str, str] = {}
    for side, title, _ratio_title, module in PEERS:
        if (side == LG and args.no_langgraph) or (side != LG and args.no_peers):
            peer_notes[side] = "not run"
            continue
        try:
            peer_mods[side] = importlib.import_module(module)
        except ImportError as exc:
            peer_notes[side] = "not installed"
            print(f"note: {title} {peer_notes[side]} ({_describe(exc)}); its column is empty.")

    base = pathlib.Path(tempfile.mkdtemp(prefix="graphexec-bench-", dir=args.tmp))
    results: dict[str, dict[str, SideResult]] = {}
    started = time.perf_counter()
    try:
        for name in wanted:
            log(f"{name}:")
            if name == "MEM":
                fn = gx_mod.mem if gx_mod is not None else (gx_err or "unavailable")
                results[name] = run_workload(name, {GX: fn}, 1, 0, base, args)
                continue
            gx_fn = gx_mod.WORKLOADS.get(name) if gx_mod is not None else None
            sides: dict[str, Callable | str] = {GX: gx_fn or gx_err or "not implemented"}
            for side, *_ in PEERS:
                if side in peer_mods:
                    fn = peer_mods[side].WORKLOADS.get(name)
                    if fn is not None:
                        sides[side] = fn
                elif name in PEER_SUPPORT[side]:
                    sides[side] = peer_notes[side]
            results[name] = run_workload(name, sides, reps, args.warmup, base, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    elapsed = time.perf_counter() - started

    print()
    print(
        f"graphexec {_version('graphexec')} vs LangGraph {_version('langgraph')} "
        f"(langgraph-checkpoint-sqlite {_version('langgraph-checkpoint-sqlite')}), "
        f"Burr {_version('burr')}, pydantic-graph {_version('pydantic-graph')}; "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs; {reps} reps after {args.warmup} warm-up"
        + (" (quick)" if args.quick else "")
        + f"; {elapsed:.0f}s"
    )
    print()
    print_table(build_table(results))
    print()
    print(
        "LG/gx, Burr/gx, PG/gx: the peer's median / graphexec's median (above 1: graphexec "
        "better). W2-async is compared with LangGraph's W2, whose default durability is already "
        "async."
    )
    for side, title, *_ in PEERS:
        if side in peer_notes:
            print(f"note: {title} {peer_notes[side]}.")
    errors = [
        f"  {name} {side}: {r.error}"
        for name, sides in results.items()
        for side, r in sides.items()
        if r.error
    ]
    if errors:
        print("errors (tracebacks on stderr):")
        print("\n".join(errors))

    if args.json:
        payload = {
            "meta": {
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "cpus": os.cpu_count(),
                "graphexec": _version("graphexec"),
                "langgraph": _version("langgraph"),
                "langgraph_checkpoint_sqlite": _version("langgraph-checkpoint-sqlite"),
                "burr": _version("burr"),
                "pydantic_graph": _version("pydantic-graph"),
                "reps": reps,
                "warmup": args.warmup,
                "quick": args.quick,
                "elapsed_s": elapsed,
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            "results": {
                name: {side: vars(r) for side, r in sides.items()}
                for name, sides in results.items()
            },
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
