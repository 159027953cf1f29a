"""Ownership with real processes (DESIGN "Ownership"): a SIGKILLed driver never blocks a
resume on the same host; a live one does (RunLocked says who and until when); a driver whose
lease was taken over fails with LeaseLost at its next write and writes nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import graphexec as gx
from graphexec.checkpoint._leases import this_process

from owner_worker import hold_graph  # isort: skip

WORKER = Path(__file__).with_name("owner_worker.py")
LONG_TTL = 3600.0
"""The worker's lease_ttl: far longer than any test, so nothing here waits for an expiry."""


def start(db: Path, trace_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(db), trace_id, str(LONG_TTL)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def holding(proc: subprocess.Popen[str]) -> int:
    """Wait for the worker's HOLDING line; its pid."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("HOLDING "):
            return int(line.split()[1])
    proc.wait()
    assert proc.stderr is not None
    pytest.fail(f"worker exited ({proc.returncode}) before holding: {proc.stderr.read()}")


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert len(lines) == 1, out + err
    found: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    return found


async def test_sigkill_then_resume_at_once(tmp_path: Path) -> None:
    """While the worker lives, a resume is RunLocked naming its pid, host and expiry; right
    after a SIGKILL (its hour-long lease unexpired) a resume in this process succeeds."""
    db = tmp_path / "runs.db"
    proc = start(db, "t-kill")
    try:
        pid = holding(proc)
        async with gx.SQLiteStore(db) as store:
            ex = gx.GraphExecutor(store=store)
            info = await store.get_run("t-kill")
            assert info is not None and info.lease is not None
            host = this_process()[0]
            assert (info.lease.pid, info.lease.host, info.lease.token) == (pid, host, 1)
            assert info.lease.expires_at > info.updated_at + LONG_TTL / 2
            with pytest.raises(gx.RunLocked) as locked:
                async with ex.resume_from(hold_graph(), "t-kill"):
                    pytest.fail("a live owner holds the lease")  # pragma: no cover
            assert f"pid {pid} on {host}" in str(locked.value)
            assert "until" in str(locked.value)

            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
            async with ex.resume_from(hold_graph(), "t-kill") as run:
                async for _ in run:
                    pass
            assert run.result.status == "completed"
            assert run.result.state == {"log": ["a", "hold", "b"]}
            after = await store.get_run("t-kill")
            assert after is not None and after.lease is None  # released at the end
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


async def test_a_former_owner_that_comes_back_writes_nothing(tmp_path: Path) -> None:
    """An operator takes the run over (take_over=True) and finishes it; the former owner,
    when its node returns, fails with LeaseLost at its next write and writes nothing."""
    db = tmp_path / "runs.db"
    proc = start(db, "t-back")
    try:
        holding(proc)
        async with gx.SQLiteStore(db) as store:
            ex = gx.GraphExecutor(store=store)
            async with ex.resume_from(hold_graph(), "t-back", take_over=True) as run:
                async for _ in run:
                    pass
            assert run.result.status == "completed"
            before = await ex.history("t-back")

            await anyio.Path(f"{db}.go").touch()  # the former owner's node returns and writes
            result = result_of(proc)
            assert result == {"status": "failed", "error": "LeaseLost"}
            assert await ex.history("t-back") == before
            state = await ex.get_state("t-back")
            assert (state.status, state.state) == ("completed", {"log": ["a", "hold", "b"]})
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_without_proc_a_dead_pid_is_found_with_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where /proc does not exist, a pid that is not alive is found with os.kill(pid, 0)."""
    from graphexec.checkpoint import _leases

    host, pid, _ = this_process()
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(done.stdout)
    assert _leases.process_gone(host, dead, "x")
    monkeypatch.setattr("graphexec.checkpoint._leases.os.path.isdir", lambda path: False)
    assert _leases.process_gone(host, dead, "")
    assert not _leases.process_gone(host, pid, "")  # this process
    assert not _leases.process_gone("another-host", dead, "")  # elsewhere: wait for expiry
