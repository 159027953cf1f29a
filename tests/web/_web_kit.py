"""Helpers for the web tests: a real server in this process or in a subprocess, SSE reading."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import uvicorn

import graphexec as gx
from graphexec.web import create_app
from graphexec.web._serve import _Server

ROOT = Path(__file__).resolve().parents[2]
CHAT_APP = ROOT / "examples" / "chat" / "app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def served(ex: gx.GraphExecutor, **kw: Any) -> AsyncIterator[str]:
    """``create_app(ex, **kw)`` served by uvicorn on a free localhost port: its base URL."""
    app = create_app(ex, **kw)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    server = _Server(config)  # uvicorn's, leaving the process's signal handlers alone
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        while not server.started:  # noqa: ASYNC110 - uvicorn sets a flag, no event
            await anyio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            server.force_exit = True


@dataclass
class Frame:
    """One SSE frame."""

    id: str | None
    event: str | None
    data: str

    def json(self) -> Any:
        return msgspec.json.decode(self.data)


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The frames of an SSE response, comments (pings) skipped."""
    fields: dict[str, list[str]] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield Frame(
                    id=fields["id"][-1] if "id" in fields else None,
                    event=fields["event"][-1] if "event" in fields else None,
                    data="\n".join(fields["data"]),
                )
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name, []).append(value.removeprefix(" "))


async def read_events(
    client: httpx.AsyncClient,
    url: str,
    *,
    last_event_id: int | None = None,
    until: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The events of the stream at ``url`` (as JSON objects) until it ends, until an event of
    type ``until``, or ``limit`` events; each one's ``id:`` checked against its event id."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    out: list[dict[str, Any]] = []
    async with client.stream("GET", url, headers=headers) as response:
        assert 200 == response.status_code, await response.aread()
        async for frame in frames(response):
            event = frame.json()
            assert frame.id == str(event["event_id"])
            out.append(event)
            if event["type"] == until or (limit is not None and len(out) >= limit):
                break
    return out


class ChatServer:
    """``examples/chat/app.py`` in a subprocess on a fixed port and SQLite file (restartable)."""

    def __init__(self, db: Path, port: int, *, token_delay: float = 0.02) -> None:
        self.db = db
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "CHAT_TOKEN_DELAY": str(token_delay)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (its "serving on" line)."""
        log = self.db.with_suffix(f".{time.monotonic_ns()}.log")
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(CHAT_APP), "--db", str(self.db), "--port", str(self.port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "serving on" in text:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"the chat server did not start:\n{log.read_text(errors='replace')}")

    def kill(self) -> None:
        """SIGKILL: nothing is flushed, nothing is shut down."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
