"""The command line against PostgreSQL, through the real entry point: an operator's path over a
run seeded in a schema of its own (list, show, history, events, approve, resume, fork), the same
commands the SQLite tests cover one by one."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import GRAPHS, SCRIPT, Result, cli_env, postgres_url


@pytest.fixture
def pg_store(tmp_path: Path) -> Iterator[str]:
    """A Postgres store URL holding ``cli_graphs.seed``'s runs (wait-1, done-1, fail-1)."""
    with postgres_url("c") as url:
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import anyio, cli_graphs; anyio.run(cli_graphs.seed, {url!r})",
            ],
            env=cli_env(tmp_path),
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield url


def gx_cli(url: str, cwd: Path, *args: str) -> Result:
    proc = subprocess.run(
        [str(SCRIPT), *args],
        check=False,
        cwd=cwd,
        env={**cli_env(cwd), "GRAPHEXEC_STORE": url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def test_an_operator_path_on_postgres(pg_store: str, tmp_path: Path) -> None:
    """runs, show, history and events read the Postgres store; approve queues a decision there;
    resume completes the run; fork starts a new trace; errors keep their exit codes."""

    def cli(*args: str) -> Result:
        return gx_cli(pg_store, tmp_path, *args)

    listed = cli("runs", "--json")
    assert 0 == listed.code, listed
    assert {("wait-1", "waiting"), ("done-1", "completed"), ("fail-1", "failed")} == {
        (r["trace_id"], r["status"]) for r in listed.json()
    }
    shown = cli("show", "wait-1", "--json").json()
    assert ("waiting", ["approval#1"]) == (
        shown["status"],
        [b["barrier_id"] for b in shown["pending_barriers"]],
    )
    assert [1, 2, 3] == [r["seq"] for r in cli("history", "wait-1", "--json").json()]
    recorded = cli("events", "wait-1", "--json").json_lines()
    assert "BarrierWaiting" in [e["type"] for e in recorded]

    approved = cli("approve", "wait-1", "approval#1")
    assert 0 == approved.code, approved
    resumed = cli("resume", "wait-1", "--graphs", GRAPHS)
    assert 0 == resumed.code, resumed
    assert "GraphComplete" == resumed.out.splitlines()[-1].split()[2]
    done = cli("show", "wait-1", "--json").json()
    assert ("completed", 120.0) == (done["status"], done["state"]["refunded"])
    tail = cli("events", "wait-1", "--json", "--after", str(recorded[-1]["event_id"]))
    assert "GraphComplete" == tail.json_lines()[-1]["type"]

    forked = cli("fork", "done-1", "1", "--graphs", GRAPHS, "--trace-id", "done-2")
    assert 0 == forked.code, forked
    assert "completed" == cli("show", "done-2", "--json").json()["status"]
    again = cli("fork", "done-1", "1", "--graphs", GRAPHS, "--trace-id", "done-2")
    assert 4 == again.code and "'done-2' is taken" in again.err, again  # a conflict
    missing = cli("show", "nope", "--json")
    assert 3 == missing.code and missing.err.startswith("graphexec: error: "), missing  # not found
