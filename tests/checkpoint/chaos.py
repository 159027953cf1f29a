"""The chaos driver: SIGKILL real worker processes at random points, resume, compare, count.

One trial runs ``chaos_worker.py`` on a fresh SQLite file and kills it (SIGKILL) a random time
after it starts, one or more times, resuming in a new process after each kill, then lets the
last process finish. After every kill the file is read back in this process: the step restored
must be at least the last step the killed process reported as committed (otherwise steps were
lost). At the end the state must equal an uninterrupted run's. Any exception that is not a
graphexec error, in a worker or here, is a foreign exception.

Used by ``test_chaos.py`` (a CI-sized slice) and ``benches/chaos.py`` (the long run).
"""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

import graphexec as gx

WORKER = Path(__file__).with_name("chaos_worker.py")
CONFIGS = ("sync", "async", "compact", "adaptive")
KILL_SPREAD = 0.8
"""Kills land uniformly within this fraction of an uninterrupted run's length (measured from its
start to its process's exit) after the run starts: anywhere in the run, the barrier wait and
the final save included."""


@dataclasses.dataclass
class Tally:
    """What the chaos runs found; everything but ``kills``, ``survived`` and ``trials`` must
    stay 0."""

    trials: int = 0
    kills: int = 0
    survived: int = 0
    """Kills after which the trace resumed and finished with the right state."""
    steps_lost: int = 0
    wrong_states: int = 0
    foreign: int = 0
    failed_runs: int = 0
    """Runs that ended in a graphexec error instead of completing."""
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.steps_lost or self.wrong_states or self.foreign or self.failed_runs)

    def add(self, other: Tally) -> None:
        for f in dataclasses.fields(self):
            if f.name == "notes":
                self.notes.extend(other.notes)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def start(db: Path, trace_id: str, mode: str, config: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), trace_id, mode, config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def parse(out: str) -> tuple[int, dict[str, Any] | None, list[str]]:
    """Highest committed step reported, the RESULT (if any), and error lines."""
    step = -1
    result = None
    errors = []
    for line in out.splitlines():
        if line.startswith("SAVED "):
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():  # a kill may cut the last line short
                step = max(step, int(parts[2]))
        elif line.startswith("RESULT "):
            result = json.loads(line.removeprefix("RESULT "))
        elif line.startswith(("GRAPHERROR ", "FOREIGN ")):
            errors.append(line)
    return step, result, errors


@dataclasses.dataclass(frozen=True)
class Reference:
    """An uninterrupted run: its final state, and how long it ran (which sets the kill window,
    so kills land inside runs on fast and slow machines alike)."""

    state: dict[str, Any]
    seconds: float


def reference(folder: Path) -> Reference:
    """Run the worker once without a kill (a real process, the sync policy)."""
    proc = start(folder / "reference.db", "ref", "run", "sync")
    assert proc.stdout is not None
    first = proc.stdout.readline()
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=60)
    seconds = time.monotonic() - t0
    _step, result, errors = parse(first + out)
    if proc.returncode != 0 or result is None or result["status"] != "completed":
        raise RuntimeError(f"reference run failed: {errors} {err[-2000:]}")
    return Reference(state=result["state"], seconds=seconds)


async def _load(db: Path, trace_id: str) -> gx.RunState:
    async with gx.SQLiteStore(db) as store:
        return await gx.GraphExecutor(store=store).get_state(trace_id)


def load(db: Path, trace_id: str) -> gx.RunState | None:
    """The trace as a restarted process would load it; None before its first checkpoint."""
    try:
        return anyio.run(_load, db, trace_id)
    except gx.RunNotFound:
        return None


def trial(folder: Path, seed: int, config: str, kills: int, expected: Reference) -> Tally:
    """One trace: ``kills`` SIGKILLs at random points, each followed by a resume."""
    rng = random.Random(seed)
    tally = Tally(trials=1)
    db = folder / f"chaos-{seed}.db"
    trace_id = f"trace-{seed}"
    mode = "run"
    for attempt in range(kills + 1):
        proc = start(db, trace_id, mode, config)
        if attempt == kills:
            out, err = proc.communicate(timeout=60)
            _step, result, errors = parse(out)
            _count_errors(tally, errors, err, proc.returncode, f"seed {seed} final")
            if result is not None and result["status"] != "completed":
                tally.failed_runs += 1
                tally.notes.append(f"seed {seed}: final run {result['status']}")
            break
        assert proc.stdout is not None
        line = proc.stdout.readline()  # STARTED (or the end, if it failed at once)
        if line.startswith("STARTED"):
            time.sleep(rng.uniform(0, KILL_SPREAD * expected.seconds))
        proc.kill()
        out, err = proc.communicate(timeout=30)
        step, result, errors = parse(line + out)
        _count_errors(tally, errors, err, proc.returncode, f"seed {seed} kill {attempt}")
        if result is not None:  # it finished before the kill arrived
            break
        tally.kills += 1
        try:
            state = load(db, trace_id)
        except gx.GraphError as exc:
            tally.wrong_states += 1  # a kill must never leave an unreadable trace
            tally.notes.append(f"seed {seed}: unreadable after a kill: {exc}")
            return tally
        except Exception as exc:  # noqa: BLE001 - counted: nothing read may raise it
            tally.foreign += 1
            tally.notes.append(f"seed {seed}: {exc!r}")
            return tally
        restored = -1 if state is None else state.step
        if restored < step:
            tally.steps_lost += step - restored
            tally.notes.append(f"seed {seed}: reported step {step} committed, restored {restored}")
        mode = "run" if state is None else "resume"
        if state is not None and state.status == "completed":
            break
    try:
        final = load(db, trace_id)
    except gx.GraphError as exc:
        tally.wrong_states += 1
        tally.notes.append(f"seed {seed}: final state unreadable: {exc}")
        return tally
    if final is None or final.status != "completed" or final.state != expected.state:
        tally.wrong_states += 1
        got = None if final is None else (final.status, final.state)
        tally.notes.append(f"seed {seed} ({config}): final {got!r:.300}")
    elif tally.kills:
        tally.survived += tally.kills
    return tally


def _count_errors(tally: Tally, errors: list[str], err: str, code: int, where: str) -> None:
    for line in errors:
        if line.startswith("FOREIGN"):
            tally.foreign += 1
        else:
            tally.failed_runs += 1
        tally.notes.append(f"{where}: {line}")
    # Killed: -9. Any other failure must have said what it was (GRAPHERROR/FOREIGN) or it
    # escaped as a raw traceback: foreign too.
    if code not in (0, -9, 3, 4) or ("Traceback" in err and not errors):
        tally.foreign += 1
        tally.notes.append(f"{where}: exit {code}: {err[-500:]}")
