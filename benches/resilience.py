"""The cost of the resilience machinery on W1 (a 200-node chain, no store) when no node fails.

    python benches/resilience.py [--reps 7] [--baseline /path/to/other/checkout]

Variants (each rep a fresh subprocess, variants alternating, so a noisy neighbour hits all):

- ``plain``: W1 as in BENCHMARKS.md (no node declares any resilience setting);
- ``retry``: every node with ``retry=gx.Retry(attempts=3)`` (the attempt loop runs, nothing
  fails);
- ``retry+timeout``: also ``timeout=60`` (a cancel scope per attempt);
- ``breaker``: ``breaker=gx.CircuitBreaker()`` on every node;
- ``baseline``: with ``--baseline``, W1 ``plain`` run against another checkout's graphexec
  (e.g. ``main`` before the resilience work): the cost the machinery adds to nodes that do not
  use it.

Prints one table: median us/step [min-max] and the ratio to ``plain``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHAIN = 200
RUNS = 100

CHILD = r"""
import asyncio, itertools, json, sys, time, logging
import graphexec as gx
variant, chain, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
kw = {
    "plain": {}, "baseline": {},
    "retry": {"retry": gx.Retry(attempts=3)} if variant == "retry" else {},
    "retry+timeout": {"retry": gx.Retry(attempts=3), "timeout": 60.0}
    if variant == "retry+timeout" else {},
    "breaker": {"breaker": gx.CircuitBreaker()} if variant == "breaker" else {},
}[variant]
def incr(s):
    return {"n": s["n"] + 1}
async def node(s):
    return {"n": s["n"] + 1}
b = gx.GraphBuilder("w1-chain")
names = [f"n{i}" for i in range(chain)]
for name in names:
    b.node(name, node, **kw)
for a, c in itertools.pairwise(names):
    b.edge(a, c)
graph = b.start(names[0]).end(names[-1]).build()
async def main():
    ex = gx.GraphExecutor(max_steps=100_000)
    for _ in range(10):
        await ex.execute(graph, {"n": 0})
    t0 = time.perf_counter()
    for _ in range(runs):
        r = await ex.execute(graph, {"n": 0})
    dt = time.perf_counter() - t0
    assert r.state["n"] == chain
    print(json.dumps(dt / (runs * chain) * 1e6))
asyncio.run(main())
"""


def one(variant: str, path: Path) -> float:
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, variant, str(CHAIN), str(RUNS)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    variants = ["plain", "retry", "retry+timeout", "breaker"]
    paths = dict.fromkeys(variants, ROOT)
    if args.baseline is not None:
        variants.insert(1, "baseline")
        paths["baseline"] = args.baseline.resolve()
    figures: dict[str, list[float]] = {v: [] for v in variants}
    for _rep, v in itertools.product(range(args.reps), variants):
        figures[v].append(one(v, paths[v]))
    plain = statistics.median(figures["plain"])
    print(f"W1 ({CHAIN}-node chain, no store, nothing fails): {args.reps} reps, us/step")
    print(f"{'variant':<15} {'median [min-max]':<24} vs plain")
    print(f"{'-' * 15} {'-' * 24} -------")
    for v in variants:
        xs = figures[v]
        med = statistics.median(xs)
        label = f"{med:.2f} [{min(xs):.2f}-{max(xs):.2f}]"
        print(f"{v:<15} {label:<24} {med / plain - 1:+.1%}")


if __name__ == "__main__":
    main()
