"""``graphexec worker`` through the real entry point, in subprocesses, on a SQLite file (and
on Postgres when the test server answers): queued runs completed, SIGTERM hands the run in
hand back (exit 0) and a second worker finishes it; a SIGKILLed worker's run is finished by
another at once (same host: its dead process does not hold the run until ``--lease-ttl``)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import worker_graphs
from cli_support import SCRIPT, cli_env, postgres_url

import graphexec as gx


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or a schema of its own on the test Postgres server."""
    if request.param == "sqlite":
        yield str(tmp_path / "runs.db")
        return
    with postgres_url("w") as url:
        yield url


def call(url: str, fn: Callable[[gx.CheckpointStore], Any]) -> Any:
    """Run ``await fn(store)`` on the store at ``url``, as another process would."""

    async def go() -> Any:
        async with gx.checkpoint.open_store(url) as store:
            return await fn(store)

    return anyio.run(go)


def queue(url: str, graph: gx.Graph, trace_id: str, state: dict[str, Any]) -> None:
    call(
        url, lambda s: gx.GraphExecutor(store=s).start(graph, state, trace_id=trace_id, queue=True)
    )


def info(url: str, trace_id: str) -> gx.RunInfo:
    found = call(url, lambda s: s.get_run(trace_id))
    assert found is not None
    return found  # type: ignore[no-any-return]


def wait_status(url: str, trace_id: str, *statuses: str, within: float = 30) -> gx.RunInfo:
    deadline = time.monotonic() + within
    while True:
        found = info(url, trace_id)
        if found.status in statuses:
            return found
        assert time.monotonic() < deadline, f"{trace_id} stayed {found.status}"
        time.sleep(0.05)


def start_worker(url: str, gate: Path, *extra: str) -> subprocess.Popen[str]:
    env = cli_env(gate.parent)
    env["WORKER_GATE"] = str(gate)
    return subprocess.Popen(
        [
            str(SCRIPT),
            "worker",
            "--store",
            url,
            "--graphs",
            "worker_graphs:graphs",
            "--poll-interval",
            "0.05",
            "--json",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def terminate(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """SIGTERM; the worker exits 0; its JSON lines."""
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return [json.loads(line) for line in out.splitlines()]


def test_worker_completes_queued_runs_and_sigterm_hands_back(
    store_url: str, tmp_path: Path
) -> None:
    """Three quick runs complete; SIGTERM while the gated run works: exit 0, the run recorded
    "interrupted" with no lease; a second worker finishes it once the gate opens."""
    gate = tmp_path / "gate"
    for i in range(3):
        queue(store_url, worker_graphs.quick, f"quick-{i}", {"n": i})
    queue(store_url, worker_graphs.gated, "gated-1", {})
    first = start_worker(store_url, gate, "--concurrency", "2")
    try:
        for i in range(3):
            wait_status(store_url, f"quick-{i}", "completed")
        assert wait_status(store_url, "gated-1", "running").lease is not None
    finally:
        lines = terminate(first)
    claimed = {line["trace_id"] for line in lines if line["event"] == "claimed"}
    ended = {(line["trace_id"], line["status"]) for line in lines if line["event"] == "ended"}
    assert claimed == {"quick-0", "quick-1", "quick-2", "gated-1"}
    assert ended == {(f"quick-{i}", "completed") for i in range(3)} | {("gated-1", "interrupted")}
    assert lines[-1]["event"] == "stopped" and lines[-1]["completed"] == 3
    handed = info(store_url, "gated-1")
    assert handed.status == "interrupted" and handed.lease is None
    gate.touch()
    second = start_worker(store_url, gate)
    try:
        wait_status(store_url, "gated-1", "completed")
    finally:
        lines = terminate(second)
    assert [(x["event"], x["trace_id"]) for x in lines[:1]] == [("claimed", "gated-1")]


def test_a_sigkilled_workers_run_is_finished_by_another(tmp_path: Path) -> None:
    """SIGKILL while the gated run works: a second worker (an hour's lease_ttl) takes the run
    at once (its owner's process is gone) and finishes it."""
    url = str(tmp_path / "runs.db")
    gate = tmp_path / "gate"
    queue(url, worker_graphs.gated, "gated-2", {})
    first = start_worker(url, gate, "--lease-ttl", "3600")
    try:
        assert wait_status(url, "gated-2", "running").lease is not None
    finally:
        first.kill()
        first.communicate(timeout=30)
    gate.touch()
    t0 = time.monotonic()
    second = start_worker(url, gate, "--lease-ttl", "3600")
    try:
        wait_status(url, "gated-2", "completed")
    finally:
        terminate(second)
    assert time.monotonic() - t0 < 20
    state = call(url, lambda s: gx.GraphExecutor(store=s).get_state("gated-2"))
    assert state.state == {"passed": True}
