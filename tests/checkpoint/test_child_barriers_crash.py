"""Approvals inside map items, with real parts: five items wait at once; their decisions
come in a random order, some through the store from this process, some in-process in a
resumed worker; the worker is SIGKILLed after each item finishes. The final state equals
deciding all at once in-process, no item's node runs again once it finished, no decision is
lost, and each resume waits again at the same path ids."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphexec as gx

WORKER = Path(__file__).with_name("child_worker.py")
ITEMS = 5


def worker(db: Path, trace_id: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), trace_id, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], done: Any) -> list[str]:
    """Lines from the worker until ``done(lines)`` holds (or its output ends)."""
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line.strip())
        if done(lines):
            return lines
    _out, err = proc.communicate(timeout=30)
    raise AssertionError(f"worker ended early: {lines} {err}")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()  # SIGKILL
    proc.communicate(timeout=30)


async def submit(db: Path, trace_id: str, barrier_id: str, verdict: str) -> None:
    async with gx.SQLiteStore(db) as store:
        decision = gx.Approve() if verdict == "approve" else gx.Reject("no")
        await store.submit_decision(trace_id, barrier_id, decision)


def expected(verdicts: dict[int, str]) -> list[int | None]:
    """What deciding all at once in-process gives (the reference)."""
    return [i * 10 + 1 if verdicts[i] == "approve" else None for i in range(ITEMS)]


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    order=st.permutations(range(ITEMS)),
    verdicts=st.lists(st.sampled_from(["approve", "reject"]), min_size=ITEMS, max_size=ITEMS),
    routes=st.lists(st.sampled_from(["store", "process"]), min_size=ITEMS, max_size=ITEMS),
)
def test_sigkills_between_decisions_lose_nothing_and_rerun_no_finished_item(
    tmp_path_factory: Any, order: list[int], verdicts: list[str], routes: list[str]
) -> None:
    db = Path(tmp_path_factory.mktemp("child")) / "runs.db"
    trace = "t-children"
    side = Path(f"{db}.side")
    first = worker(db, trace, "run")
    waiting = read_until(first, lambda ls: sum(ln.startswith("WAITING") for ln in ls) == ITEMS)
    kill(first)
    ids = sorted(ln.split()[1] for ln in waiting)
    assert ids == [f"tools[{i}]/approve#1" for i in range(ITEMS)]
    result: dict[str, Any] | None = None
    for n, item in enumerate(order):
        barrier = f"tools[{item}]/approve#1"
        verdict = verdicts[item]
        last = n == ITEMS - 1
        if routes[item] == "store":
            anyio.run(submit, db, trace, barrier, verdict)
            proc = worker(db, trace, "resume")
        else:
            proc = worker(db, trace, "resume", barrier, verdict)

        def finished(lines: list[str], item: int = item, last: bool = last) -> bool:
            if last:
                return lines[-1].startswith("RESULT")
            done = f"DONE tools[{item}]"
            return done in lines and lines[-1] == "SAVED child_finished"

        lines = read_until(proc, finished)
        # A resumed run waits again at the undecided items, with the same ids.
        rewaits = {ln.split()[1] for ln in lines if ln.startswith("WAITING")}
        undecided = {f"tools[{i}]/approve#1" for i in order[n + 1 :]}
        assert undecided <= rewaits
        if last:
            proc.communicate(timeout=30)
            result = json.loads(lines[-1].removeprefix("RESULT "))
        else:
            kill(proc)
    assert result is not None
    reference = {i: verdicts[i] for i in range(ITEMS)}
    assert result["status"] == "completed"
    assert result["state"]["results"] == expected(reference)
    runs = Counter(side.read_text().splitlines())
    # prep ran once per item (before the first kill, never again: resumed items wait at their
    # barrier), and act/skip once per item: a finished item is never run again.
    assert runs == Counter(
        [f"prep {i}" for i in range(ITEMS)]
        + [f"{'act' if verdicts[i] == 'approve' else 'skip'} {i}" for i in range(ITEMS)]
    )
