"""Many worker processes on one store, SIGKILLed at random and restarted: issue 14's must-show.

Four worker processes (every other one ``gx.Worker`` in ``fleet_worker.py``, the others the
command line's ``graphexec worker``) share one Postgres database. This process queues 200 runs
of the fleet graph (a side-effecting node, a barrier, a second side-effecting node after an
approval) with ``ex.start(..., queue=True)``; a fifth process decides the barriers (approve,
reject or edit) through its own executor as they appear. Meanwhile this process SIGKILLs a
random worker every second or so (a seeded random schedule) and starts a new one. Once every
run has completed, :func:`fleet.audit` checks the store against the journal of side effects
and the decisions: every run completed exactly once, with the state its decision implies; no
side-effecting node ran again after the checkpoint covering it was written, nor unless the
worker that ran it first was killed; every run a killed worker held was driven again within
``lease_ttl`` plus one poll interval. A smaller fleet (2 workers, 30 runs) does the same on
one SQLite file.

The seed comes from ``GRAPHEXEC_CHAOS_SEED`` when set, else a random one; a failure prints it.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import graphexec as gx

import fleet  # isort: skip  (helper modules next to this file)
import fleet_worker  # isort: skip
from _postgres_kit import database  # isort: skip

LEASE_TTL = 3.0
POLL = 0.2
CONCURRENCY = 50
"""Slots per worker: more than the fleet ever has in flight, so a killed worker's runs never
wait for a free slot (the take-over promise assumes capacity)."""
TAKEOVER_BOUND = LEASE_TTL + POLL
"""The promise: a killed worker's runs are driven again within lease_ttl plus one poll."""


@pytest.fixture(scope="module")
def pg_fleet_dsn() -> Iterator[str]:
    """A database of this module's own (the fleet's connections stay out of the session's)."""
    yield from database()


def fleet_folder() -> Path:
    """A folder for the fleet's files, kept when the test fails: outside pytest's temporary
    folders, which other pytest sessions of the same user rotate away."""
    return Path(tempfile.mkdtemp(prefix="gx-fleet-"))


def seed() -> int:
    text = os.environ.get("GRAPHEXEC_CHAOS_SEED")
    return int(text) if text else random.SystemRandom().randrange(1 << 32)


async def run_fleet(
    store: gx.CheckpointStore,
    url: str,
    folder: Path,
    *,
    workers: int,
    runs: int,
    kill_every: tuple[float, float],
    rng: random.Random,
    queue_seconds: float,
    seconds: float,
) -> tuple[fleet.Fleet, dict[str, int], list[fleet.Kill]]:
    """Start the fleet, queue ``runs`` runs over ``queue_seconds``, kill and restart workers
    until every run has completed (or ``seconds`` passed); then stop the fleet gracefully."""
    f = fleet.Fleet(url, "fleet", folder, CONCURRENCY, POLL, LEASE_TTL, cli_workers=True)
    for _ in range(workers):
        f.start_worker()
    f.start_decider(runs)
    graph = fleet_worker.graph("fleet")
    ex = gx.GraphExecutor(store=store, graphs=[graph])
    inputs = {f"fleet-{i:03d}": i for i in range(runs)}
    kills: list[fleet.Kill] = []
    deadline = time.monotonic() + seconds

    async def queue() -> None:
        # Spread over queue_seconds, so kills land among claims, steps, parked runs and
        # resumed ones alike, from the first run to the last.
        for trace_id, amount in inputs.items():
            await ex.start(graph, {"amount": amount}, trace_id=trace_id, queue=True)
            await anyio.sleep(queue_seconds / runs)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue)
            while time.monotonic() < deadline:
                await anyio.sleep(rng.uniform(*kill_every))
                f.check_alive()
                done = await store.runs(status="completed", limit=runs + 1)
                if len(done) == runs:
                    break
                victim = rng.choice(f.workers)
                seen_at = time.time()
                held = await fleet.held_by(store, victim.pid, runs + 1)
                at, dead_at = f.kill(victim)
                kills.append(fleet.Kill(at, seen_at, victim.pid, tuple(held), dead_at))
                f.start_worker()
    finally:
        codes = f.stop()
    assert codes == [0] * len(codes), f"graceful stop: exit codes {codes}\n{f.output()}"
    return f, inputs, kills


async def chaos(
    store: gx.CheckpointStore,
    url: str,
    folder: Path,
    *,
    workers: int,
    runs: int,
    kill_every: tuple[float, float],
    queue_seconds: float,
    seconds: float,
) -> None:
    """Run the fleet with a seeded kill schedule, then audit the store. The processes' output
    and the journal are in ``folder``, named in a failure's message (the tests remove it when
    they pass)."""
    s = seed()
    t0 = time.monotonic()
    f, inputs, kills = await run_fleet(
        store,
        url,
        folder,
        workers=workers,
        runs=runs,
        kill_every=kill_every,
        rng=random.Random(s),
        queue_seconds=queue_seconds,
        seconds=seconds,
    )
    found = await fleet.audit(
        store,
        inputs,
        fleet.read_journal(f.journal),
        fleet.read_decisions(f.decisions),
        kills,
        TAKEOVER_BOUND,
    )
    summary = (
        f"seed {s} (GRAPHEXEC_CHAOS_SEED={s} reruns it): {len(kills)} kills holding "
        f"{sum(len(k.held) for k in kills)} runs, {found.reexecuted} side effects re-run "
        f"before their checkpoint, take-overs max "
        f"{max(found.takeovers, default=0):.2f}s, {time.monotonic() - t0:.0f}s"
    )
    print(summary)
    if found.problems:
        (folder / "problems.txt").write_text("\n".join([summary, *found.problems]) + "\n")
    problems = "\n".join(found.problems[:40])
    assert not found.problems, f"{summary}; the fleet's files: {folder}\n{problems}{f.output()}"
    assert kills, summary
    assert found.takeovers, f"no kill landed while a worker held a run: {summary}"


@pytest.mark.timeout(180)
async def test_four_workers_two_hundred_runs_random_sigkills_postgres(
    pg_fleet_dsn: str,
) -> None:
    """4 workers x 200 runs on Postgres, a worker SIGKILLed about every 1.2 s and restarted:
    every run completes once, with its decision, no covered side effect repeats, and every
    killed worker's run is taken over within lease_ttl + one poll."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    url = fleet.pg_url(pg_fleet_dsn, schema)
    folder = fleet_folder()
    async with gx.PostgresStore(pg_fleet_dsn, schema=schema, max_size=4) as store:
        await chaos(
            store,
            url,
            folder,
            workers=4,
            runs=200,
            kill_every=(0.6, 1.8),
            queue_seconds=25,
            seconds=120,
        )
    shutil.rmtree(folder)


@pytest.mark.timeout(120)
async def test_two_workers_thirty_runs_random_sigkills_sqlite() -> None:
    """The same on one SQLite file: 2 worker processes, 30 runs."""
    folder = fleet_folder()
    db = folder / "runs.db"
    async with gx.SQLiteStore(db) as store:
        await store.runs(limit=1)  # create the file before the workers open it
        await chaos(
            store,
            str(db),
            folder,
            workers=2,
            runs=30,
            kill_every=(0.5, 1.5),
            queue_seconds=8,
            seconds=90,
        )
    shutil.rmtree(folder)


async def test_the_audit_catches_a_side_effect_repeated_after_its_checkpoint(
    tmp_path: Path,
) -> None:
    """The audit itself: a clean run passes; the same side effect journaled again after the
    record covering it was written is reported, as is one repeated by a worker never killed;
    a repeat before that record, after its first worker was killed, is allowed."""
    journal = tmp_path / "journal.txt"
    graph = fleet_worker.fleet_graph(str(journal))
    store = gx.MemoryStore()
    ex = gx.GraphExecutor(store=store)
    inputs = {f"fleet-{i}": i for i in range(3)}
    for trace_id, amount in inputs.items():
        decision = fleet_worker.decision_for(trace_id)
        await ex.execute(
            graph, {"amount": amount}, trace_id=trace_id, decisions={"approve": decision}
        )
    decisions = {
        t: ("approve#1", fleet_worker.kind(fleet_worker.decision_for(t)), 0.0) for t in inputs
    }
    runs = fleet.read_journal(journal)
    assert len(runs) == 5  # charge x3, ship x2 (fleet-1 is rejected)

    async def problems(extra: list[fleet.Execution], kills: list[fleet.Kill]) -> list[str]:
        found = await fleet.audit(store, inputs, runs + extra, decisions, kills, 1.0)
        return found.problems

    assert await problems([], []) == []
    first = runs[0]
    cover = next(h for h in await ex.history(first.trace_id) if h.step >= first.step)
    early = dataclasses.replace(runs[0], pid=1, at=first.at - 1)
    killed = [fleet.Kill(first.at - 0.5, first.at - 0.6, 1, ())]
    assert await problems([early], killed) == []
    assert "that worker was not killed" in " ".join(await problems([early], []))
    late = dataclasses.replace(runs[0], at=cover.created_at + 1)
    assert f"again after record {cover.seq}" in " ".join(await problems([late], []))
