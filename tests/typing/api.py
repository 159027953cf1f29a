"""Checked by mypy (strict), never run by pytest: the public API used as the README shows it.

A change to a public signature that breaks user code shows up here as a type error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, assert_type

import msgspec

import graphexec as gx
from graphexec.checkpoint import open_store


async def classify(state: gx.typing.State) -> dict[str, Any]:
    return {"intent": "refund"}


async def refund(state: gx.typing.State, ctx: gx.NodeContext) -> dict[str, Any]:
    await ctx.emit({"token": "..."})
    ctx.report(token_cost=10, side_effects=True)
    assert_type(ctx.idempotency_key, str)
    return {"log": ["refund"]}


def build() -> gx.Graph:
    builder = gx.GraphBuilder("support")
    assert_type(builder.node("classify", classify), gx.GraphBuilder)
    graph = (
        builder.barrier("approve", prompt=lambda s: {"q": "ok?"}, timeout=60, default="reject")
        .node("refund", refund, side_effects=True)
        .parallel("research", {"a": classify, "b": classify}, on_error="collect")
        .map("summaries", classify, over="docs", into="out", max_concurrency=4)
        .edge("classify", "approve", when=lambda s: s["intent"] == "refund")
        .edge("approve", "refund")
        .fallback("refund", "research")
        .reducer("log", gx.reducers.append)
        .start("classify")
        .end("refund")
        .build()
    )
    assert_type(graph.hash, str)
    assert_type(graph.to_mermaid(), str)
    return graph


async def run(graph: gx.Graph, store: gx.CheckpointStore) -> None:
    ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
    result = await ex.execute(graph, {"ticket": "x"}, decisions={"approve": gx.Approve()})
    assert_type(result, gx.GraphResult)
    assert_type(result.execution_log, list[gx.LogEntry])
    async with ex.execute_stream(graph, {"ticket": "x"}, trace_id="t") as streaming:
        assert_type(streaming, gx.Run)
        async for event in streaming:
            assert_type(event, gx.GraphEvent)
            if isinstance(event, gx.BarrierWaiting):
                await streaming.handle.approve(event.barrier_id)
                await streaming.handle.decide(event.barrier_id, gx.Edit({"x": 1}))
            data: bytes = msgspec.json.encode(event)
            del data
    assert_type(streaming.result.status, gx.typing.RunStatus)
    async with ex.resume_from(graph, "t", on_graph_change="fail") as resumed:
        await resumed.handle.cancel()
    async with ex.fork(graph, "t", 3, update={"ticket": "y"}) as forked:
        await forked.handle.checkpoint()
    saved = await ex.get_state("t")
    assert_type(saved, gx.RunState)
    assert_type(await ex.history("t"), list[gx.CheckpointSummary])
    page = await ex.history("t", limit=10, before=5, values=True, graph=graph)
    assert_type(page[0].state, Any)
    assert_type(await ex.get_state("t", seq=3), gx.RunState)
    assert_type(gx.Overwrite([]).value, Any)
    assert_type(gx.StateDelta("k", gx.Overwrite(1)).overwrite, bool)
    concat = gx.reducers.register("typing-v1", lambda current, value: (current or "") + value)
    assert_type(concat, Callable[[Any, Any], Any])
    assert_type(await ex.runs(status="waiting"), list[gx.RunInfo])
    plan = await ex.plan_rerun(graph, "t", "classify", update={"ticket": "z"})
    assert_type(plan, gx.RerunPlan)
    assert_type(plan.rows[0].reasons[0], gx.PlanReason)
    assert_type(plan.table(), str)
    async with ex.rerun(graph, "t", "classify", plan=plan, new_trace_id="t2") as rerun:
        assert_type(rerun.result, gx.GraphResult)
    assert_type((await ex.runs())[0].rerun_of, str | None)
    versioned = gx.GraphBuilder("v", fingerprint="auto").node("a", lambda s: None, deps=[len])
    del versioned


async def stores() -> None:
    async with gx.SQLiteStore("runs.db") as store:
        assert_type(store, gx.SQLiteStore)
        await store.submit_decision("t", "approve#1", gx.Reject("no"))
        assert_type(await store.prune(older_than=0.0), list[str])
    portable = gx.SQLiteStore("runs.db", synchronous="FULL", file_mode=0o640, commit_path="fast")
    assert_type(portable.commit_path_used, Literal["fast", "portable"] | None)
    memory: gx.CheckpointStore = gx.MemoryStore()
    del memory
    async with gx.PostgresStore(
        "postgresql://app@db:5432/app", schema="graphexec", max_size=20, synchronous_commit="on"
    ) as pg:
        shared: gx.CheckpointStore = pg
        assert_type(pg.schema, str)
        del shared
    async with open_store("sqlite:///runs.db") as opened:
        assert_type(opened, gx.CheckpointStore)


async def resilient(state: gx.typing.State, ctx: gx.NodeContext) -> dict[str, Any]:
    assert_type(ctx.attempt, int)
    ctx.heartbeat()
    if not state:
        raise gx.RetryAfter(5)
    raise gx.NonRetryable("bad input")


async def resilience() -> None:
    graph = (
        gx.GraphBuilder("resilient")
        .defaults(retry=gx.Retry(attempts=3, on=(ConnectionError,)), timeout=30.0)
        .node("charge", resilient, compensate="refund", on_failure="compensate")
        .node("refund", resilient, retry=gx.Retry(attempts=1))
        .node("call", resilient, on_failure="pause", heartbeat_timeout=5.0)
        .parallel("p", {"a": classify}, on_failure="skip", retry=gx.Retry(on=lambda e: True))
        .map("m", classify, over="xs", into="ys", on_failure="fallback")
        .node("dep", resilient, breaker=gx.CircuitBreaker(failures=5, cooldown=30.0))
        .start("charge")
        .end("charge")
        .build()
    )
    clock = gx.testing.FakeClock()
    ex = gx.GraphExecutor(clock=clock)
    try:
        await ex.execute(graph)
    except gx.RetriesExhausted as exc:
        assert_type(exc.attempts, int)
        assert_type(exc.errors, list[BaseException])
    except gx.NodeTimeout as exc:
        assert_type(exc.idle, bool)
    except gx.CircuitOpen as exc:
        assert_type(exc.until, float)
    assert_type(clock.sleeps, list[float])


async def telemetry() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from graphexec.otel import OpenTelemetry

    ex = gx.GraphExecutor(telemetry=OpenTelemetry(tracer_provider=TracerProvider()))
    ex = gx.GraphExecutor(telemetry=OpenTelemetry())  # the global provider
    assert_type(await ex.execute(build(), {}), gx.GraphResult)
