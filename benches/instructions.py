"""Instructions per step (or per run) of W1, W2 (event log on and off) and W4, counted by
valgrind's callgrind: a figure the machine's load does not move, for A/B comparisons of
checkouts on a shared machine where wall-clock times vary by 30% and more.

    python benches/instructions.py                                   # this checkout
    python benches/instructions.py --baseline /path/to/other/checkout --baseline /another
    python benches/instructions.py --only W1,W4 --runs 10

Each figure is (instructions of a process that runs the workload N+1 times) minus (the same
process running it once), over N runs: start-up, imports, graph building and the warm-up run
cancel out. A checkout is used through PYTHONPATH (its ``graphexec`` package and its
``checkpoints/`` schema), with this interpreter and its installed dependencies. Needs
``valgrind`` (Debian: ``apt-get install valgrind``); about a minute per figure.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

HERE = pathlib.Path(__file__).resolve().parent

WORKLOADS = {
    "W1": ("steps", 200, 20),
    "W2": ("steps", 200, 5),
    "W2-off": ("steps", 200, 5),
    "W4": ("runs", 1, 20),
}
"""Workload -> (unit, units per run, default runs)."""

DRIVER = r"""
import sys, pathlib, tempfile, logging
sys.path.insert(0, sys.argv[3])
import anyio, structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
import graphexec as gx
from gx_workloads import counter_chain, fanout_graph

async def main(which: str, n: int) -> None:
    if which in ("W1", "W4"):
        graph = counter_chain() if which == "W1" else fanout_graph(False)
        start = {"n": 0} if which == "W1" else {"items": []}
        ex = gx.GraphExecutor(max_steps=100_000)
        for _ in range(n + 1):
            await ex.execute(graph, dict(start))
        return
    store = gx.SQLiteStore(pathlib.Path(tempfile.mkdtemp()) / "w2.db")
    ex = gx.GraphExecutor(
        store=store,
        policy=gx.CheckpointPolicy(every_step=True),
        max_steps=100_000,
        record_events=which == "W2",
    )
    await store.get_run("prime")
    graph = counter_chain()
    for k in range(n + 1):
        await ex.execute(graph, {"n": 0}, trace_id=f"t{k}")
    await store.aclose()

anyio.run(main, sys.argv[1], int(sys.argv[2]))
"""


def count(tree: pathlib.Path | None, workload: str, runs: int) -> int:
    """Instructions callgrind counts for one process running ``workload`` runs+1 times."""
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with tempfile.TemporaryDirectory() as tmp:
        script = pathlib.Path(tmp) / "driver.py"
        script.write_text(DRIVER)
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/out",
                sys.executable,
                str(script),
                workload,
                str(runs),
                str(HERE),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_unit(tree: pathlib.Path | None, workload: str, runs: int) -> float:
    _unit, per_run, _runs = WORKLOADS[workload]
    with ThreadPoolExecutor(2) as pool:
        once, many = pool.map(lambda n: count(tree, workload, n), (0, runs))
    return (many - once) / (runs * per_run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", help="comma-separated workloads (default: W1,W2,W2-off,W4)")
    p.add_argument("--runs", type=int, help="measured runs per figure (default per workload)")
    p.add_argument(
        "--baseline",
        action="append",
        type=pathlib.Path,
        default=[],
        help="another checkout's root (repeatable), measured beside this one",
    )
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(WORKLOADS)
    for name in names:
        if name not in WORKLOADS:
            raise SystemExit(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    trees: list[tuple[str, pathlib.Path | None]] = [("this", None)]
    trees += [(str(b), b.resolve()) for b in args.baseline]
    rows = []
    for name in names:
        unit, _per_run, default_runs = WORKLOADS[name]
        runs = args.runs or default_runs
        figures = [per_unit(tree, name, runs) for _label, tree in trees]
        rows.append((name, f"instructions/{unit[:-1]}", figures))
    labels = [label for label, _tree in trees]
    print(f"{'workload':8}  {'unit':18}  " + "  ".join(f"{label:>14}" for label in labels))
    for name, unit, figures in rows:
        cells = [f"{figures[0]:>14,.0f}"]
        cells += [f"{f:>14,.0f}" for f in figures[1:]]
        print(f"{name:8}  {unit:18}  " + "  ".join(cells))
    if len(trees) > 1:
        print("\nthis / baseline:")
        for name, _unit, figures in rows:
            ratios = "  ".join(f"{figures[0] / f:.3f}" for f in figures[1:])
            print(f"{name:8}  {ratios}")
    w2 = {name: figures for name, _unit, figures in rows if name in ("W2", "W2-off")}
    if len(w2) == 2:
        print(
            "\nW2 event log on / off: "
            + "  ".join(
                f"{label} {on / off:.3f}"
                for label, on, off in zip(labels, w2["W2"], w2["W2-off"], strict=True)
            )
        )


if __name__ == "__main__":
    main()
