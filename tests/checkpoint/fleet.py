"""A fleet of worker processes on one store, and the checks of what they did to it.

:class:`Fleet` starts ``fleet_worker.py`` processes (workers and the decider) on a store URL,
SIGKILLs and restarts workers, and stops them. :func:`audit` reads the store back once the
runs are over and lists every broken promise: a run not completed exactly once, a decision
missing from its run's final state, a side-effecting node run again after the checkpoint
that covers it committed (the journal against the committed history), a killed worker's run
taken over later than the bound. Used by ``test_workers_chaos.py`` and ``benches/workers.py``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import graphexec as gx

import fleet_worker  # isort: skip  (a helper module next to this file)

WORKER = Path(__file__).with_name("fleet_worker.py")
CLI = Path(sys.executable).parent / "graphexec"
READY = ("READY", "graphexec worker: started")
"""What a fleet process prints once its store answers and it takes SIGTERM gracefully."""


@dataclasses.dataclass
class Fleet:
    """Worker processes (and a decider) on ``url``; their output goes to files in ``folder``."""

    url: str
    graph: str
    folder: Path
    concurrency: int
    poll: float
    lease_ttl: float
    workers: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    cli_workers: bool = False
    """Every other worker started is ``graphexec worker`` (the fleet graph only)."""
    decider: subprocess.Popen[bytes] | None = None
    started: int = 0
    """Worker processes started so far (restarts included)."""
    outputs: dict[int, Path] = dataclasses.field(default_factory=dict)
    """Each process's output file, by pid."""

    @property
    def journal(self) -> Path:
        return self.folder / "journal.txt"

    @property
    def decisions(self) -> Path:
        return self.folder / "decisions.txt"

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        path = self.folder / f"{name}.out"
        env = dict(os.environ)
        env[fleet_worker.JOURNAL_ENV] = str(self.journal)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(WORKER.parent), *filter(None, [env.get("PYTHONPATH")])]
        )
        with open(path, "wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.outputs[proc.pid] = path
        return proc

    def _ready(self, proc: subprocess.Popen[bytes], deadline: float) -> bool:
        """Wait until ``proc`` has printed READY (its store answered, its SIGTERM handler
        set); False if it exited or ``deadline`` passed first."""
        path = self.outputs[proc.pid]
        while not any(mark in path.read_text(errors="replace") for mark in READY):
            if proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until every process is ready."""
        deadline = time.monotonic() + timeout
        for proc in [*self.workers, *([self.decider] if self.decider else [])]:
            if not self._ready(proc, deadline):
                raise AssertionError(f"a fleet process never got ready:\n{self.output()}")

    def start_worker(self) -> subprocess.Popen[bytes]:
        """Start one more worker process: ``gx.Worker`` in fleet_worker.py, or every other
        time with ``cli_workers`` the command line's ``graphexec worker``."""
        self.started += 1
        if self.cli_workers and self.started % 2 == 0:
            command = [
                str(CLI),
                "worker",
                "--store",
                self.url,
                "--graphs",
                "fleet_worker:FLEET",
                "--concurrency",
                str(self.concurrency),
                "--poll-interval",
                str(self.poll),
                "--lease-ttl",
                str(self.lease_ttl),
            ]
        else:
            command = [
                sys.executable,
                str(WORKER),
                "worker",
                self.url,
                self.graph,
                str(self.journal),
                str(self.concurrency),
                str(self.poll),
                str(self.lease_ttl),
            ]
        proc = self._spawn(f"worker-{self.started}", command)
        self.workers.append(proc)
        return proc

    def start_decider(self, barriers: int, poll: float = 0.05) -> None:
        self.decider = self._spawn(
            "decider",
            [
                sys.executable,
                str(WORKER),
                "decider",
                self.url,
                self.graph,
                str(self.decisions),
                str(barriers),
                str(poll),
            ],
        )

    def kill(self, proc: subprocess.Popen[bytes]) -> tuple[float, float]:
        """SIGKILL a worker and reap it (a zombie's /proc entry would look alive); returns the
        wall-clock times just before the signal and once the process is gone."""
        t = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        self.workers.remove(proc)
        return t, time.time()

    def check_alive(self) -> None:
        """Fail if a worker or the decider exited on its own (its output says why)."""
        for proc in [*self.workers, *([self.decider] if self.decider else [])]:
            code = proc.poll()
            if code is not None and not (proc is self.decider and code == 0):
                raise AssertionError(f"a fleet process exited with {code}: {self.output()}")

    def stop(self, timeout: float = 30) -> list[int]:
        """SIGTERM every process (a graceful stop) and wait; returns the workers' exit codes."""
        procs = [*self.workers, *([self.decider] if self.decider else [])]
        deadline = time.monotonic() + timeout
        for proc in procs:
            # A worker started a moment ago takes SIGTERM gracefully once it is ready.
            if proc.poll() is None and self._ready(proc, deadline):
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc is not self.decider:
                codes.append(proc.returncode)
        return codes

    def output(self, tail: int = 3000) -> str:
        """The end of every process's output, for failure messages."""
        parts = []
        for f in sorted(self.folder.glob("*.out")):
            text = f.read_text(errors="replace")
            if text.strip():
                parts.append(f"--- {f.name}\n{text[-tail:]}")
        return "\n".join(parts)


@dataclasses.dataclass(frozen=True)
class Execution:
    """One journal line: a side-effecting node executed."""

    trace_id: str
    node: str
    step: int
    key: str
    pid: int
    at: float


def read_journal(path: Path) -> list[Execution]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        trace_id, node, step, key, pid, at = line.split()
        out.append(Execution(trace_id, node, int(step), key, int(pid), float(at)))
    return out


def read_decisions(path: Path) -> dict[str, tuple[str, str, float]]:
    """The decider's file: trace id to (barrier id, decision kind, time decided)."""
    out: dict[str, tuple[str, str, float]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            trace_id, barrier, kind, at = line.split()
            if trace_id in out:
                raise AssertionError(f"the decider decided {trace_id} twice")
            out[trace_id] = (barrier, kind, float(at))
    return out


COMMIT_SLACK = 1.0
"""Seconds a record's commit may trail its ``created_at`` on a loaded machine."""


@dataclasses.dataclass(frozen=True)
class Kill:
    """A worker SIGKILLed at ``at`` (gone by ``dead_at``: it may still run until the signal
    lands); ``held``: the runs whose lease its process held when the store was read at
    ``seen_at``, just before."""

    at: float
    seen_at: float
    pid: int
    held: tuple[str, ...]
    dead_at: float = 0.0


async def held_by(store: gx.CheckpointStore, pid: int, limit: int) -> list[str]:
    """Runs whose lease a process holds now (the runs index's lease columns)."""
    return [
        r.trace_id
        for r in await store.runs(limit=limit)
        if r.lease is not None and r.lease.owner and r.lease.pid == pid
    ]


def expected_state(trace_id: str, amount: int) -> dict[str, Any]:
    """The final state a run of the fleet graph must have, given the decider's decision."""
    decision = fleet_worker.decision_for(trace_id)
    state: dict[str, Any] = {"amount": amount, "prepared": True, "charged": amount}
    if isinstance(decision, gx.Reject):
        state["approve"] = {"decision": "reject", "reason": decision.reason, "by": "human"}
        state["declined"] = True
    else:
        if isinstance(decision, gx.Edit):
            state["amount"] = decision.update["amount"]
        state["approve"] = {"decision": "approve", "reason": None, "by": "human"}
        state["shipped"] = state["amount"]
    return state


@dataclasses.dataclass
class Audit:
    """What :func:`audit` found: ``problems`` must be empty."""

    problems: list[str] = dataclasses.field(default_factory=list)
    reexecuted: int = 0
    """Side-effecting executions run again because the first one's checkpoint never
    committed (allowed: the worker died between the side effect and its checkpoint)."""
    takeovers: list[float] = dataclasses.field(default_factory=list)
    """Per run a killed worker held: seconds from the kill to its next driver's first record."""
    not_measured: int = 0
    """Runs a killed worker held when the store was read that parked or completed before the
    kill (nothing to take over)."""


async def audit(
    store: gx.CheckpointStore,
    inputs: dict[str, int],
    journal: list[Execution],
    decisions: dict[str, tuple[str, str, float]],
    kills: list[Kill],
    takeover_bound: float,
) -> Audit:
    """Check every run of the fleet graph (``inputs``: trace id to its amount) against the
    store's records, the journal, the decider's decisions and the kills."""
    found = Audit()
    problems = found.problems
    ex = gx.GraphExecutor(store=store)
    histories: dict[str, list[gx.CheckpointSummary]] = {}
    by_step: dict[tuple[str, str, int], list[Execution]] = defaultdict(list)
    for e in journal:
        by_step[e.trace_id, e.node, e.step].append(e)
    for trace_id, amount in sorted(inputs.items()):
        info = await store.get_run(trace_id)
        history = histories[trace_id] = await ex.history(trace_id)
        completions = [h for h in history if h.status == "completed"]
        if info is None or info.status != "completed" or len(completions) != 1:
            shown = [f"{h.seq}:{h.trigger}/{h.status}" for h in history]
            if len(shown) > 12:
                shown[4:-6] = ["..."]
            problems.append(
                f"{trace_id}: status {info.status if info else None}, "
                f"{len(completions)} completion records in {len(history)}: " + ", ".join(shown)
            )
            continue
        if history[-1].status != "completed":
            problems.append(f"{trace_id}: records after its completion: {history[-1]}")
        state = (await ex.get_state(trace_id)).state
        want = expected_state(trace_id, amount)
        if state != want:
            problems.append(f"{trace_id}: final state {state!r}, expected {want!r}")
        decided = decisions.get(trace_id)
        kind = fleet_worker.kind(fleet_worker.decision_for(trace_id))
        if decided is None or decided[:2] != ("approve#1", kind):
            problems.append(f"{trace_id}: the decider's record is {decided!r}")
        # Side effects: each (node, step) executed, and executed again only before the record
        # covering that step (the first with a step count >= it) was written, after the
        # worker that ran it first was killed.
        nodes = ["charge", "ship"] if "shipped" in want else ["charge"]
        steps = {(n, s) for (t, n, s) in by_step if t == trace_id}
        if sorted(n for n, _ in steps) != sorted(nodes):
            problems.append(f"{trace_id}: side-effecting executions {sorted(steps)}, nodes {nodes}")
        for node, step in sorted(steps):
            runs = sorted(by_step[trace_id, node, step], key=lambda e: e.at)
            keys = {e.key for e in runs}
            if keys != {f"{trace_id}:{node}:{step}"}:
                problems.append(f"{trace_id}: {node}@{step} idempotency keys {keys}")
            cover = next((h for h in history if h.step >= step), None)
            if cover is None:
                problems.append(f"{trace_id}: no committed record covers {node}@{step}")
                continue
            late = [e for e in runs if e.at > cover.created_at]
            if late:
                problems.append(
                    f"{trace_id}: {node}@{step} ran at {[e.at for e in runs]} (pids "
                    f"{[e.pid for e in runs]}), again after record {cover.seq} covering it "
                    f"was written at {cover.created_at}"
                )
            # An execution run again must have died with its worker: a worker that was not
            # killed losing a run it drove (two drivers at once) is a bug even when fencing
            # kept its checkpoint out.
            for e in runs[:-1]:
                if not any(k.pid == e.pid and max(k.at, k.dead_at) > e.at for k in kills):
                    problems.append(
                        f"{trace_id}: {node}@{step} ran again after pid {e.pid} ran it at "
                        f"{e.at:.3f}, and that worker was not killed"
                    )
            found.reexecuted += len(runs) - 1
    for kill in kills:
        for trace_id in kill.held:
            records = histories.get(trace_id)
            if records is None:
                continue
            # A record's created_at is taken before its commit (which releases the lease at a
            # park or the end): one created a little before the store was read may still
            # have been committing then.
            before = [h for h in records if h.created_at <= kill.at]
            recent = [h for h in before if h.created_at > kill.seen_at - COMMIT_SLACK]
            if (before and before[-1].status == "completed") or (
                recent and recent[-1].status == "waiting"
            ):
                found.not_measured += 1  # it left the worker before the kill
                continue
            after = [h for h in records if h.created_at > kill.at]
            if not after:
                problems.append(f"{trace_id}: held by killed pid {kill.pid}, never driven again")
                continue
            delay = after[0].created_at - kill.at
            found.takeovers.append(delay)
            if delay > takeover_bound:
                problems.append(
                    f"{trace_id}: held by pid {kill.pid} killed at {kill.at:.3f}, its next "
                    f"record ({after[0].trigger}) came {delay:.2f}s later (bound "
                    f"{takeover_bound:.2f}s)"
                )
    return found


def pg_url(dsn: str, schema: str) -> str:
    """A store URL for ``open_store`` (``postgresql://...?schema=``) from a libpq DSN in either
    form (a URL or ``key=value`` pairs)."""
    from urllib.parse import quote, urlencode

    from psycopg.conninfo import conninfo_to_dict

    info = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user = quote(info.pop("user", "postgres"))
    password = info.pop("password", None)
    auth = f"{user}:{quote(password)}" if password else user
    host = info.pop("host", "127.0.0.1")
    port = info.pop("port", "5432")
    dbname = info.pop("dbname", "postgres")
    query = urlencode({**info, "schema": schema})
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname)}?{query}"
