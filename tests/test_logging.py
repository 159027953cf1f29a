"""Logs: structlog entries bound with the run's context; no global logging configuration."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
import structlog
from structlog.testing import capture_logs

import graphexec as gx

State = Mapping[str, Any]


async def noop(s: State) -> None:
    return None


async def test_failing_node_logs_an_error() -> None:
    """A failing node logs one error entry bound with trace_id, node and step."""

    async def bad(s: State) -> None:
        raise ValueError("boom")

    graph = (
        gx.GraphBuilder("g")
        .node("a", noop)
        .node("bad", bad)
        .edge("a", "bad")
        .start("a")
        .end("bad")
        .build()
    )
    with capture_logs() as logs, pytest.raises(gx.NodeExecutionFailed):
        await gx.GraphExecutor().execute(graph, trace_id="t")
    errors = [e for e in logs if e["log_level"] == "error"]
    assert 1 == len(errors)
    entry = errors[0]
    assert ("t", "bad", 2, "g") == (entry["trace_id"], entry["node"], entry["step"], entry["graph"])
    assert "NodeExecutionFailed" == entry["error_type"]
    assert "boom" in entry["error"]


async def test_barrier_waiting_is_logged() -> None:
    """A barrier that waits logs an entry bound with trace_id, node, step and barrier_id."""
    graph = (
        gx.GraphBuilder("g")
        .node("a", noop)
        .barrier("approve")
        .node("done", noop)
        .edge("a", "approve")
        .edge("approve", "done")
        .start("a")
        .end("done")
        .build()
    )
    with capture_logs() as logs:
        async with gx.GraphExecutor().execute_stream(graph, trace_id="t") as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    await run.handle.approve(event.barrier_id)
    assert "completed" == run.result.status
    waiting = [e for e in logs if e["event"] == "barrier waiting"]
    assert [
        {
            "event": "barrier waiting",
            "log_level": "info",
            "trace_id": "t",
            "graph": "g",
            "node": "approve",
            "step": 2,
            "barrier_id": "approve#1",
        }
    ] == waiting
    resolved = [e for e in logs if e["event"] == "barrier resolved"]
    assert [("t", "approve", 2, "approve#1", "human")] == [
        (e["trace_id"], e["node"], e["step"], e["barrier_id"], e["by"]) for e in resolved
    ]


async def test_fallback_is_logged_as_a_warning() -> None:
    """A Fallback logs a warning bound with trace_id, node, step and span_id."""

    async def a(s: State) -> gx.Fallback:
        return gx.Fallback("flaky")

    graph = (
        gx.GraphBuilder("g")
        .node("a", a)
        .node("safe", noop)
        .fallback("a", "safe")
        .start("a")
        .end("safe")
        .build()
    )
    with capture_logs() as logs:
        await gx.GraphExecutor().execute(graph, trace_id="t")
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [("t", "a", 1, "a@1", "flaky")] == [
        (e["trace_id"], e["node"], e["step"], e["span_id"], e["reason"]) for e in warnings
    ]


def test_library_does_not_configure_structlog() -> None:
    """Importing graphexec and running graphs (even failing ones) leaves structlog unconfigured."""
    script = textwrap.dedent(
        """
        import anyio
        import structlog

        assert not structlog.is_configured()
        import graphexec as gx

        async def ok(s):
            return {"x": 1}

        async def bad(s):
            raise ValueError("boom")

        async def main():
            ex = gx.GraphExecutor()
            for fn in (ok, bad):
                graph = gx.GraphBuilder("g").node("n", fn).start("n").end("n").build()
                try:
                    await ex.execute(graph)
                except gx.NodeExecutionFailed:
                    pass

        anyio.run(main)
        assert not structlog.is_configured(), "graphexec configured structlog"
        print("unconfigured")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert 0 == done.returncode, done.stderr
    assert "unconfigured" in done.stdout


def test_library_does_not_configure_structlog_in_process() -> None:
    """In this process too, graphexec leaves structlog's configuration as it found it."""
    before = structlog.get_config()
    configured = structlog.is_configured()

    async def ok(s: State) -> dict[str, Any]:
        return {"x": 1}

    graph = gx.GraphBuilder("g").node("n", ok).start("n").end("n").build()
    anyio.run(gx.GraphExecutor().execute, graph)
    assert configured == structlog.is_configured()
    assert before == structlog.get_config()


def test_info_lines_stay_quiet_until_the_app_configures_structlog() -> None:
    """With structlog unconfigured, a run prints no info lines (warnings still go out)."""
    code = """
import anyio, graphexec as gx
async def a(s): return None
g = gx.GraphBuilder("g").node("a", a).barrier("ok").node("b", a).edge("a", "ok").edge("ok", "b")
g = g.start("a").end("b").build()
async def main():
    await gx.GraphExecutor().execute(g, {}, decisions={"ok": gx.Approve()})
    async with gx.GraphExecutor().execute_stream(g, {}) as run:
        async for ev in run:
            if isinstance(ev, gx.BarrierWaiting):
                await run.handle.approve(ev.barrier_id)
anyio.run(main)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "" == out.stdout
