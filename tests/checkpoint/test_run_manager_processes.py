"""The run manager across real processes sharing one SQLite file.

Process A (``manager_worker.py``) starts a run with ``ex.start`` and consumes it with its own
``ex.events``; this test process is B: it tails the same trace with ``ex.events`` (polling the
store), decides the barrier with ``ex.decide``, kills A with SIGKILL while the run works or
while it waits, and finishes the run with ``ex.recover()``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import msgspec

import graphexec as gx

import manager_worker  # isort: skip  (a helper module next to this file)

WORKER = Path(__file__).with_name("manager_worker.py")


def start(db: Path, trace_id: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), trace_id, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    """A's stdout lines up to and including the first one starting with ``prefix``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            _out, err = proc.communicate()
            raise AssertionError(f"process A ended before {prefix!r}: {err}")
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines
    raise AssertionError(f"process A never printed {prefix!r}")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.communicate()
    assert proc.returncode == -9


def side_effects(db: Path) -> list[str]:
    path = Path(f"{db}.side")
    return path.read_text().split() if path.exists() else []


def wire(events: list[gx.GraphEvent]) -> list[str]:
    return [msgspec.json.encode(e).decode() for e in events]


def check_ids(events: list[gx.GraphEvent]) -> None:
    ids = [e.event_id for e in events]
    assert ids == sorted(set(ids)), "event ids must strictly increase"
    assert all(i > 0 for i in ids)


async def recover_until(ex: gx.GraphExecutor, trace_id: str) -> None:
    """recover() until it resumes ``trace_id``."""
    for _ in range(400):
        if trace_id in await ex.recover():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"recover() never resumed {trace_id!r}")


async def test_b_follows_and_decides_a_run_that_a_drives(tmp_path: Path) -> None:
    """B reads A's run from the start and live, decides its barrier from its own process, and
    sees exactly A's events: same ids, same order, same content."""
    db = tmp_path / "runs.db"
    proc = start(db, "conv-1", "run")
    try:
        read_until(proc, "STARTED")
        g = manager_worker.graph(f"{db}.side")
        seen: list[gx.GraphEvent] = []
        async with gx.SQLiteStore(db) as store:
            ex = gx.GraphExecutor(store=store, graphs=[g])
            with anyio.fail_after(30):
                async for event in ex.events("conv-1"):
                    seen.append(event)
                    if isinstance(event, gx.BarrierWaiting):
                        await ex.decide("conv-1", event.barrier_id, gx.Approve())
            state = await ex.get_state("conv-1")
        # Not communicate(): readline() may have buffered lines past "STARTED" already.
        assert proc.stdout is not None and proc.stderr is not None
        with proc.stdout, proc.stderr:
            out = proc.stdout.read()
            err = proc.stderr.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            kill(proc)
    assert proc.returncode == 0, err
    a_events = [
        line.removeprefix("EVENT ") for line in out.splitlines() if line.startswith("EVENT")
    ]
    assert wire(seen) == a_events
    assert isinstance(seen[0], gx.GraphStart) and isinstance(seen[-1], gx.GraphComplete)
    assert any(isinstance(e, gx.Custom) for e in seen)
    check_ids(seen)
    assert state.status == "completed"
    assert side_effects(db) == ["charge", "send"]


async def test_a_killed_while_the_run_works_b_recovers_it(tmp_path: Path) -> None:
    """SIGKILL while a node runs: B's recover() finishes the run; the side-effecting node that a
    checkpoint covered does not run again; B's tail has every event, ids never reused."""
    db = tmp_path / "runs.db"
    proc = start(db, "conv-2", "hang")
    try:
        a_lines = read_until(proc, "SLOW")
    finally:
        kill(proc)
    a_events = [line.removeprefix("EVENT ") for line in a_lines if line.startswith("EVENT")]
    g = manager_worker.graph(f"{db}.side")
    seen: list[gx.GraphEvent] = []
    async with (
        gx.SQLiteStore(db) as store,
        gx.GraphExecutor(store=store, graphs=[g], decision_poll_interval=0.05) as ex,
    ):
        assert (await store.get_run("conv-2")) is not None
        # A's lease lasts an hour, but A's process is gone (same host): the first recover()
        # takes the run at once.
        assert await ex.recover() == ["conv-2"]
        with anyio.fail_after(30):
            async for event in ex.events("conv-2"):
                seen.append(event)
                if isinstance(event, gx.BarrierWaiting):
                    await ex.decide("conv-2", event.barrier_id, gx.Approve())
        state = await ex.get_state("conv-2")
    assert state.status == "completed"
    assert state.state["sent"] is True
    check_ids(seen)
    # What A recorded before the kill is a prefix of what A showed its consumer (A may have
    # shown events it never wrote; their ids are not reused: B's driver has segment 2).
    first_run = [e for e in seen if e.event_id >> 32 == 1]
    assert wire(first_run) == a_events[: len(first_run)]
    assert {e.event_id >> 32 for e in seen} == {1, 2}
    assert isinstance(seen[-1], gx.GraphComplete)
    assert side_effects(db) == ["charge", "send"]  # charge was checkpointed: not run again


async def test_a_killed_while_the_run_waits_b_decides_and_recovers_it(tmp_path: Path) -> None:
    """SIGKILL while the run waits at its barrier: B decides through the store, recover()
    resumes the run (its decision arrived) and finishes it; nothing runs twice."""
    db = tmp_path / "runs.db"
    proc = start(db, "conv-3", "run")
    try:
        a_lines = read_until(proc, "WAITING")
    finally:
        kill(proc)
    barrier_id = a_lines[-1].split()[1]
    g = manager_worker.graph(f"{db}.side")
    async with (
        gx.SQLiteStore(db) as store,
        gx.GraphExecutor(store=store, graphs=[g], decision_poll_interval=0.05) as ex,
    ):
        assert (await ex.get_state("conv-3")).status == "waiting"
        assert await ex.recover() == []  # waiting, no decision yet: nothing to drive
        await ex.decide("conv-3", barrier_id, gx.Approve())
        await recover_until(ex, "conv-3")
        with anyio.fail_after(30):
            seen = [e async for e in ex.events("conv-3")]
        state = await ex.get_state("conv-3")
    assert state.status == "completed"
    check_ids(seen)
    a_events = [line.removeprefix("EVENT ") for line in a_lines if line.startswith("EVENT")]
    # A committed its BarrierWaiting before showing it: everything A showed is recorded.
    assert wire([e for e in seen if e.event_id >> 32 == 1]) == a_events
    resolved = [e for e in seen if isinstance(e, gx.BarrierResolved)]
    assert [(e.barrier_id, e.decision) for e in resolved] == [(barrier_id, "approve")]
    assert side_effects(db) == ["charge", "send"]
