"""How long ``graphexec --help`` takes, from process start to exit (the target: < 300 ms).

Runs each command ``--reps`` times in a fresh process (after ``--warmup`` untimed runs, so the
files are in the page cache, as they are for someone typing commands), hyperfine-style, and
prints min / median / p90 / max in milliseconds, next to the floor (the interpreter alone)
and ``import graphexec``. Then the modules that cost most in one ``--help`` run
(``python -X importtime``, cumulative). Needs the ``cli`` extra installed.

    .venv/bin/python benches/cli_startup.py            # 30 reps
    .venv/bin/python benches/cli_startup.py --reps 100
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
SCRIPT = str(Path(PY).parent / "graphexec")

COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass (floor)", [PY, "-c", "pass"]),
    ("python -c 'import graphexec'", [PY, "-c", "import graphexec"]),
    ("graphexec --help", [SCRIPT, "--help"]),
    ("graphexec runs --help", [SCRIPT, "runs", "--help"]),
    ("python -m graphexec --help", [PY, "-m", "graphexec", "--help"]),
]


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def top_imports(argv: list[str], n: int) -> list[tuple[str, float]]:
    proc = subprocess.run(
        [PY, "-X", "importtime", *argv[1:]] if argv[0] == PY else [PY, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self, cumulative, name = line[len("import time:") :].split("|")
        rows.append((name[1:], int(cumulative) / 1000))
    # Depth 0 and 1: `graphexec.cli` at the top holds `graphexec` (the package) one level down.
    shallow = [(name.strip(), ms) for name, ms in rows if not name.startswith("    ")]
    return sorted(shallow, key=lambda r: -r[1])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which(SCRIPT):
        sys.exit(f"{SCRIPT} not found: install the cli extra (pip install -e '.[cli]')")
    print(f"{args.reps} runs each after {args.warmup} warm-up runs; milliseconds, wall clock")
    print(f"{'command':<32} {'min':>7} {'median':>7} {'p90':>7} {'max':>7}")
    for label, argv in COMMANDS:
        for _ in range(args.warmup):
            time_once(argv)
        times = [time_once(argv) for _ in range(args.reps)]
        print(
            f"{label:<32} {min(times):7.1f} {statistics.median(times):7.1f} "
            f"{percentile(times, 0.9):7.1f} {max(times):7.1f}"
        )
    print()
    print("graphexec --help, imports (two levels deep) by cumulative time (python -X importtime):")
    for name, ms in top_imports([SCRIPT, "--help"], 8):
        print(f"  {name:<30} {ms:7.1f} ms")


if __name__ == "__main__":
    main()
