"""Many runs in one process, and several processes, sharing one SQLite file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio

import graphexec as gx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from multi_worker import chain  # the worker module sits next to this file


async def test_many_concurrent_runs_share_one_store(tmp_path: Path) -> None:
    """Thirty runs checkpointing every step through one SQLiteStore all complete, and each
    restores to its own final state from a fresh store on the same file."""
    db = tmp_path / "shared.db"
    graph = chain(12)
    results: dict[str, gx.GraphResult] = {}
    async with gx.SQLiteStore(db) as store:
        ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))

        async def one(trace_id: str) -> None:
            results[trace_id] = await ex.execute(graph, {"log": []}, trace_id=trace_id)

        async with anyio.create_task_group() as tg:
            for r in range(30):
                tg.start_soon(one, f"t{r}")
    assert all(r.status == "completed" for r in results.values())
    async with gx.SQLiteStore(db) as reopened:
        ex = gx.GraphExecutor(store=reopened)
        for trace_id in results:
            saved = await ex.get_state(trace_id)
            assert ("completed", list(range(12))) == (saved.status, saved.state["log"])
            assert 13 == len(await ex.history(trace_id))  # start + one per step
        assert 30 == len(await ex.runs(status="completed"))


def test_several_processes_write_one_file(tmp_path: Path) -> None:
    """Three processes, each driving eight runs at once, write one SQLite file concurrently;
    every run's checkpoints are complete and restore to the right state."""
    db = tmp_path / "shared.db"
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "multi_worker.py"), str(db), f"p{p}", "8", "10"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(3)
    ]
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert 0 == proc.returncode, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    async def check() -> None:
        async with gx.SQLiteStore(db) as store:
            ex = gx.GraphExecutor(store=store)
            runs = await ex.runs(limit=1000)
            assert 24 == len(runs)
            for run in runs:
                saved = await ex.get_state(run.trace_id)
                assert ("completed", list(range(10))) == (saved.status, saved.state["log"])

    anyio.run(check)
