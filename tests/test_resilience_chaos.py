"""Chaos: 100 concurrent runs whose nodes fail at random, transiently and permanently, each
ending in the state its nodes' strategies dictate.

Each run's failures are drawn from a seeded plan carried in its input; nodes read the plan
(and ``ctx.attempt``) to decide whether to fail. An oracle computes, from the plan alone, the
final status and state the strategies dictate: retries absorb transient failures within
budget, ``skip`` records what is left, ``fallback`` reroutes permanent failures, ``pause``
is approved and retried, ``compensate`` undoes the charge before failing the run. Backoffs
run on a FakeClock shared by all runs.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import anyio

import graphexec as gx
from graphexec.testing import FakeClock

State = Mapping[str, Any]
RUNS = 100
RETRY = gx.Retry(attempts=3, backoff=1.0, jitter=True)
BRANCH_RETRY = gx.Retry(attempts=2, backoff=0.5, jitter=False)


def plan(seed: int) -> dict[str, Any]:
    r = random.Random(seed)
    return {
        "a": r.randint(0, 4),  # transient failures of node a (budget: 3 attempts)
        "b": r.random() < 0.3,  # node b fails permanently (ValueError)
        "x": r.randint(0, 3),  # transient failures of branch x (budget: 2 attempts)
        "y": r.randint(0, 3),
        "items": sorted(r.sample(range(5), r.randint(0, 2))),  # map items failing for good
        "p": r.random() < 0.5,  # node p fails once (paused, approved, retried)
        "final": r.random() < 0.3,  # node final fails for good: compensate
    }


async def a(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
    if ctx.attempt <= s["plan"]["a"]:
        raise ConnectionError(f"a attempt {ctx.attempt}")
    return {"a": ctx.attempt}


async def b(s: State) -> dict[str, Any]:
    if s["plan"]["b"]:
        raise ValueError("b is broken")
    return {"route": "main"}


async def b_alt(s: State) -> dict[str, Any]:
    return {"route": "alt"}


def branch(name: str) -> Any:
    async def fn(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
        if ctx.attempt <= s["plan"][name]:
            raise TimeoutError(f"{name} attempt {ctx.attempt}")
        return {name: ctx.attempt}

    return fn


async def item(i: Any) -> Any:
    n, failing = i
    if n in failing:
        raise gx.NonRetryable(f"item {n}")
    return n * n


p_calls: dict[str, int] = {}


async def p(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
    p_calls[ctx.trace_id] = p_calls.get(ctx.trace_id, 0) + 1
    if s["plan"]["p"] and p_calls[ctx.trace_id] == 1:
        raise ConnectionError("p down once")
    return {"p": p_calls[ctx.trace_id]}


async def charge(s: State) -> dict[str, Any]:
    return {"ledger": ["charge"]}


async def refund(s: State) -> dict[str, Any]:
    return {"ledger": ["refund"]}


async def final(s: State) -> dict[str, Any]:
    if s["plan"]["final"]:
        raise gx.NonRetryable("final refused")
    return {"done": True}


GRAPH = (
    gx.GraphBuilder("chaos")
    .node("a", a, retry=RETRY, on_failure="skip")
    .node("b", b, retry=RETRY, on_failure="fallback")
    .node("b_alt", b_alt)
    .parallel("c", {"x": branch("x"), "y": branch("y")}, retry=BRANCH_RETRY, on_failure="skip")
    .map("m", item, over="items", into="squares", retry=RETRY, on_failure="skip")
    .node("p", p, on_failure="pause")
    .node("charge", charge, compensate="refund")
    .node("refund", refund)
    .node("final", final, on_failure="compensate")
    .edge("a", "b")
    .edge("b", "c")
    .fallback("b", "b_alt")
    .edge("b_alt", "c")
    .edge("c", "m")
    .edge("m", "p")
    .edge("p", "charge")
    .edge("charge", "final")
    .reducer("ledger", gx.reducers.append)
    .start("a")
    .end("final")
    .build()
)


def oracle(pl: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The status and the state the strategies dictate for a plan."""
    errors: dict[str, Any] = {}
    state: dict[str, Any] = {"plan": pl, "ledger": [], "squares": []}
    if pl["a"] < 3:
        state["a"] = pl["a"] + 1
    else:
        errors["a"] = {"type": "ConnectionError", "message": "a attempt 3"}
    state["route"] = "alt" if pl["b"] else "main"
    for name in ("x", "y"):
        if pl[name] < 2:
            state[name] = pl[name] + 1
        else:
            errors[f"c.{name}"] = {"type": "TimeoutError", "message": f"{name} attempt 2"}
    state["items"] = [[n, pl["items"]] for n in range(5)]
    for n in range(5):
        if n in pl["items"]:
            errors[f"m[{n}]"] = {"type": "NonRetryable", "message": f"item {n}"}
        else:
            state["squares"].append(n * n)
    state["p"] = 2 if pl["p"] else 1
    state["ledger"] = ["charge", "refund"] if pl["final"] else ["charge"]
    if errors:
        state["errors"] = errors
    if pl["final"]:
        return "failed", state
    state["done"] = True
    return "completed", state


async def test_hundred_concurrent_runs_end_as_their_strategies_dictate() -> None:
    """100 runs at once, random transient and permanent failures: every run's status and
    final state are the oracle's, and the failed ones were compensated."""
    clock = FakeClock()
    ex = gx.GraphExecutor(store=gx.MemoryStore(), clock=clock)
    results: dict[int, gx.GraphResult] = {}
    p_calls.clear()

    async def one(seed: int) -> None:
        pl = plan(seed)
        state = {"plan": pl, "items": [[n, pl["items"]] for n in range(5)], "ledger": []}
        async with ex.execute_stream(
            GRAPH, state, trace_id=f"chaos-{seed}", decisions={"p": gx.Approve()}
        ) as run:
            async for _event in run:
                pass
        results[seed] = run.result

    async with anyio.create_task_group() as tg:
        for seed in range(RUNS):
            tg.start_soon(one, seed)

    statuses = []
    for seed in range(RUNS):
        status, expected = oracle(plan(seed))
        got = results[seed]
        statuses.append(status)
        assert (seed, status) == (seed, got.status)
        assert (seed, expected) == (seed, got.state)
        if status == "failed":
            assert isinstance(got.error, gx.NodeExecutionFailed)
            assert "final" == got.error.node
    # The draw exercises every outcome (a guard against a plan that tests nothing).
    assert {"completed", "failed"} == set(statuses)
    assert any("errors" in r.state for r in results.values())
