"""Retries, timeouts, on_failure strategies and circuit breakers in running graphs.

Backoffs run on ``gx.testing.FakeClock`` (sleeps return at once and are recorded): no test
waits for a backoff. Timeouts use short real deadlines against nodes that never finish, so
nothing asserts how long anything took.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import msgspec
import pytest

import graphexec as gx
from graphexec.testing import FakeClock

State = Mapping[str, Any]


def flaky(fails: int, exc: Callable[[], BaseException] = lambda: ConnectionError("reset")) -> Any:
    """A node that raises ``exc()`` on its first ``fails`` calls, then returns {"ok": calls}."""
    calls: list[gx.NodeContext] = []

    async def node(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
        calls.append(ctx)
        if len(calls) <= fails:
            raise exc()
        return {"ok": len(calls)}

    node.calls = calls  # type: ignore[attr-defined]
    return node


def one(name: str, fn: Any, **kw: Any) -> gx.Graph:
    return gx.GraphBuilder("g").node(name, fn, **kw).start(name).end(name).build()


def no_wait(attempts: int = 3) -> gx.Retry:
    return gx.Retry(attempts=attempts, backoff=0.5, factor=2.0, jitter=False)


async def stream(
    ex: gx.GraphExecutor, graph: gx.Graph, state: Any = None, **kw: Any
) -> tuple[list[gx.GraphEvent], gx.GraphResult]:
    return await gx.testing.collect(ex, graph, state, **kw)


class TestRetry:
    async def test_retries_until_success_with_backoff_attempts_and_one_idempotency_key(
        self,
    ) -> None:
        """Two failures then a success: NodeRetry per failure with its wait, the waits on the
        clock, ctx.attempt counting up, the same idempotency key, a log line per attempt."""
        clock = FakeClock()
        node = flaky(2)
        ex = gx.GraphExecutor(clock=clock)
        events, result = await stream(ex, one("n", node, retry=no_wait()), trace_id="t")
        assert "completed" == result.status
        assert {"ok": 3} == result.state
        assert [0.5, 1.0] == clock.sleeps
        retries = [e for e in events if isinstance(e, gx.NodeRetry)]
        assert [(1, 0.5, "ConnectionError"), (2, 1.0, "ConnectionError")] == [
            (e.attempt, e.wait, e.error.type) for e in retries
        ]
        assert all(e.span_id == "n@1" for e in retries)
        assert [1, 2, 3] == [c.attempt for c in node.calls]
        assert {"t:n:1"} == {c.idempotency_key for c in node.calls}
        assert [(1, False), (2, False), (3, True)] == [
            (e.attempt, e.success) for e in result.execution_log
        ]
        assert 1 == sum(isinstance(e, gx.NodeStart) for e in events)

    async def test_exhausted_budget_raises_retries_exhausted_with_every_error(self) -> None:
        """Every attempt failing ends in RetriesExhausted(node, attempts, errors)."""
        node = flaky(99)
        ex = gx.GraphExecutor(clock=FakeClock())
        with pytest.raises(gx.RetriesExhausted) as info:
            await ex.execute(one("n", node, retry=no_wait(3)))
        assert ("n", 3, 3) == (info.value.node, info.value.attempts, len(info.value.errors))
        assert all(isinstance(e, ConnectionError) for e in info.value.errors)
        assert isinstance(info.value, gx.NodeExecutionFailed)

    @pytest.mark.parametrize(
        "exc", [lambda: gx.NonRetryable("bad input"), lambda: ValueError("bad")]
    )
    async def test_non_retryable_errors_fail_at_once(
        self, exc: Callable[[], BaseException]
    ) -> None:
        """NonRetryable (and, with the default filter, programming errors) are not retried."""
        node = flaky(99, exc)
        clock = FakeClock()
        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor(clock=clock).execute(one("n", node, retry=no_wait(5)))
        assert not isinstance(info.value, gx.RetriesExhausted)
        assert (1, []) == (len(node.calls), clock.sleeps)

    async def test_no_retry_unless_asked(self) -> None:
        """Without retry= (or a builder default) a failing node is called once."""
        node = flaky(1)
        with pytest.raises(gx.NodeExecutionFailed):
            await gx.GraphExecutor().execute(one("n", node))
        assert 1 == len(node.calls)

    async def test_retry_after_sets_the_wait(self) -> None:
        """A node raising gx.RetryAfter(7) waits 7 s (on the clock) before its next attempt."""
        clock = FakeClock()
        node = flaky(1, lambda: gx.RetryAfter(7))
        result = await gx.GraphExecutor(clock=clock).execute(one("n", node, retry=no_wait()))
        assert ([7.0], {"ok": 2}) == (clock.sleeps, result.state)

    async def test_builder_defaults_apply_unless_a_node_sets_its_own(self) -> None:
        """defaults(retry=...) covers every node; retry=gx.Retry(attempts=1) opts out."""
        a, b = flaky(1), flaky(1)
        graph = (
            gx.GraphBuilder("g")
            .defaults(retry=no_wait(2))
            .node("a", a)
            .node("b", b, retry=gx.Retry(attempts=1))
            .edge("a", "b")
            .start("a")
            .end("b")
            .build()
        )
        with pytest.raises(gx.NodeExecutionFailed) as info:
            await gx.GraphExecutor(clock=FakeClock()).execute(graph)
        assert ("b", 2, 1) == (info.value.node, len(a.calls), len(b.calls))


class TestTimeout:
    async def test_async_attempt_that_outlives_its_timeout_is_retried(self) -> None:
        """timeout= bounds one attempt: NodeTimeout, retried like any transient error."""
        calls: list[int] = []

        async def slow_once(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            calls.append(ctx.attempt)
            if ctx.attempt == 1:
                await anyio.Event().wait()  # never set
            return {"ok": ctx.attempt}

        events, result = await stream(
            gx.GraphExecutor(clock=FakeClock()),
            one("n", slow_once, timeout=0.05, retry=no_wait()),
        )
        assert ({"ok": 2}, [1, 2]) == (result.state, calls)
        assert ["NodeTimeout"] == [e.error.type for e in events if isinstance(e, gx.NodeRetry)]

    async def test_sync_node_timeout_abandons_its_thread(self) -> None:
        """A sync node in a worker thread cannot be killed: the attempt fails with NodeTimeout,
        the thread is abandoned and runs on to its end, and what it returns is discarded."""
        release = threading.Event()
        finished = threading.Event()

        def stuck(s: State) -> dict[str, Any]:
            release.wait(30)
            finished.set()
            return {"late": True}

        with pytest.raises(gx.NodeTimeout) as info:
            await gx.GraphExecutor().execute(one("n", stuck, timeout=0.05))
        assert (0.05, 1, False) == (info.value.timeout, info.value.attempt, info.value.idle)
        assert not finished.is_set()  # still running in its abandoned thread
        release.set()
        await anyio.to_thread.run_sync(finished.wait, 30)

    async def test_heartbeats_keep_a_long_node_alive_and_silence_times_it_out(self) -> None:
        """heartbeat_timeout= fails an attempt that goes silent (NodeTimeout(idle=True));
        ctx.heartbeat() from a node, async or in a thread, keeps it alive."""

        async def beating(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            for _ in range(5):
                ctx.heartbeat()
                await anyio.lowlevel.checkpoint()
            return {"ok": True}

        def beating_sync(s: State, ctx: gx.NodeContext) -> dict[str, Any]:
            ctx.heartbeat()
            return {"ok": True}

        async def silent(s: State, ctx: gx.NodeContext) -> None:
            await anyio.Event().wait()

        ex = gx.GraphExecutor()
        for fn in (beating, beating_sync):
            result = await ex.execute(one("n", fn, heartbeat_timeout=5.0))
            assert {"ok": True} == result.state
        with pytest.raises(gx.NodeTimeout) as info:
            await ex.execute(one("n", silent, heartbeat_timeout=0.05))
        assert info.value.idle


def routed(fn: Any, on_failure: str, **kw: Any) -> gx.Graph:
    """``n -> ok`` (normal edge) with a fallback ``n -> alt``; both end the run."""

    async def ok(s: State) -> dict[str, Any]:
        return {"route": "ok"}

    async def alt(s: State) -> dict[str, Any]:
        return {"route": "alt"}

    return (
        gx.GraphBuilder("g")
        .node("n", fn, on_failure=on_failure, **kw)  # type: ignore[arg-type]
        .node("ok", ok)
        .node("alt", alt)
        .edge("n", "ok")
        .fallback("n", "alt")
        .start("n")
        .end("ok", "alt")
        .build()
    )


class TestOnFailure:
    async def test_skip_records_the_error_and_routes_by_the_normal_edge(self) -> None:
        """on_failure="skip": the error goes to state["errors"][node]; the run goes on."""
        events, result = await stream(
            gx.GraphExecutor(clock=FakeClock()),
            routed(flaky(99), "skip", retry=no_wait(2)),
        )
        assert "completed" == result.status
        assert "ok" == result.state["route"]
        assert {"n": {"type": "ConnectionError", "message": "reset"}} == result.state["errors"]
        assert ["n"] == [e.node for e in events if isinstance(e, gx.ObservedError)]

    async def test_fallback_takes_the_fallback_edge(self) -> None:
        """on_failure="fallback": the fallback edge, with an ObservedError."""
        events, result = await stream(gx.GraphExecutor(), routed(flaky(99), "fallback"))
        assert ("completed", "alt") == (result.status, result.state["route"])
        assert any(isinstance(e, gx.ObservedError) and e.node == "n" for e in events)

    async def test_compensate_undoes_completed_nodes_in_reverse_each_checkpointed(
        self,
    ) -> None:
        """on_failure="compensate": the compensations of the completed nodes run newest
        first, each a checkpointed step, then the run fails with the original error."""

        def step(name: str) -> Any:
            async def fn(s: State) -> dict[str, Any]:
                return {"log": [name]}

            return fn

        graph = (
            gx.GraphBuilder("saga")
            .node("reserve", step("reserve"), compensate="release")
            .node("charge", step("charge"), compensate="refund")
            .node("ship", flaky(99), on_failure="compensate")
            .node("release", step("release"))
            .node("refund", step("refund"))
            .edge("reserve", "charge")
            .edge("charge", "ship")
            .reducer("log", gx.reducers.append)
            .start("reserve")
            .end("ship")
            .build()
        )
        store = gx.MemoryStore()
        ex = gx.GraphExecutor(store=store)
        _events, result = await stream(ex, graph, {"log": []}, trace_id="s")
        assert "failed" == result.status
        assert isinstance(result.error, gx.NodeExecutionFailed)
        assert "ship" == result.error.node
        assert ["reserve", "charge", "refund", "release"] == result.state["log"]
        history = await ex.history("s")
        assert 2 == sum(h.trigger == "compensation" for h in history)
        state = await ex.get_state("s")
        assert ["reserve", "charge", "refund", "release"] == state.state["log"]

    @pytest.mark.parametrize(
        ("decision", "status", "calls"),
        [
            (gx.Approve(), "completed", 2),
            (gx.Skip(), "completed", 1),
            (gx.Reject("no"), "failed", 1),
        ],
    )
    async def test_pause_waits_like_a_barrier_for_an_operator(
        self, decision: gx.Decision, status: str, calls: int
    ) -> None:
        """on_failure="pause": BarrierWaiting with barrier id "<node>#1"; Approve retries,
        Skip skips (error recorded), Reject fails."""
        node = flaky(1)
        waiting: list[gx.BarrierWaiting] = []

        def decide(ev: gx.BarrierWaiting) -> gx.Decision:
            waiting.append(ev)
            return decision

        events, result = await stream(gx.GraphExecutor(), routed(node, "pause"), decide=decide)
        assert ["n#1"] == [w.barrier_id for w in waiting]
        assert "ConnectionError" == waiting[0].prompt["error"]["type"]
        assert (status, calls) == (result.status, len(node.calls))
        resolved = [e for e in events if isinstance(e, gx.BarrierResolved)]
        assert [("n#1", msgspec.structs.asdict(decision).get("reason"))] == [
            (e.barrier_id, e.reason) for e in resolved
        ]
        if isinstance(decision, gx.Skip):
            assert "errors" in result.state
        if isinstance(decision, gx.Reject):
            assert "no" in str(result.error)


class TestFanOut:
    async def test_parallel_retries_only_the_failing_branch(self) -> None:
        """retry= on a parallel node applies per branch: the good branch runs once."""
        good, bad = flaky(0), flaky(2)
        graph = (
            gx.GraphBuilder("p")
            .parallel("p", {"good": good, "bad": bad}, retry=no_wait())
            .start("p")
            .end("p")
            .reducer("ok", gx.reducers.add)
            .build()
        )
        events, result = await stream(gx.GraphExecutor(clock=FakeClock()), graph)
        assert "completed" == result.status
        assert (1, 3) == (len(good.calls), len(bad.calls))
        assert [("p.bad", 1), ("p.bad", 2)] == [
            (f"p.{e.branch}", e.attempt) for e in events if isinstance(e, gx.NodeRetry)
        ]

    @pytest.mark.parametrize("kind", ["parallel", "map"])
    async def test_skip_inside_branches_records_each_failed_branch(self, kind: str) -> None:
        """on_failure="skip" on a fan-out: a failed branch or item contributes nothing and is
        recorded under errors; the others' outputs are applied."""

        async def item(x: int) -> int:
            if x == 2:
                raise ConnectionError(f"item {x}")
            return x * 10

        async def good(s: State) -> dict[str, Any]:
            return {"a": 1}

        async def bad(s: State) -> dict[str, Any]:
            raise ConnectionError("b down")

        b = gx.GraphBuilder("f")
        if kind == "map":
            b.map("m", item, over="xs", into="ys", on_failure="skip")
            name, expected_key = "m", "m[1]"
        else:
            b.parallel("m", {"good": good, "bad": bad}, on_failure="skip")
            name, expected_key = "m", "m.bad"
        graph = b.start(name).end(name).build()
        result = await gx.GraphExecutor().execute(graph, {"xs": [1, 2, 3], "ys": []})
        assert [expected_key] == list(result.state["errors"])
        if kind == "map":
            assert [10, 30] == result.state["ys"]
        else:
            assert 1 == result.state["a"]

    @pytest.mark.parametrize("kind", ["parallel", "map"])
    async def test_fallback_inside_branches_keeps_the_good_outputs(self, kind: str) -> None:
        """on_failure="fallback" on a fan-out: the good branches' deltas, then the fallback."""

        async def item(x: int) -> int:
            if x == 2:
                raise ConnectionError("no")
            return x

        async def good(s: State) -> dict[str, Any]:
            return {"ys": [1]}

        async def bad(s: State) -> dict[str, Any]:
            raise ConnectionError("no")

        async def alt(s: State) -> dict[str, Any]:
            return {"route": "alt"}

        b = gx.GraphBuilder("f")
        if kind == "map":
            b.map("m", item, over="xs", into="ys", on_failure="fallback")
        else:
            b.parallel("m", {"good": good, "bad": bad}, on_failure="fallback")
            b.reducer("ys", gx.reducers.append)
        graph = b.node("alt", alt).fallback("m", "alt").start("m").end("m", "alt").build()
        result = await gx.GraphExecutor().execute(graph, {"xs": [1, 2], "ys": []})
        assert ([1], "alt") == (result.state["ys"], result.state["route"])

    @pytest.mark.parametrize("kind", ["parallel", "map"])
    async def test_pause_inside_branches_reruns_only_the_failed_ones(self, kind: str) -> None:
        """on_failure="pause" on a fan-out: Approve runs only the failed branches again (the
        successful ones' outputs are kept)."""
        calls: Counter[str] = Counter()

        async def item(x: int) -> int:
            calls[f"item{x}"] += 1
            if x == 2 and calls["item2"] == 1:
                raise ConnectionError("once")
            return x

        async def good(s: State) -> dict[str, Any]:
            calls["good"] += 1
            return {"ys": [1]}

        async def bad(s: State) -> dict[str, Any]:
            calls["bad"] += 1
            if calls["bad"] == 1:
                raise ConnectionError("once")
            return {"ys": [2]}

        b = gx.GraphBuilder("f")
        if kind == "map":
            b.map("m", item, over="xs", into="ys", on_failure="pause", on_error="collect")
            once = ["item1", "item3"]
        else:
            b.parallel("m", {"good": good, "bad": bad}, on_failure="pause", on_error="collect")
            b.reducer("ys", gx.reducers.append)
            once = ["good"]
        graph = b.start("m").end("m").build()
        _events, result = await stream(
            gx.GraphExecutor(), graph, {"xs": [1, 2, 3], "ys": []}, decide=lambda e: gx.Approve()
        )
        assert "completed" == result.status
        assert all(1 == calls[k] for k in once)
        assert ([1, 2, 3] if kind == "map" else [1, 2]) == result.state["ys"]


class TestBreaker:
    async def test_opens_after_consecutive_failures_fails_fast_then_closes(self) -> None:
        """Runs of one executor share a node's breaker: 2 failures open it; the next run fails
        fast (the node is not called) into its on_failure; after the cool-down a trial call
        that succeeds closes it. Every change is a CircuitChanged event."""
        clock = FakeClock()
        healthy = False
        calls: list[int] = []

        async def dep(s: State) -> dict[str, Any]:
            calls.append(1)
            if not healthy:
                raise ConnectionError("down")
            return {"route": "n"}

        graph = routed(dep, "fallback", breaker=gx.CircuitBreaker(failures=2, cooldown=10.0))
        ex = gx.GraphExecutor(clock=clock)
        changes: list[str] = []
        for _ in range(3):
            events, result = await stream(ex, graph)
            assert "alt" == result.state["route"]
            changes += [e.state for e in events if isinstance(e, gx.CircuitChanged)]
        assert (2, ["open"]) == (len(calls), changes)
        other = gx.GraphExecutor(clock=clock)  # another executor: its own breakers
        await stream(other, graph)
        assert 3 == len(calls)
        clock.advance(10.0)
        healthy = True
        events, result = await stream(ex, graph)
        assert ("ok", 4) == (result.state["route"], len(calls))
        assert ["half_open", "closed"] == [
            e.state for e in events if isinstance(e, gx.CircuitChanged)
        ]


class TestValidation:
    @pytest.mark.parametrize(
        ("build", "fragment"),
        [
            (
                lambda b: b.node("a", flaky(0), compensate="nope"),
                "node 'a': compensate='nope' names no node",
            ),
            (
                lambda b: b.node("a", flaky(0), on_failure="fallback"),
                "node 'a' has on_failure='fallback' but no fallback edge",
            ),
            (lambda b: b.node("a", flaky(0), retry=gx.Retry(attempts=0)), "node 'a': retry"),
            (lambda b: b.node("a", flaky(0), timeout=-1), "node 'a': timeout must be > 0"),
            (
                lambda b: b.node("a", flaky(0), breaker=gx.CircuitBreaker(failures=0)),
                "node 'a': breaker failures",
            ),
            (lambda b: b.node("a", flaky(0), on_failure="explode"), "node 'a': on_failure"),
            (
                lambda b: b.node("a", lambda s: None, inline=True, timeout=1.0),
                "node 'a': an inline=True sync function blocks the event loop",
            ),
        ],
    )
    def test_build_names_the_node(
        self, build: Callable[[gx.GraphBuilder], Any], fragment: str
    ) -> None:
        """Impossible resilience settings are InvalidGraph at build(), naming the node."""
        b = gx.GraphBuilder("v")
        build(b)
        with pytest.raises(gx.InvalidGraph) as info:
            b.start("a").end("a").build()
        assert any(fragment in p for p in info.value.problems), info.value.problems

    def test_retry_on_a_barrier_is_refused(self) -> None:
        """A barrier calls no node: retry= on it is InvalidGraph naming it."""
        b = gx.GraphBuilder("v").barrier("ok", retry=gx.Retry())
        with pytest.raises(gx.InvalidGraph, match="barrier 'ok' has retry="):
            b.start("ok").end("ok").build()

    def test_typed_state_needs_an_errors_field_to_skip(self) -> None:
        """With typed state, a node that may skip needs the errors field to record into."""

        class S(msgspec.Struct):
            x: int = 0

        b = gx.GraphBuilder("v", state=S).node("a", flaky(0), on_failure="skip")
        with pytest.raises(gx.InvalidGraph, match="add a field `errors"):
            b.start("a").end("a").build()


class TestCompensateInFanOut:
    @pytest.mark.parametrize("kind", ["parallel", "map"])
    async def test_a_failed_branch_compensates_the_completed_nodes(self, kind: str) -> None:
        """on_failure="compensate" on a fan-out: a failed branch or item undoes the completed
        nodes, then the run fails naming the fan-out node."""

        async def charge(s: State) -> dict[str, Any]:
            return {"ledger": ["charge"]}

        async def refund(s: State) -> dict[str, Any]:
            return {"ledger": ["refund"]}

        async def item(x: int) -> int:
            if x == 2:
                raise gx.NonRetryable("no")
            return x

        async def good(s: State) -> None:
            return None

        async def bad(s: State) -> None:
            raise gx.NonRetryable("no")

        b = (
            gx.GraphBuilder("f")
            .node("charge", charge, compensate="refund")
            .node("refund", refund)
            .reducer("ledger", gx.reducers.append)
        )
        if kind == "map":
            b.map("m", item, over="xs", into="ys", on_failure="compensate")
        else:
            b.parallel("m", {"good": good, "bad": bad}, on_failure="compensate")
        graph = b.edge("charge", "m").start("charge").end("m").build()
        _events, result = await stream(gx.GraphExecutor(), graph, {"xs": [1, 2], "ledger": []})
        assert "failed" == result.status
        assert isinstance(result.error, gx.NodeExecutionFailed)
        assert "m" == result.error.node
        assert ["charge", "refund"] == result.state["ledger"]


class TestLogs:
    async def test_retries_and_breaker_changes_are_log_lines(self) -> None:
        """Each retried attempt is a warning line (attempt, wait, error); a breaker opening is
        a warning line and closing an info line, bound with the run's trace id."""
        from structlog.testing import capture_logs

        clock = FakeClock()
        healthy = False

        async def dep(s: State) -> None:
            if not healthy:
                raise ConnectionError("down")

        graph = one(
            "n",
            dep,
            retry=gx.Retry(attempts=2, backoff=1.0, jitter=False),
            breaker=gx.CircuitBreaker(failures=2, cooldown=5.0),
        )
        ex = gx.GraphExecutor(clock=clock)
        with capture_logs() as logs:
            with pytest.raises(gx.RetriesExhausted):
                await ex.execute(graph, trace_id="t1")
            clock.advance(5.0)
            healthy = True
            await ex.execute(graph, trace_id="t2")
        lines = [
            (e["event"], e["log_level"], e["trace_id"])
            for e in logs
            if "retrying" in e["event"] or "circuit" in e["event"]
        ]
        assert [
            ("node attempt failed; retrying", "warning", "t1"),
            ("circuit breaker open", "warning", "t1"),
            ("circuit breaker half-open", "info", "t2"),
            ("circuit breaker closed", "info", "t2"),
        ] == lines
        retry = next(e for e in logs if "retrying" in e["event"])
        assert (1, 1.0, "ConnectionError: down") == (
            retry["attempt"],
            retry["wait"],
            retry["error"],
        )


class TestFanOutTimeout:
    @pytest.mark.parametrize("kind", ["parallel", "map"])
    async def test_timeout_applies_to_each_branch_attempt(self, kind: str) -> None:
        """timeout= on a fan-out bounds each branch or item attempt, retried in place."""
        calls: Counter[str] = Counter()

        async def fast(s: Any) -> Any:
            return None if kind == "parallel" else 1

        async def slow_once(s: Any, ctx: gx.NodeContext) -> Any:
            calls[ctx.branch or ""] += 1
            if ctx.attempt == 1:
                await anyio.Event().wait()
            return None if kind == "parallel" else 2

        b = gx.GraphBuilder("f")
        retry = no_wait(2)
        if kind == "map":

            async def item(x: int, ctx: gx.NodeContext) -> Any:
                return await (slow_once(x, ctx) if x == 2 else fast(x))

            b.map("m", item, over="xs", into="ys", timeout=0.05, retry=retry)
        else:
            b.parallel("m", {"fast": fast, "slow": slow_once}, timeout=0.05, retry=retry)
        events, result = await stream(
            gx.GraphExecutor(clock=FakeClock()), b.start("m").end("m").build(), {"xs": [1, 2]}
        )
        assert "completed" == result.status
        retried = [(e.branch, e.error.type) for e in events if isinstance(e, gx.NodeRetry)]
        slow = "m[1]" if kind == "map" else "slow"
        assert [(slow, "NodeTimeout")] == retried
        assert 2 == calls[slow]
