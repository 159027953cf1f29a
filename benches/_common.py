"""Helpers shared by the graphexec and LangGraph workloads (see /work/shared/BENCHMARKS.md).

Nothing in here runs inside a timed region except `time.perf_counter`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import sqlite3
import subprocess
import sys
import tempfile
import time

CHAIN = 200  # nodes in the W1/W2/W3 chain
FANOUT = 100  # branches in W4

# Repetitions *inside* one rep. `--quick` shrinks them (metrics are per step / per run / per
# cycle, so the figures stay comparable, only noisier).
_FULL = {"W1": 20, "W2": 5, "W4": 20, "W4-sleep": 20, "W5": 100, "MEM": 10_000}
_QUICK = {"W1": 4, "W2": 1, "W4": 5, "W4-sleep": 5, "W5": 20, "MEM": 2_000}
_quick = False


def set_quick(on: bool) -> None:
    global _quick
    _quick = on


def count(workload: str) -> int:
    return (_QUICK if _quick else _FULL)[workload]


def entry(i: int) -> str:
    """The deterministic 1 KiB string of BENCHMARKS.md."""
    return "".join(hashlib.sha256(f"{i}:{j}".encode()).hexdigest() for j in range(16))


@functools.cache
def entries(n: int = CHAIN + 1) -> tuple[str, ...]:
    """entry(0) .. entry(n-1), built once, before any timing."""
    return tuple(entry(i) for i in range(n))


def fresh_dir(tmp: pathlib.Path, prefix: str) -> pathlib.Path:
    tmp.mkdir(parents=True, exist_ok=True)
    return pathlib.Path(tempfile.mkdtemp(prefix=prefix + "-", dir=tmp))


def disk_bytes(db: pathlib.Path) -> int:
    """Bytes of the SQLite file plus its WAL (the WAL is usually gone once the last
    connection has closed, since SQLite checkpoints and deletes it)."""
    total = 0
    for p in (db, db.with_name(db.name + "-wal")):
        if p.exists():
            total += p.stat().st_size
    return total


def sqlite_blob_bytes(db: pathlib.Path, queries: list[str]) -> int:
    """Sum of `SELECT sum(length(..))` queries on a closed database (outside timing)."""
    con = sqlite3.connect(db)
    try:
        return sum(int(con.execute(q).fetchone()[0] or 0) for q in queries)
    finally:
        con.close()


def time_subprocess(code: str) -> float:
    """Wall ms of a fresh `python -c code` (the same interpreter as the harness)."""
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    return (time.perf_counter() - t0) * 1e3


def import_figures(code: str) -> dict[str, float]:
    bare = time_subprocess("pass")
    imp = time_subprocess(code)
    return {"import_ms": imp, "bare_python_ms": bare, "import_minus_bare_ms": imp - bare}
