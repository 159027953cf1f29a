"""The cost of telemetry (graphexec.otel) on W1 (a 200-node chain, no store).

    python benches/telemetry.py [--reps 5] [--rounds 7] [--baseline /path/to/other/checkout]

Variants (run interleaved in each process, so a noisy neighbour hits them all alike):

- ``off``: W1 as in BENCHMARKS.md, ``GraphExecutor()`` without ``telemetry=``;
- ``noop``: ``telemetry=OpenTelemetry(NoOpTracerProvider())``: the API's no-op tracer (what
  an app that installs the extra but configures no SDK pays);
- ``sdk``: ``telemetry=OpenTelemetry(provider)`` with the SDK's ``TracerProvider`` and a
  ``SimpleSpanProcessor`` whose exporter drops every span (recording, no export cost);
- ``baseline``: with ``--baseline``, W1 ``off`` run (in its own processes, alternating with
  the others) against another checkout's graphexec (e.g. ``main`` before telemetry): what the
  hooks cost a run that does not use them.

Prints one table: median us/step [min-max] and the ratio to ``off``.
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
def telemetry(variant):
    if variant in ("off", "baseline"):
        return None
    from graphexec.otel import OpenTelemetry
    from opentelemetry.trace import NoOpTracerProvider
    if variant == "noop":
        return OpenTelemetry(NoOpTracerProvider())
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    return OpenTelemetry(provider)
async def node(s):
    return {"n": s["n"] + 1}
b = gx.GraphBuilder("w1-chain")
names = [f"n{i}" for i in range(chain)]
for name in names:
    b.node(name, node)
for a, c in itertools.pairwise(names):
    b.edge(a, c)
graph = b.start(names[0]).end(names[-1]).build()
async def main():
    executors = {v: gx.GraphExecutor(max_steps=100_000, **({"telemetry": t} if (t := telemetry(v)) else {})) for v in variants}
    out = {v: [] for v in variants}
    for ex in executors.values():
        for _ in range(5):
            await ex.execute(graph, {"n": 0})
    for _ in range(rounds):  # variants interleaved: a noisy neighbour hits them all
        for v, ex in executors.items():
            t0 = time.perf_counter()
            for _ in range(runs):
                r = await ex.execute(graph, {"n": 0})
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
    variants = ["off", "noop", "sdk"]
    figures: dict[str, list[float]] = {v: [] for v in variants}
    if args.baseline is not None:
        figures["baseline"] = []
    for _rep in range(args.reps):
        for v, us in child(variants, ROOT, args.rounds).items():
            figures[v].append(us)
        if args.baseline is not None:
            figures["baseline"].append(
                child(["baseline"], args.baseline.resolve(), args.rounds)["baseline"]
            )
    off = statistics.median(figures["off"])
    print(
        f"W1 ({CHAIN}-node chain, no store): {args.reps} processes x {args.rounds} "
        f"interleaved rounds x {RUNS} runs; us/step"
    )
    print(f"{'variant':<10} {'median [min-max]':<24} vs off")
    print(f"{'-' * 10} {'-' * 24} -------")
    for v, xs in figures.items():
        med = statistics.median(xs)
        label = f"{med:.2f} [{min(xs):.2f}-{max(xs):.2f}]"
        print(f"{v:<10} {label:<24} {med / off - 1:+.1%}")


if __name__ == "__main__":
    main()
