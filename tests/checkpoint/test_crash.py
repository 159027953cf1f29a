"""Crash recovery with real processes: SIGKILL a worker mid-run, resume in a new process.

The worker (``crash_worker.py``) runs a 60-node chain on SQLite with a checkpoint after every
step; each node appends ``"<step> <node>"`` to a side file after its work. Each case kills it at
a different point (after a seeded number of side-file lines plus a seeded fraction of a step),
reads the committed checkpoints with a raw query, resumes in a new process and checks that the
final state equals an uninterrupted run's, that every node covered by a committed checkpoint
ran exactly once, and that at most the one interrupted node ran twice.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest

import graphexec as gx

WORKER = Path(__file__).with_name("crash_worker.py")
NODES = 60
NAMES = [f"n{i:02d}" for i in range(NODES)]
SEEDS = range(20)
KILL_AFTER_LINES = dict(
    zip(SEEDS, random.Random(2024).sample(range(1, NODES - 5), len(SEEDS)), strict=True)
)
"""Seed -> side-file lines to wait for before the kill: 20 distinct points along the chain."""


def start(db: Path, trace_id: str, mode: str) -> subprocess.Popen[str]:
    """Start the worker."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), trace_id, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    """Wait for the worker to exit cleanly; its RESULT line, decoded."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, out + err
    result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    return result


def expect_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """Read the worker's stdout up to a line starting with ``prefix``; return that line."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line.strip()
    proc.wait()
    assert proc.stderr is not None
    pytest.fail(f"worker exited ({proc.returncode}) before {prefix!r}: {proc.stderr.read()}")


def side_lines(db: Path) -> list[tuple[int, str]]:
    """The side file: one ``(step, node)`` per node execution that got past its work."""
    side = Path(f"{db}.side")
    if not side.exists():
        return []
    found = []
    for line in side.read_text(encoding="utf-8").splitlines():
        step, node = line.split(" ")
        found.append((int(step), node))
    return found


def committed(db: Path, trace_id: str) -> list[tuple[int, int, str, str]]:
    """``(seq, step, status, trigger)`` of every committed checkpoint, by a raw query."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT seq, step, status, trigger FROM checkpoints WHERE trace_id = ? ORDER BY seq",
            (trace_id,),
        ).fetchall()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The RESULT of the chain run to the end with no kill."""
    db = tmp_path_factory.mktemp("uninterrupted") / "runs.db"
    result = finish(start(db, "clean", "run"))
    assert result["status"] == "completed"
    assert side_lines(db) == [(i + 1, name) for i, name in enumerate(NAMES)]
    return result


@pytest.mark.parametrize("seed", SEEDS)
def test_sigkill_mid_chain_then_resume(
    tmp_path: Path, uninterrupted: dict[str, Any], seed: int
) -> None:
    """SIGKILL at a seeded point and resume in a new process: same state, no checkpointed rerun."""
    rng = random.Random(seed)
    db = tmp_path / "runs.db"
    trace_id = f"crash-{seed}"
    proc = start(db, trace_id, "run")
    try:
        expect_line(proc, "STARTED")
        target = KILL_AFTER_LINES[seed]
        deadline = time.monotonic() + 20
        while len(side_lines(db)) < target:
            assert proc.poll() is None, "the worker finished before the kill point"
            assert time.monotonic() < deadline, "the worker stalled"
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.006))  # somewhere within the next step
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -9

    rows = committed(db, trace_id)
    assert rows, "not even the start checkpoint was committed"
    assert rows[-1][2] == "running", "the run ended before the kill"
    covered = max(step for _seq, step, _status, _trigger in rows)
    before = side_lines(db)
    assert covered < NODES
    # Everything covered by a committed checkpoint ran; at most one node ran past it.
    assert {s for s, _ in before if s <= covered} == set(range(1, covered + 1))
    assert {s for s, _ in before if s > covered} <= {covered + 1}

    result = finish(start(db, trace_id, "resume"))
    assert result["status"] == "completed", result["error"]
    assert result["state"] == uninterrupted["state"] == {"log": NAMES}
    assert result["steps"] == uninterrupted["steps"] == NODES

    after = side_lines(db)
    assert all(node == NAMES[step - 1] for step, node in after)
    runs = Counter(node for _step, node in after)
    assert set(runs) == set(NAMES)
    for step, name in enumerate(NAMES, start=1):
        if step <= covered:
            assert runs[name] == 1, f"{name} (step {step}) was checkpointed but ran again"
    twice = [name for name, n in runs.items() if n > 1]
    assert twice in ([], [NAMES[covered]])
    assert max(runs.values()) <= 2
    history = committed(db, trace_id)
    assert history[-1][1:] == (NODES, "completed", "completion")
    assert [seq for seq, *_ in history] == list(range(1, len(history) + 1))


def test_sigkill_at_a_barrier_then_decide_from_another_process(tmp_path: Path) -> None:
    """Kill a run waiting at a barrier; a decision submitted through the store finishes it."""
    db = tmp_path / "runs.db"
    trace_id = "crash-barrier"
    proc = start(db, trace_id, "barrier")
    try:
        line = expect_line(proc, "WAITING ")
    finally:
        proc.kill()
        proc.communicate()
    barrier_id = line.removeprefix("WAITING ")
    assert barrier_id == "approve#1"
    last = committed(db, trace_id)[-1]
    assert last[2:] == ("waiting", "barrier_waiting")

    async def decide() -> None:
        async with gx.SQLiteStore(db) as store:
            await store.submit_decision(trace_id, barrier_id, gx.Approve())
            state = await gx.GraphExecutor(store=store).get_state(trace_id)
            assert state.pending_barrier is not None
            assert state.pending_barrier.barrier_id == barrier_id

    anyio.run(decide)

    result = finish(start(db, trace_id, "barrier-resume"))
    assert result["status"] == "completed"
    assert result["waited"] is False
    assert result["state"] == {
        "draft": "refund 42",
        "approve": {"decision": "approve", "reason": None, "by": "human"},
        "sent": True,
    }
    assert result["steps"] == 3
