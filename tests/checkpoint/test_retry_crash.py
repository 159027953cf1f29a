"""Resilience state in checkpoints, with real parts: a process SIGKILLed during a backoff
resumes with the retry budget it had left; a paused node is decided from another process;
a failed fan-out's successful branches are not run again on resume."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import graphexec as gx

from _resume_kit import Stores  # isort: skip

WORKER = Path(__file__).with_name("retry_worker.py")


def worker(db: Path, trace_id: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), trace_id, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_during_backoff_resumes_with_the_remaining_budget(tmp_path: Path) -> None:
    """Killed while waiting out the backoff after attempt 1, the run resumes in a new process
    at attempt 2 after the rest of that backoff (not a fresh wait), and gives up after
    attempt 4 in all: the node saw attempts 1, 2, 3, 4, never a restarted count."""
    db = tmp_path / "runs.db"
    proc = worker(db, "t-retry", "run")
    assert proc.stdout is not None
    try:
        line = next((ln for ln in proc.stdout if ln.startswith("BACKOFF")), "")
        assert line, proc.stderr.read() if proc.stderr else ""
        proc.kill()  # SIGKILL, during the 30 s backoff
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert ["1"] == Path(f"{db}.side").read_text().split()
    resumed = worker(db, "t-retry", "resume")
    out, err = resumed.communicate(timeout=60)
    assert 0 == resumed.returncode, err
    result: dict[str, Any] = json.loads(
        next(ln for ln in out.splitlines() if ln.startswith("RESULT ")).removeprefix("RESULT ")
    )
    assert ("completed", {"done": 4}) == (result["status"], result["state"])
    assert ["1", "2", "3", "4"] == Path(f"{db}.side").read_text().split()
    first, *rest = result["sleeps"]
    assert 0 < first <= 30.0  # what was left of the first backoff
    assert [60.0, 120.0] == rest


def test_sigkill_during_a_branch_backoff_keeps_the_other_branches_and_the_budget(
    tmp_path: Path,
) -> None:
    """Killed while one branch of a parallel node waits out its backoff, the resumed node
    does not run the branch that had finished, and the waiting branch goes on at attempt 2
    after the rest of its backoff."""
    db = tmp_path / "runs.db"
    proc = worker(db, "t-fan", "fan-run")
    assert proc.stdout is not None
    try:
        line = next((ln for ln in proc.stdout if ln.startswith("BACKOFF")), "")
        assert line, proc.stderr.read() if proc.stderr else ""
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert {"good-1", "flaky-1"} == set(Path(f"{db}.side").read_text().split())
    resumed = worker(db, "t-fan", "fan-resume")
    out, err = resumed.communicate(timeout=60)
    assert 0 == resumed.returncode, err
    result: dict[str, Any] = json.loads(
        next(ln for ln in out.splitlines() if ln.startswith("RESULT ")).removeprefix("RESULT ")
    )
    assert ("completed", {"good": 1, "flaky": 3}) == (result["status"], result["state"])
    assert ["good-1", "flaky-1", "flaky-2", "flaky-3"] == sorted(
        Path(f"{db}.side").read_text().split(), key=lambda s: (s[0] != "g", s)
    )
    first, *rest = result["sleeps"]
    assert 0 < first <= 30.0
    assert [60.0] == rest


pytestmark = pytest.mark.anyio


def pausing_graph(calls: Counter[str]) -> gx.Graph:
    async def call(s: Mapping[str, Any]) -> dict[str, Any]:
        calls["call"] += 1
        if calls["call"] == 1:
            raise ConnectionError("down")
        return {"done": True}

    return (
        gx.GraphBuilder("pause")
        .node("call", call, on_failure="pause")
        .start("call")
        .end("call")
        .build()
    )


async def test_a_paused_node_is_decided_from_another_process(stores: Stores) -> None:
    """A node paused by its failure is checkpointed as waiting (barrier id "call#1"); a
    decision submitted through another store object resumes it: Approve runs it again."""
    calls: Counter[str] = Counter()
    graph = pausing_graph(calls)
    ex = stores.executor()
    async with ex.execute_stream(graph, {}, trace_id="p") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                assert "call#1" == event.barrier_id
                break
    assert "waiting" == run.result.status
    state = await ex.get_state("p")
    assert state.pending_barrier is not None
    assert "call#1" == state.pending_barrier.barrier_id
    await stores.other().submit_decision("p", "call#1", gx.Approve())
    async with stores.executor(await stores.reopen()).resume_from(graph, "p") as run:
        async for _event in run:
            pass
    assert ("completed", {"done": True}, 2) == (run.result.status, run.result.state, calls["call"])


async def test_resume_runs_only_the_failed_branches_of_a_fan_out(stores: Stores) -> None:
    """A parallel node that failed keeps its successful branches' outputs in the failure
    checkpoint; resuming runs only the failed branch."""
    calls: Counter[str] = Counter()

    async def good(s: Mapping[str, Any]) -> dict[str, Any]:
        calls["good"] += 1
        return {"a": "from good"}

    async def bad(s: Mapping[str, Any]) -> dict[str, Any]:
        calls["bad"] += 1
        if calls["bad"] == 1:
            raise ConnectionError("down")
        return {"b": "from bad"}

    graph = (
        gx.GraphBuilder("fan")
        .parallel("p", {"good": good, "bad": bad}, on_error="collect")
        .start("p")
        .end("p")
        .build()
    )
    ex = stores.executor()
    async with ex.execute_stream(graph, {}, trace_id="f") as run:
        async for _event in run:
            pass
    assert "failed" == run.result.status
    assert isinstance(run.result.error, gx.NodeExecutionFailed)
    assert {"good": {"a": "from good"}} == run.result.error.kept
    async with stores.executor(await stores.reopen()).resume_from(graph, "f") as run:
        async for _event in run:
            pass
    assert "completed" == run.result.status
    assert {"a": "from good", "b": "from bad"} == run.result.state
    assert {"good": 1, "bad": 2} == dict(calls)


async def test_recorded_compensations_survive_a_resume_and_a_graph_change(stores: Stores) -> None:
    """Which completed nodes await compensation is checkpointed: a resumed run compensates
    them; one whose compensation the new graph no longer declares is skipped with a warning."""
    ran: list[str] = []

    def node(name: str, fail: bool = False) -> Any:
        async def fn(s: Mapping[str, Any]) -> None:
            ran.append(name)
            if fail:
                raise gx.NonRetryable(f"{name} failed")

        return fn

    def saga(on_failure: str, declare: bool) -> gx.Graph:
        b = gx.GraphBuilder("saga")
        b.node("reserve", node("reserve"), compensate="release")
        b.node("charge", node("charge"), compensate="refund" if declare else None)
        b.node("ship", node("ship", fail=True), on_failure=on_failure)  # type: ignore[arg-type]
        b.node("release", node("release"))
        if declare:
            b.node("refund", node("refund"))
        return (
            b.edge("reserve", "charge").edge("charge", "ship").start("reserve").end("ship").build()
        )

    ex = stores.executor()
    with pytest.raises(gx.NodeExecutionFailed):
        await ex.execute(saga("fail", True), {}, trace_id="c")
    assert ["reserve", "charge", "ship"] == ran
    ran.clear()
    resumer = stores.executor(await stores.reopen())

    async def resume() -> gx.GraphResult:
        async with resumer.resume_from(saga("compensate", False), "c") as run:
            async for _event in run:
                pass
        return run.result

    with pytest.warns(gx.GraphChangedWarning):
        result = await resume()
    assert "failed" == result.status
    assert ["ship", "release"] == ran
