"""The cost of the resilience machinery on W1 (a 200-node chain, no store) when no node fails.

    python benches/resilience.py [--reps 5] [--rounds 7] [--baseline /path/to/other/checkout]

Variants (run interleaved in each process, so a noisy neighbour hits them all alike):

- ``plain``: W1 as in BENCHMARKS.md (no node declares any resilience setting);
- ``retry``: every node with ``retry=gx.Retry(attempts=3)`` (the attempt loop runs, nothing
  fails);
- ``retry+timeout``: also ``timeout=60`` (a cancel scope per attempt);
- ``breaker``: ``breaker=gx.CircuitBreaker()`` on every node;
- ``baseline``: with ``--baseline``, W1 ``plain`` run (in its own processes, alternating with
  the others) against another checkout's graphexec
  (e.g. ``main`` before the resilience work): the cost the machinery adds to nodes that do not
  use it.

Prints one table: median us/step [min-max] and the ratio to ``plain``.
"""

from __future__ import annotations

import argparse
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
import asyncio, itertools, json, statistics, sys, time
import graphexec as gx
variants, chain, runs, rounds = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def settings(variant):
    if variant == "retry":
        return {"retry": gx.Retry(attempts=3)}
    if variant == "retry+timeout":
        return {"retry": gx.Retry(attempts=3), "timeout": 60.0}
    if variant == "breaker":
        return {"breaker": gx.CircuitBreaker()}
    return {}
async def node(s):
    return {"n": s["n"] + 1}
def build(variant):
    b = gx.GraphBuilder("w1-chain")
    names = [f"n{i}" for i in range(chain)]
    for name in names:
        b.node(name, node, **settings(variant))
    for a, c in itertools.pairwise(names):
        b.edge(a, c)
    return b.start(names[0]).end(names[-1]).build()
graphs = {v: build(v) for v in variants}
async def main():
    ex = gx.GraphExecutor(max_steps=100_000)
    out = {v: [] for v in variants}
    for g in graphs.values():
        for _ in range(5):
            await ex.execute(g, {"n": 0})
    for _ in range(rounds):  # variants interleaved: a noisy neighbour hits them all
        for v, g in graphs.items():
            t0 = time.perf_counter()
            for _ in range(runs):
                r = await ex.execute(g, {"n": 0})
            out[v].append((time.perf_counter() - t0) / (runs * chain) * 1e6)
            assert r.state["n"] == chain
    print(json.dumps({v: statistics.median(xs) for v, xs in out.items()}))
asyncio.run(main())
"""


def child(variants: list[str], path: Path, rounds: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(variants), str(CHAIN), str(RUNS), str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="processes per checkout")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per process")
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    variants = ["plain", "retry", "retry+timeout", "breaker"]
    figures: dict[str, list[float]] = {v: [] for v in variants}
    if args.baseline is not None:
        figures["baseline"] = []
    for _rep in range(args.reps):
        for v, us in child(variants, ROOT, args.rounds).items():
            figures[v].append(us)
        if args.baseline is not None:
            figures["baseline"].append(
                child(["plain"], args.baseline.resolve(), args.rounds)["plain"]
            )
    plain = statistics.median(figures["plain"])
    print(
        f"W1 ({CHAIN}-node chain, no store, nothing fails): {args.reps} processes x "
        f"{args.rounds} interleaved rounds x {RUNS} runs; us/step"
    )
    print(f"{'variant':<15} {'median [min-max]':<24} vs plain")
    print(f"{'-' * 15} {'-' * 24} -------")
    for v, xs in figures.items():
        med = statistics.median(xs)
        label = f"{med:.2f} [{min(xs):.2f}-{max(xs):.2f}]"
        print(f"{v:<15} {label:<24} {med / plain - 1:+.1%}")


if __name__ == "__main__":
    main()
