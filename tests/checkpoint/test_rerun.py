"""Re-running a trace from a node: the plan, minimal re-execution, lineage and staleness."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import graphexec as gx
from graphexec.checkpoint import CheckpointStore
from graphexec.checkpoint._record import decode_body

pytestmark = pytest.mark.anyio


class Calls:
    """Which nodes were called. Not a list: a list captured by a node's closure is part of an
    "auto" fingerprint, so graphs built after some calls would get other fingerprints."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def append(self, name: str) -> None:
        self.names.append(name)

    def clear(self) -> None:
        self.names.clear()

    def __eq__(self, other: object) -> bool:
        return self.names == other

    def __repr__(self) -> str:
        return repr(self.names)

    def sorted(self) -> list[str]:
        return sorted(self.names)


def _adder(name: str, src: str, dst: str, k: int, calls: Calls) -> Callable[..., Any]:
    async def node(state: Any) -> dict[str, Any]:
        calls.append(name)
        return {dst: state.get(src, 0) + k}

    return node


def _chain(calls: Calls, *, k_b: int = 1, fingerprint: str | None = "auto") -> gx.Graph:
    """x -> a -> b -> c, each node adds to what the one before wrote; d reads only x."""
    return (
        gx.GraphBuilder("chain", fingerprint=fingerprint)
        .node("a", _adder("a", "x", "a", 1, calls))
        .node("b", _adder("b", "a", "b", k_b, calls))
        .node("c", _adder("c", "b", "c", 1, calls))
        .node("d", _adder("d", "x", "d", 1, calls))
        .edge("a", "b")
        .edge("b", "c")
        .edge("c", "d")
        .start("a")
        .end("d")
        .build()
    )


async def _drain(ex: gx.GraphExecutor, *args: Any, **kw: Any) -> gx.GraphResult:
    async with ex.rerun(*args, **kw) as run:
        async for _ in run:
            pass
    assert run.result is not None
    return run.result


def _ran(result: gx.GraphResult) -> list[str]:
    return [entry.node for entry in result.execution_log]


async def test_every_step_record_keeps_keys_read_fingerprint_and_directive(
    tmp_path: Path,
) -> None:
    """A real SQLite file holds, per node execution, the keys read and the fingerprint."""
    calls = Calls()

    async def router(state: Any) -> gx.Goto:
        return gx.Goto("c", update={"r": state["x"]})

    graph = (
        gx.GraphBuilder("rec")
        .node("a", _adder("a", "x", "a", 1, calls), fingerprint="v1")
        .node("r", router)
        .node("b", _adder("b", "a", "b", 1, calls))
        .node("c", _adder("c", "a", "c", 1, calls))
        .edge("a", "r")
        .edge("r", "b", when=lambda s: False)
        .edge("r", "c")
        .start("a")
        .end("b", "c")
        .build()
    )
    async with gx.SQLiteStore(tmp_path / "runs.db") as store:
        ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(graph, {"x": 1}, trace_id="t")
        rows = await store.load_chain("t", None)
        records = []
        for seq in range(1, rows[-1].seq + 1):
            chain = await store.load_chain("t", seq)
            records.extend(decode_body(chain[-1]).steps)
    got = [(r.node, r.fingerprint, r.keys_read, r.route) for r in records]
    assert [
        ("a", "v1", ["x"], None),
        ("r", None, ["x"], gx.checkpoint._record.RecordedRoute("goto", "c")),
        ("c", None, ["a"], None),
    ] == got


async def test_change_an_upstream_node_its_dependents_run_again(stores: Any) -> None:
    """The seed scenario: b's code changes; b and what reads b run again, the plan says why,
    and a and d (which read only x) are reused."""
    calls = Calls()
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(_chain(calls), {"x": 1}, trace_id="src")
    changed = _chain(calls, k_b=10)
    plan = await ex.plan_rerun(changed, "src", "a")
    by_node = {row.node: row for row in plan.rows}
    assert [r.action for r in plan.rows] == ["run", "run", "run", "reuse"]
    assert [r.kind for r in by_node["a"].reasons] == ["target"]
    b_kinds = [r.kind for r in by_node["b"].reasons]
    assert b_kinds == ["fingerprint_changed", "downstream_of"]
    assert by_node["b"].reasons[0].old != by_node["b"].reasons[0].new
    assert by_node["c"].reasons == [gx.PlanReason(kind="downstream_of", upstream="b@2", keys=["b"])]
    assert by_node["c"].root == "b@2: fingerprint_changed"
    assert "downstream_of b@2 (b)" in str(plan)

    calls.clear()
    result = await _drain(ex, changed, "src", "a")
    # a is the target (its output is unchanged), b changed, c reads b; d reads x only.
    assert ["a", "b", "c"] == calls
    assert result.reused == 1
    fresh = await gx.GraphExecutor().execute(changed, {"x": 1})
    assert fresh.state == result.state


async def test_change_nothing_and_rerun_a_target_whose_output_does_not_change(
    stores: Any,
) -> None:
    """The seed scenario: exactly one node executes (early cut-off downstream)."""
    calls = Calls()
    graph = _chain(calls)
    ex = gx.GraphExecutor(store=stores.store)
    source = await ex.execute(graph, {"x": 1}, trace_id="src")
    calls.clear()
    result = await _drain(ex, graph, "src", "b")
    assert ["b"] == calls
    assert ["b"] == _ran(result)
    assert result.reused == 3
    assert source.state == result.state
    assert result.steps == source.steps


async def test_rerun_lineage_is_in_run_info_and_the_history(stores: Any) -> None:
    """The new trace names its source (RunInfo.rerun_of) and starts with a "rerun" checkpoint;
    the source is untouched."""
    calls = Calls()
    graph = _chain(calls)
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"x": 1}, trace_id="src")
    before = await ex.history("src")
    result = await _drain(ex, graph, "src", "c", new_trace_id="again")
    info = await stores.store.get_run("again")
    assert info is not None and info.rerun_of == "src"
    assert info.parent == gx.checkpoint._record.ParentRef(trace_id="src", seq=2, kind="rerun")
    assert [h.trigger for h in await ex.history("again")] == ["rerun", "completion"]
    assert before == await ex.history("src")
    assert result.trace_id == "again"
    source_info = await stores.store.get_run("src")
    assert source_info is not None and source_info.rerun_of is None


async def test_update_changes_inputs_and_only_readers_run(stores: Any) -> None:
    """update= lands just before the target; executions reading the updated key run with the
    reason input_changed, those that do not are reused."""
    calls = Calls()
    graph = _chain(calls)
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"x": 1}, trace_id="src")
    plan = await ex.plan_rerun(graph, "src", "c", update={"x": 7})
    assert [(r.node, r.action, [x.kind for x in r.reasons]) for r in plan.rows] == [
        ("a", "reuse", []),
        ("b", "reuse", []),
        ("c", "run", ["target"]),
        ("d", "run", ["input_changed"]),
    ]
    assert plan.rows[3].reasons[0].keys == ["x"]
    assert plan.rows[3].root == "update: x"
    calls.clear()
    result = await _drain(ex, graph, "src", "c", update={"x": 7})
    assert ["c", "d"] == calls
    assert result.state == {"x": 7, "a": 2, "b": 3, "c": 4, "d": 8}
    # The update is recorded: the re-run's state restores the same from its checkpoints.
    assert (await ex.get_state(result.trace_id)).state == result.state


async def test_a_plan_run_after_its_source_or_graph_changed_is_stale(stores: Any) -> None:
    """PlanStale when the graph's fingerprints changed or the source got a checkpoint since."""
    calls = Calls()
    graph = _chain(calls)
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"x": 1}, trace_id="src")
    plan = await ex.plan_rerun(graph, "src", "b")
    with pytest.raises(gx.PlanStale, match="node fingerprints changed"):
        async with ex.rerun(_chain(calls, k_b=3), "src", "b", plan=plan):
            pass
    with pytest.raises(gx.PlanStale, match="update differs"):
        async with ex.rerun(graph, "src", "b", update={"x": 2}, plan=plan):
            pass
    result = await _drain(ex, graph, "src", "b", plan=plan)
    assert result.status == "completed"

    # A waiting source that moves on after the plan: its new checkpoints make the plan stale.
    waiting = (
        gx.GraphBuilder("w")
        .node("a", _adder("a", "x", "a", 1, calls))
        .barrier("ok")
        .node("b", _adder("b", "a", "b", 1, calls))
        .edge("a", "ok")
        .edge("ok", "b")
        .start("a")
        .end("b")
        .build()
    )
    async with ex.execute_stream(waiting, {"x": 1}, trace_id="w") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                break
    plan = await ex.plan_rerun(waiting, "w", "a")
    assert plan.source_status == "waiting"
    assert plan.rows[-1].node == "ok"
    assert [r.kind for r in plan.rows[-1].reasons] == ["barrier_needs_decision"]
    await stores.store.submit_decision("w", "ok#1", gx.Approve())
    async with ex.resume_from(waiting, "w") as run:
        async for _ in run:
            pass
    with pytest.raises(gx.PlanStale, match="the source has checkpoints up to seq"):
        async with ex.rerun(waiting, "w", "a", plan=plan):
            pass


async def test_unknown_target_and_unknown_trace_are_named(stores: Any) -> None:
    """A target that is no node, or never ran, and an unknown trace: clear errors."""
    calls = Calls()
    graph = _chain(calls)
    ex = gx.GraphExecutor(store=stores.store)
    with pytest.raises(gx.RunNotFound, match="'nope'"):
        await ex.plan_rerun(graph, "nope", "a")
    await ex.execute(graph, {"x": 1}, trace_id="src")
    with pytest.raises(gx.NodeNotFound, match="has no such node"):
        await ex.plan_rerun(graph, "src", "zzz")
    bigger = (
        gx.GraphBuilder("chain")
        .node("a", _adder("a", "x", "a", 1, calls))
        .node("e", _adder("e", "x", "e", 1, calls))
        .edge("a", "e", when=lambda s: s["x"] > 100)
        .edge("a", "a2")
        .node("a2", _adder("a2", "x", "a2", 1, calls))
        .start("a")
        .end("e", "a2")
        .build()
    )
    with pytest.raises(gx.NodeNotFound, match="never ran there"):
        await ex.plan_rerun(bigger, "src", "e")


async def test_loops_rerun_from_the_first_affected_iteration(stores: Any) -> None:
    """A loop of 5 iterations where only iterations 3 and 4 read the updated key: iterations
    0-2 are reused, 3-4 run, and the final state is a fresh run's."""
    calls = Calls()

    async def step(state: Any) -> dict[str, Any]:
        i = state["i"]
        calls.append(f"step{i}")
        bump = state["bumps"].get(str(i), 0) if i >= 3 else 0
        return {"i": i + 1, "total": state["total"] + i + bump}

    async def done(state: Any) -> None:
        calls.append("done")

    graph = (
        gx.GraphBuilder("loop", fingerprint="auto")
        .node("init", lambda s: {"i": 0, "total": 0}, inline=True)
        .node("step", step)
        .node("done", done)
        .edge("init", "step")
        .edge("step", "step", when=lambda s: s["i"] < 5)
        .edge("step", "done")
        .start("init")
        .end("done")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"bumps": {}}, trace_id="src")
    calls.clear()
    result = await _drain(ex, graph, "src", "init", update={"bumps": {"3": 100}})
    assert calls == ["step3", "step4"]
    assert result.reused == 4  # step0-2 and done; init is the target
    fresh = await gx.GraphExecutor().execute(graph, {"bumps": {"3": 100}})
    assert fresh.state == result.state
    # Every execution of the target runs, each iteration of a target loop node included.
    calls.clear()
    result = await _drain(ex, graph, "src", "step")
    assert calls == ["step0", "step1", "step2", "step3", "step4"]


async def test_routing_is_evaluated_again_and_reused_gotos_replay(stores: Any) -> None:
    """An update that flips a condition takes the other branch (plan: routing_changed and
    new_node); a reused node's Goto is replayed without calling it."""
    calls = Calls()

    async def pick(state: Any) -> gx.Goto:
        calls.append("pick")
        return gx.Goto("left")

    graph = (
        gx.GraphBuilder("route")
        .node("pick", pick)
        .node("left", _adder("left", "x", "l", 1, calls))
        .node("right", _adder("right", "x", "r", 1, calls))
        .node("gate", _adder("gate", "x", "g", 0, calls))
        .node("big", _adder("big", "x", "big", 0, calls))
        .node("small", _adder("small", "x", "small", 0, calls))
        .edge("pick", "left", when=lambda s: False)
        .edge("pick", "right")
        .edge("left", "gate")
        .edge("right", "gate")
        .edge("gate", "big", when=lambda s: s["x"] > 10)
        .edge("gate", "small")
        .start("pick")
        .end("big", "small")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"x": 1}, trace_id="src")
    plan = await ex.plan_rerun(graph, "src", "gate", update={"x": 50})
    assert [(r.node, r.action) for r in plan.rows] == [
        ("pick", "reuse"),
        ("left", "reuse"),
        ("gate", "run"),
        ("big", "run"),
        ("small", "not_reached"),
    ]
    assert [r.kind for r in plan.rows[3].reasons] == ["routing_changed", "new_node"]
    assert plan.rows[3].step is None and plan.rows[3].root == "gate@3: target"
    calls.clear()
    result = await _drain(ex, graph, "src", "gate", update={"x": 50})
    assert calls == ["gate", "big"]
    assert result.state["big"] == 50
    assert result.state["l"] == 2  # left was reused: pick's Goto replayed, left not called


async def test_side_effects_nodes_are_reused_or_run_with_a_new_idempotency_key(
    stores: Any,
) -> None:
    """A side-effect node that can be reused is never called again; one that must run gets
    the re-run's idempotency key, and the plan says so."""
    keys: list[str] = []

    async def charge(state: Any, ctx: gx.NodeContext) -> dict[str, Any]:
        keys.append(ctx.idempotency_key)
        return {"charged": state["amount"]}

    async def note(state: Any) -> dict[str, Any]:
        return {"note": "n"}

    graph = (
        gx.GraphBuilder("pay")
        .node("note", note)
        .node("charge", charge, side_effects=True)
        .edge("note", "charge")
        .start("note")
        .end("charge")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"amount": 5}, trace_id="src")
    result = await _drain(ex, graph, "src", "note")
    assert len(keys) == 1 and result.reused == 1
    plan = await ex.plan_rerun(graph, "src", "note", update={"amount": 9})
    assert plan.rows[1].new_idempotency_key
    assert "new idempotency key" in plan.table()
    result = await _drain(ex, graph, "src", "note", update={"amount": 9})
    assert len(keys) == 2 and keys[0] != keys[1]
    assert result.trace_id in keys[1]


async def test_barriers_out_of_scope_keep_their_decision_in_scope_ask_again(stores: Any) -> None:
    """A barrier before the target keeps its decision (a "historical" checkpoint); one after a
    change asks again."""
    calls = Calls()
    graph = (
        gx.GraphBuilder("appr")
        .barrier("first")
        .node("a", _adder("a", "x", "a", 1, calls))
        .barrier("second")
        .node("b", _adder("b", "a", "b", 1, calls))
        .edge("first", "a")
        .edge("a", "second")
        .edge("second", "b")
        .start("first")
        .end("b")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(
        graph, {"x": 1}, trace_id="src", decisions={"first": gx.Approve(), "second": gx.Approve()}
    )
    plan = await ex.plan_rerun(graph, "src", "a", update={"x": 2})
    assert [(r.node, r.action) for r in plan.rows] == [
        ("first", "reuse"),
        ("a", "run"),
        ("second", "run"),
        ("b", "run"),
    ]
    assert "barrier_needs_decision" in [r.kind for r in plan.rows[2].reasons]
    waited: list[str] = []
    async with ex.rerun(graph, "src", "a", update={"x": 2}, new_trace_id="re") as run:
        async for event in run:
            if isinstance(event, gx.BarrierWaiting):
                waited.append(event.barrier_id)
                await run.handle.approve(event.barrier_id)
    assert run.result is not None and run.result.status == "completed"
    assert waited == ["second#1"]
    assert run.result.state["first"]["decision"] == "approve"
    triggers = [h.trigger for h in await ex.history("re")]
    assert triggers[:2] == ["rerun", "historical"]


async def test_a_failed_trace_can_be_the_source(stores: Any) -> None:
    """The failed node has no output: the plan says missing_prior_output; the re-run with a
    fixed node reuses what ran before it."""
    calls = Calls()
    broken = True

    async def flaky(state: Any) -> dict[str, Any]:
        calls.append("flaky")
        if broken:
            raise RuntimeError("boom")
        return {"f": state["a"] * 10}

    graph = (
        gx.GraphBuilder("f")
        .node("a", _adder("a", "x", "a", 1, calls))
        .node("flaky", flaky)
        .edge("a", "flaky")
        .start("a")
        .end("flaky")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store)
    with pytest.raises(gx.NodeExecutionFailed):
        await ex.execute(graph, {"x": 1}, trace_id="src")
    plan = await ex.plan_rerun(graph, "src", "flaky")
    assert [(r.node, r.action, [x.kind for x in r.reasons]) for r in plan.rows] == [
        ("a", "reuse", []),
        ("flaky", "run", ["target", "missing_prior_output"]),
    ]
    broken = False
    calls.clear()
    result = await _drain(ex, graph, "src", "flaky")
    assert calls == ["flaky"]
    assert result.state == {"x": 1, "a": 2, "f": 20}


async def test_parallel_and_map_nodes_are_reused_when_their_inputs_are_unchanged(
    stores: Any,
) -> None:
    """A parallel node's read keys are its branches' union (and it runs only the branches
    whose inputs changed); a map node's is its ``over`` key."""
    calls = Calls()

    async def left(state: Any) -> dict[str, Any]:
        calls.append("left")
        return {"l": state["x"]}

    async def right(state: Any) -> dict[str, Any]:
        calls.append("right")
        return {"r": 1}

    async def item(value: Any) -> Any:
        calls.append(f"item{value}")
        return value * 2

    graph = (
        gx.GraphBuilder("fan")
        .node("a", _adder("a", "y", "a", 1, calls))
        .parallel("p", {"left": left, "right": right})
        .map("m", item, over="items", into="out")
        .edge("a", "p")
        .edge("p", "m")
        .start("a")
        .end("m")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"x": 1, "y": 1, "items": [1, 2]}, trace_id="src")
    calls.clear()
    result = await _drain(ex, graph, "src", "a", update={"y": 5})
    assert calls == ["a"]
    assert result.state["out"] == [2, 4]
    calls.clear()
    result = await _drain(ex, graph, "src", "a", update={"x": 3})
    assert calls.sorted() == ["a", "left"]  # right reads nothing: its output is replayed
    assert result.state["l"] == 3


async def test_a_rerun_of_a_rerun_replays_the_recorded_update(stores: Any) -> None:
    """The update of a re-run is recorded as a pseudo step; re-running that trace keeps it."""
    calls = Calls()
    graph = _chain(calls)
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"x": 1}, trace_id="src")
    first = await _drain(ex, graph, "src", "c", update={"x": 4}, new_trace_id="r1")
    calls.clear()
    second = await _drain(ex, graph, "r1", "b")
    assert calls == ["b"]
    assert second.state == first.state


def test_plan_rows_encode_as_json() -> None:
    """A plan is plain data: JSON for a CLI or a web page."""
    plan = gx.RerunPlan(
        trace_id="t",
        from_node="a",
        update=None,
        source_seq=2,
        source_status="completed",
        graph_hash="h",
        fingerprints="f",
        rows=[
            gx.PlanRow(
                step=1,
                node="a",
                occurrence=1,
                action="run",
                reasons=[gx.PlanReason(kind="target")],
                root="a@1: target",
            )
        ],
    )
    assert msgspec.json.decode(msgspec.json.encode(plan), type=gx.RerunPlan) == plan
    assert plan.counts() == {"reuse": 0, "run": 1, "not_reached": 0}


async def test_store_type_checks(store: CheckpointStore) -> None:
    """plan_rerun reads only: it takes no lease and writes nothing."""
    calls = Calls()
    graph = _chain(calls)
    ex = gx.GraphExecutor(store=store)
    await ex.execute(graph, {"x": 1}, trace_id="src")
    before = (await store.get_run("src"), await store.history("src"))
    await ex.plan_rerun(graph, "src", "b")
    assert before == (await store.get_run("src"), await store.history("src"))
    assert await store.runs() == [before[0]]


async def test_invalidate_on_resume_runs_changed_nodes_and_their_dependents(stores: Any) -> None:
    """A waiting run resumed after b's code changed: NodeInvalidated names b with its old and
    new fingerprint, b and what reads b run again, a is reused, and the history keeps the
    audit trail. Without invalidate_on_resume the resume just continues."""
    calls = Calls()

    def graph(k_b: int) -> gx.Graph:
        return (
            gx.GraphBuilder("inv", fingerprint="auto")
            .node("a", _adder("a", "x", "a", 1, calls))
            .node("b", _adder("b", "a", "b", k_b, calls))
            .barrier("ok")
            .node("c", _adder("c", "b", "c", 1, calls))
            .edge("a", "b")
            .edge("b", "ok")
            .edge("ok", "c")
            .start("a")
            .end("c")
            .build()
        )

    ex = gx.GraphExecutor(store=stores.store, invalidate_on_resume=True)
    for trace in ("plain", "inv"):
        async with ex.execute_stream(graph(1), {"x": 1}, trace_id=trace) as run:
            async for event in run:
                if isinstance(event, gx.BarrierWaiting):
                    break
        await stores.store.submit_decision(trace, "ok#1", gx.Approve())
    calls.clear()
    plain = gx.GraphExecutor(store=stores.store)
    async with plain.resume_from(graph(5), "plain") as run:
        async for _ in run:
            pass
    assert calls == ["c"]
    assert run.result is not None and run.result.state["b"] == 3

    calls.clear()
    old_b, new_b = graph(1).nodes["b"].fingerprint, graph(5).nodes["b"].fingerprint
    invalidated: list[gx.NodeInvalidated] = []
    async with ex.resume_from(graph(5), "inv") as run:
        async for event in run:
            if isinstance(event, gx.NodeInvalidated):
                invalidated.append(event)
    assert [(e.node, e.span_id, e.old_fingerprint, e.new_fingerprint) for e in invalidated] == [
        ("b", "b@2", old_b, new_b)
    ]
    assert calls == ["b", "c"]
    assert run.result is not None and run.result.status == "completed"
    assert run.result.state == {"x": 1, "a": 2, "b": 7, "c": 8, "ok": run.result.state["ok"]}
    assert run.result.state["ok"]["decision"] == "approve"
    history = await ex.history("inv")
    assert "invalidated" in [h.trigger for h in history]
    assert (await ex.get_state("inv")).state == run.result.state
    # The trace read back starts over at the invalidation: a re-run of it sees one b.
    plan = await ex.plan_rerun(graph(5), "inv", "c")
    assert [r.node for r in plan.rows] == ["a", "b", "ok", "c"]
    assert [r.action for r in plan.rows] == ["reuse", "reuse", "reuse", "run"]


async def test_a_map_node_runs_only_its_new_items(stores: Any) -> None:
    """A map node whose list changed runs only the items the source did not map; the others'
    results come from the source, in item order."""
    calls = Calls()

    async def double(item: Any) -> Any:
        calls.append(f"item{item}")
        return item * 2

    async def pick(state: Any) -> dict[str, Any]:
        calls.append("pick")
        return {"items": [i for i in state["pool"] if i % 2 == 0]}

    graph = (
        gx.GraphBuilder("map", fingerprint="auto")
        .node("pick", pick)
        .map("m", double, over="items", into="out")
        .edge("pick", "m")
        .start("pick")
        .end("m")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, {"pool": [2, 4, 6]}, trace_id="src")
    calls.clear()
    result = await _drain(ex, graph, "src", "pick", update={"pool": [2, 8, 6, 10]})
    assert calls.sorted() == ["item10", "item8", "pick"]
    assert result.state["out"] == [4, 16, 12, 20]
    fresh = await gx.GraphExecutor().execute(graph, {"pool": [2, 8, 6, 10]})
    assert fresh.state == result.state


async def test_a_damaged_source_is_a_checkpoint_error_naming_trace_and_seq(
    tmp_path: Path,
) -> None:
    """A source record damaged on disk: plan_rerun and rerun raise CheckpointError with the
    trace and seq, and no re-run trace is created."""
    import contextlib
    import sqlite3

    calls = Calls()
    graph = _chain(calls)
    path = tmp_path / "runs.db"
    async with gx.SQLiteStore(path) as store:
        ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(graph, {"x": 1}, trace_id="src")
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE checkpoints SET body = ? WHERE trace_id = 'src' AND seq = 3", (b"x",))
    async with gx.SQLiteStore(path) as store:
        ex = gx.GraphExecutor(store=store)
        with pytest.raises(gx.CheckpointError) as caught:
            await ex.plan_rerun(graph, "src", "b")
        assert (caught.value.trace_id, caught.value.seq) == ("src", 3)
        with pytest.raises(gx.CheckpointError, match="src"):
            async with ex.rerun(graph, "src", "b", new_trace_id="re"):
                pass
        assert await store.get_run("re") is None


async def test_typed_state_reruns_compare_the_whole_state(stores: Any) -> None:
    """With typed state the keys a node read are unknown: an execution is reused only while the
    whole state is the source's, and the re-run still reaches a fresh run's state."""
    calls = Calls()

    class S(msgspec.Struct):
        x: int = 0
        a: int = 0
        b: int = 0

    async def a(s: S) -> dict[str, Any]:
        calls.append("a")
        return {"a": s.x + 1}

    async def b(s: S) -> dict[str, Any]:
        calls.append("b")
        return {"b": s.a + 1}

    graph = (
        gx.GraphBuilder("typed", state=S, fingerprint="auto")
        .node("a", a)
        .node("b", b)
        .edge("a", "b")
        .start("a")
        .end("b")
        .build()
    )
    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph, S(x=1), trace_id="src")
    calls.clear()
    result = await _drain(ex, graph, "src", "b")
    assert calls == ["b"] and result.reused == 1
    assert result.state == S(x=1, a=2, b=3)
    with pytest.raises(gx.StateError, match="'x'"):
        async with ex.rerun(graph, "src", "a", update={"x": "not an int"}):
            pass
    calls.clear()
    result = await _drain(ex, graph, "src", "a", update={"x": 5})
    assert calls == ["a", "b"]
    assert result.state == S(x=5, a=6, b=7)


async def test_plan_and_rerun_need_a_store() -> None:
    """Without a store there is no trace to re-run: the error says what to pass."""
    calls = Calls()
    with pytest.raises(gx.StoreRequired, match="plan_rerun\\(\\) needs a checkpoint store"):
        await gx.GraphExecutor().plan_rerun(_chain(calls), "t", "a")


def _branch(name: str, key: str, k: int, calls: Calls) -> Callable[..., Any]:
    async def branch(state: Any) -> dict[str, Any]:
        calls.append(name)
        return {name: state.get(key, 0) + k}

    return branch


async def test_a_parallel_node_runs_only_its_affected_branches(stores: Any) -> None:
    """Each branch records what it read and its own fingerprint: an input change or a code
    change runs only the branches it touches; the others' outputs are replayed."""
    calls = Calls()

    def graph(k_right: int) -> gx.Graph:
        return (
            gx.GraphBuilder("par", fingerprint="auto")
            .node("a", _adder("a", "x", "a", 1, calls))
            .parallel(
                "p",
                {
                    "left": _branch("left", "x", 1, calls),
                    "right": _branch("right", "y", k_right, calls),
                    "mid": _branch("mid", "a", 0, calls),
                },
            )
            .node("sum", _adder("sum", "left", "total", 0, calls))
            .edge("a", "p")
            .edge("p", "sum")
            .start("a")
            .end("sum")
            .build()
        )

    ex = gx.GraphExecutor(store=stores.store)
    await ex.execute(graph(1), {"x": 1, "y": 1}, trace_id="src")
    calls.clear()
    result = await _drain(ex, graph(1), "src", "a", update={"y": 5})
    assert calls.sorted() == ["a", "right"]
    assert result.state["right"] == 6 and result.state["left"] == 2
    calls.clear()
    result = await _drain(ex, graph(3), "src", "a")
    assert calls.sorted() == ["a", "right"]
    assert result.state == (await gx.GraphExecutor().execute(graph(3), {"x": 1, "y": 1})).state
    # A re-run of the re-run: the replayed branches kept their records.
    calls.clear()
    again = await _drain(ex, graph(3), result.trace_id, "a", update={"x": 2})
    assert calls.sorted() == ["a", "left", "mid", "sum"]
    assert again.state["left"] == 3


async def test_a_fork_can_be_the_source_and_starts_where_it_forked(stores: Any) -> None:
    """A forked trace is re-run from its own start (the fork point, with the fork's update)."""
    calls = Calls()
    graph = _chain(calls)
    ex = gx.GraphExecutor(store=stores.store, policy=gx.CheckpointPolicy(every_step=True))
    await ex.execute(graph, {"x": 1}, trace_id="src")
    async with ex.fork(graph, "src", 2, update={"a": 10}, new_trace_id="fk") as run:
        async for _ in run:
            pass
    assert run.result is not None
    calls.clear()
    result = await _drain(ex, graph, "fk", "c")
    assert calls == ["c"]
    assert result.state == run.result.state
    assert result.steps == run.result.steps


def test_records_written_before_the_new_fields_still_decode() -> None:
    """A step record of four elements and a parent of two (older files) decode: unknown keys
    read (counted as every key), no route, a fork."""
    from graphexec.checkpoint._record import ParentRef, StepRecord

    old_step = msgspec.msgpack.encode([3, "a", [["k", 1]], None])
    assert msgspec.msgpack.decode(old_step, type=StepRecord) == StepRecord(
        3, "a", [gx.StateDelta("k", 1)]
    )
    assert msgspec.msgpack.decode(old_step, type=StepRecord).keys_read is None
    assert msgspec.json.decode(b'["t", 2]', type=ParentRef) == ParentRef(trace_id="t", seq=2)
    info = gx.RunInfo(
        trace_id="x",
        graph_name="g",
        graph_hash="h",
        status="completed",
        step=1,
        next_node=None,
        last_seq=1,
        created_at=0.0,
        updated_at=0.0,
        parent=ParentRef(trace_id="t", seq=2),
    )
    assert info.rerun_of is None
