"""``graphexec events``, ``cancel`` and ``serve`` through the real entry point, in subprocesses,
against a SQLite file (and the chat example's server for a live run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from _web_kit import ROOT, ChatServer, free_port  # isort: skip

SCRIPT = Path(sys.executable).parent / "graphexec"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHEXEC_")}
    return subprocess.run(
        [str(SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def start_waiting(server: ChatServer, trace: str) -> None:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        r = c.post("/runs", json={"input": {"message": "Paris?"}, "trace_id": trace})
        assert 202 == r.status_code, r.text
        while c.get(f"/runs/{trace}").json()["status"] != "waiting":
            time.sleep(0.02)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    s = ChatServer(tmp_path / "chat.db", free_port(), token_delay=0.0)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_events_prints_the_record_and_after_skips(server: ChatServer) -> None:
    """events prints what was recorded (JSON lines with event ids); --after starts later."""
    start_waiting(server, "e")
    done = cli("events", "e", "--store", str(server.db), "--json")
    assert 0 == done.returncode, done.stderr
    events = lines(done.stdout)
    assert "GraphStart" == events[0]["type"]
    assert "BarrierWaiting" == events[-1]["type"]
    ids = [e["event_id"] for e in events]
    assert sorted(set(ids)) == ids
    later = cli("events", "e", "--store", str(server.db), "--json", "--after", str(ids[2]))
    assert events[3:] == lines(later.stdout)
    table = cli("events", "e", "--store", str(server.db))
    assert 0 == table.returncode
    assert "approve#1" in table.stdout
    missing = cli("events", "nope", "--store", str(server.db))
    assert 3 == missing.returncode
    assert "nope" in missing.stderr


def test_events_follow_tails_to_the_end(server: ChatServer) -> None:
    """events --follow prints the live events of a run another process drives, to its end."""
    start_waiting(server, "f")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHEXEC_")}
    follower = subprocess.Popen(
        [str(SCRIPT), "events", "f", "--store", str(server.db), "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        with httpx.Client(base_url=server.url, timeout=20) as c:
            r = c.post(
                "/runs/f/decisions",
                json={"barrier_id": "approve#1", "decision": {"type": "approve"}},
            )
            assert 202 == r.status_code
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert 0 == follower.returncode, err
    events = lines(out)
    assert "GraphComplete" == events[-1]["type"]
    assert "The weather in Paris is sunny, 21°C." == "".join(
        e["data"]["token"] for e in events if e["type"] == "Custom" and e["node"] == "answer"
    )


def test_cancel_a_waiting_run(server: ChatServer) -> None:
    """cancel records a waiting run no one drives as cancelled; a second cancel is a no-op;
    cancelling a completed run is a conflict (exit 4)."""
    start_waiting(server, "c")
    server.stop()  # nobody drives it now
    done = cli("cancel", "c", "--store", str(server.db), "--json")
    assert 0 == done.returncode, done.stderr
    assert {"trace_id": "c", "cancel": "cancelled"} == json.loads(done.stdout)
    show = cli("show", "c", "--store", str(server.db), "--json")
    assert "cancelled" == json.loads(show.stdout)["status"]
    missing = cli("cancel", "nope", "--store", str(server.db))
    assert 3 == missing.returncode


def test_serve_starts_the_app_and_stops_on_sigterm(tmp_path: Path) -> None:
    """graphexec serve module:attr serves the graphs' API and page; SIGTERM exits 0."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRAPHEXEC_")}
    env["CHAT_TOKEN_DELAY"] = "0"
    with subprocess.Popen(
        [
            str(SCRIPT),
            "serve",
            "examples.chat.app:graphs",
            "--store",
            str(tmp_path / "s.db"),
            "--port",
            str(port),
            "--token",
            "t0k",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert f"serving chat on http://127.0.0.1:{port}/" in line
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as c:
                assert 401 == c.get("/runs").status_code
                auth = {"Authorization": "Bearer t0k"}
                r = c.post("/runs", json={"input": {"message": "Paris?"}}, headers=auth)
                assert 202 == r.status_code, r.text
                assert "graphexec chat" in c.get("/").text
            proc.send_signal(signal.SIGTERM)
            assert 0 == proc.wait(20)
        finally:
            proc.kill()
