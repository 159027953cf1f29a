"""Shared fixtures: stream a run into a list of events, with durations normalised."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec
import pytest

import graphexec as gx

# Modules that anyio and hypothesis import lazily, imported up front: pytest rewrites a plugin's
# modules on their first import (it parses them into an AST), and CPython 3.11 before 3.11.8 can
# fail when two threads build ASTs at once (gh-106905); a first import from a worker thread in
# the middle of a test is how the suite met it.
for _lazy in (
    "anyio.from_thread",
    "anyio.to_thread",
    "anyio.lowlevel",
    "hypothesis.internal.conjecture.optimiser",
    "hypothesis.internal.conjecture.shrinker",
):
    importlib.import_module(_lazy)

# ---------------------------------------------------------------------------------------------
# Events: normalise what varies (durations) so a whole event list compares against a literal.

Normalise = Callable[[Iterable[gx.GraphEvent]], list[gx.GraphEvent]]
StreamEvents = Callable[..., Awaitable[tuple[list[gx.GraphEvent], gx.Run]]]


def normalise_events(events: Iterable[gx.GraphEvent]) -> list[gx.GraphEvent]:
    """The events with every ``duration`` set to 0.0 and ``event_id`` to 0 (they vary from run
    to run; tests/test_event_log.py checks the ids)."""
    out: list[gx.GraphEvent] = []
    for ev in events:
        if isinstance(ev, gx.NodeEnd | gx.BranchCompleted | gx.GraphComplete):
            ev = msgspec.structs.replace(ev, duration=0.0)
        if ev.event_id:
            ev = msgspec.structs.replace(ev, event_id=0)
        out.append(ev)
    return out


@pytest.fixture
def normalise() -> Normalise:
    """``normalise(events)``: the events with durations set to 0.0 and ids to 0."""
    return normalise_events


@pytest.fixture
def stream_events() -> StreamEvents:
    """``await stream_events(graph, state, executor=None, **kw)``: (normalised events, run)."""

    async def stream(
        graph: gx.Graph,
        state: Any = None,
        *,
        executor: gx.GraphExecutor | None = None,
        **kw: Any,
    ) -> tuple[list[gx.GraphEvent], gx.Run]:
        ex = executor or gx.GraphExecutor()
        events: list[gx.GraphEvent] = []
        async with ex.execute_stream(graph, state, **kw) as run:
            async for event in run:
                events.append(event)
        return normalise_events(events), run

    return stream


# ---------------------------------------------------------------------------------------------
# Backends: every async test runs through anyio's pytest plugin, on asyncio and on trio.
# tests/checkpoint/conftest.py narrows this to asyncio, except for the store contract and the
# SQLiteStore tests.


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> None:
    """Mark every coroutine test for anyio's plugin (no per-file marker to forget), before the
    plugin looks for the marker."""
    fn = getattr(obj, "hypothesis", None)
    inner = getattr(fn, "inner_test", obj)
    if collector.funcnamefilter(name) and inspect.iscoroutinefunction(inner):
        pytest.mark.anyio(obj)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The core tests run on both anyio backends."""
    return str(request.param)
