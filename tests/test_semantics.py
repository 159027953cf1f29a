"""Semantics of issue 8: scalar items in append/union, the mutation-proof state view, which
parameter gets the NodeContext, gx.Overwrite, reducer arity, repeated writes in one step and
named custom reducers."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import pytest

import graphexec as gx
from graphexec import reducers
from graphexec._callables import classify
from graphexec._view import StateView


def chain(
    *fns: Callable[..., Any], state: type[msgspec.Struct] | None = None, **red: Any
) -> gx.Graph:
    """A graph running ``fns`` in order as nodes n0, n1, ...; ``red`` maps keys to reducers."""
    b = gx.GraphBuilder("g", state=state)
    names = [f"n{i}" for i in range(len(fns))]
    for name, fn in zip(names, fns, strict=True):
        b.node(name, fn)
    for a, c in itertools.pairwise(names):
        b.edge(a, c)
    for key, fn in red.items():
        b.reducer(key, fn)
    return b.start(names[0]).end(names[-1]).build()


class TestScalarItems:
    """append and union: a scalar on either side is one item, never split."""

    def test_append_scalar_current(self) -> None:
        """A str (or bytes, or a number) current value is the first item."""
        assert ["hello", "x"] == reducers.append("hello", "x")
        assert [b"ab", "x"] == reducers.append(b"ab", "x")
        assert [1, 2, 3] == reducers.append(1, [2, 3])

    def test_append_str_value_is_one_item(self) -> None:
        """A str value is appended whole."""
        assert ["a", "bc"] == reducers.append(["a"], "bc")

    def test_union_scalar_current(self) -> None:
        """union keeps a scalar current value as one item."""
        assert ["hello", "x"] == reducers.union("hello", "x")
        assert ["ab", "c"] == reducers.union(["ab"], "c")

    async def test_through_the_executor(self) -> None:
        """A run whose initial ``log`` is a str appends after it, in place or not."""
        g = chain(lambda s: {"log": "x", "tags": "t"}, log=reducers.append, tags=reducers.union)
        result = await gx.GraphExecutor().execute(g, {"log": "hello", "tags": "hello"})
        assert ["hello", "x"] == result.state["log"]
        assert ["hello", "t"] == result.state["tags"]


class TestMutationGuard:
    """Nodes cannot change the run's state except through their deltas."""

    async def test_in_place_append_does_not_reach_the_state(self) -> None:
        """``s["log"].append(x)`` returning nothing changes neither the result nor checkpoints."""

        def sneaky(s: Any) -> None:
            s["log"].append("x")
            s["cfg"]["k"]["deep"].append(1)
            s["tags"].extend(["t"])

        store = gx.MemoryStore()
        ex = gx.GraphExecutor(store=store)
        # No set in untyped state: it would come back from a checkpoint as a list (_values.py).
        init = {"log": ["a"], "cfg": {"k": {"deep": []}}, "tags": ["a"]}
        g = chain(sneaky, lambda s: {"log": "b"}, log=reducers.append)
        result = await ex.execute(g, init, trace_id="t")
        assert {"log": ["a", "b"], "cfg": {"k": {"deep": []}}, "tags": ["a"]} == result.state
        saved = await ex.get_state("t")
        assert saved.state["log"] == result.state["log"]
        assert saved.state["cfg"] == result.state["cfg"]

    async def test_a_copy_read_can_be_returned(self) -> None:
        """The copy a node read is its own: mutating it and returning it is a normal delta."""

        def grow(s: Any) -> dict[str, Any]:
            log = s["log"]
            log.append("x")
            return {"log": log}

        result = await gx.GraphExecutor().execute(chain(grow), {"log": ["a"]})
        assert ["a", "x"] == result.state["log"]

    async def test_typed_state_is_protected(self) -> None:
        """With typed state the Struct a node gets holds copies of list/dict fields."""

        class S(msgspec.Struct):
            log: Annotated[list[str], reducers.append] = []
            cfg: dict[str, int] = {}

        def sneaky(s: S) -> None:
            s.log.append("x")
            s.cfg["k"] = 1

        result = await gx.GraphExecutor().execute(chain(sneaky, state=S), S(log=["a"]))
        assert S(log=["a"], cfg={}) == result.state

    async def test_conditions_and_map_items_are_protected(self) -> None:
        """An edge condition or a map function mutating what it got changes nothing."""

        def cond(s: Any) -> bool:
            s["log"].append("cond")
            return True

        def item_fn(item: dict[str, Any]) -> int:
            item["seen"] = True
            return 1

        g = (
            gx.GraphBuilder("g")
            .node("a", lambda s: None)
            .map("m", item_fn, over="items", into="out")
            .edge("a", "m", when=cond)
            .start("a")
            .end("m")
            .build()
        )
        result = await gx.GraphExecutor().execute(g, {"log": [], "items": [{"i": 1}]})
        assert [] == result.state["log"]
        assert [{"i": 1}] == result.state["items"]

    async def test_branches_and_prompts_are_protected(self) -> None:
        """Parallel branches and a barrier prompt mutating what they read change nothing."""

        def branch(s: Any) -> None:
            s["log"].append("branch")

        def prompt(s: Any) -> str:
            s["log"].append("prompt")
            return "ok?"

        g = (
            gx.GraphBuilder("g")
            .parallel("p", {"a": branch, "b": branch})
            .barrier("ok", prompt=prompt)
            .edge("p", "ok")
            .start("p")
            .end("ok")
            .build()
        )
        result = await gx.GraphExecutor().execute(g, {"log": []}, decisions={"ok": gx.Approve()})
        assert [] == result.state["log"]

    def test_view_records_keys_read(self) -> None:
        """keys_read holds every key read by [], get, in and items."""
        view = StateView({"a": 1, "b": [1], "c": 3, "d": 4})
        assert 1 == view["a"]
        assert [1] == view.get("b")
        assert "c" in view
        assert None is view.get("missing")
        assert {"a", "b", "c", "missing"} == view.keys_read
        assert dict(view.items()) == {"a": 1, "b": [1], "c": 3, "d": 4}
        assert {"a", "b", "c", "d", "missing"} == view.keys_read

    def test_copy_and_or_give_owned_dicts(self) -> None:
        """copy() and | (as on the MappingProxyType before) give dicts of copies."""
        data: dict[str, Any] = {"a": [1], "b": 2}
        view = StateView(data)
        mine = view.copy()
        mine["a"].append(2)
        merged = view | {"b": 3}
        merged["a"].append(3)
        assert {"a": [1], "b": 3} == {"b": 3} | view | {"b": 3}
        assert {"a": [1], "b": 2} == data
        assert {"a": [1, 3], "b": 3} == merged

    async def test_node_sees_a_state_view(self) -> None:
        """The view a node gets records what it read."""
        views: list[Any] = []

        def node(s: Any) -> None:
            views.append(s)
            _ = s["n"]

        await gx.GraphExecutor().execute(chain(node), {"n": 1, "m": 2})
        assert {"n"} == views[0].keys_read


class TestContextParameter:
    """The NodeContext goes only to a parameter meant for it."""

    def test_defaulted_second_parameter_keeps_its_default(self) -> None:
        """``def node(s, i=i)``: the closure-in-a-loop idiom gets no ctx."""

        def node(s: Any, i: int = 3) -> None: ...

        assert not classify(node, what="n").takes_ctx

    def test_rules(self) -> None:
        """No default, named ctx, annotated NodeContext, or *args: ctx is passed."""

        def required(s: Any, c: Any) -> None: ...
        def named_ctx(s: Any, ctx: Any = None) -> None: ...
        def annotated(s: Any, c: gx.NodeContext | None = None) -> None: ...
        def as_string(s: Any, c: gx.NodeContext | None = None) -> None: ...
        def annotated_plain(s: Any, c: gx.NodeContext = None) -> None: ...  # type: ignore[assignment]  # on purpose: the rule reads the annotation
        def star(*args: Any) -> None: ...
        def one(s: Any) -> None: ...

        assert classify(required, what="n").takes_ctx
        assert classify(named_ctx, what="n").takes_ctx
        assert classify(annotated_plain, what="n").takes_ctx
        assert classify(as_string, what="n").takes_ctx
        assert classify(star, what="n").takes_ctx
        assert not classify(one, what="n").takes_ctx
        assert classify(annotated, what="n").takes_ctx

    async def test_loop_closures_keep_their_values(self) -> None:
        """Nodes built in a loop with ``i=i`` see their own i."""
        fns = []
        for i in range(3):

            async def node(s: Any, i: int = i) -> dict[str, Any]:
                return {"seen": [i]}

            fns.append(node)
        result = await gx.GraphExecutor().execute(chain(*fns, seen=reducers.append), {})
        assert [0, 1, 2] == result.state["seen"]


class TestOverwrite:
    """gx.Overwrite replaces a key's value, bypassing its reducer, and is replayed that way."""

    async def test_node_result_and_restore(self) -> None:
        """An overwrite in a node result empties an append list; restore replays it."""
        ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
        g = chain(
            lambda s: {"log": ["b", "c"]},
            lambda s: {"log": gx.Overwrite(["z"])},
            lambda s: {"log": "y"},
            log=reducers.append,
        )
        result = await ex.execute(g, {"log": ["a"]}, trace_id="t")
        assert ["z", "y"] == result.state["log"]
        assert ["z", "y"] == (await ex.get_state("t")).state["log"]

    async def test_directive_updates(self) -> None:
        """Goto, End and Fallback updates may overwrite too."""
        g = chain(
            lambda s: gx.End(update={"log": gx.Overwrite([]), "n": gx.Overwrite(0)}),
            log=reducers.append,
            n=reducers.add,
        )
        result = await gx.GraphExecutor().execute(g, {"log": ["a"], "n": 5})
        assert {"log": [], "n": 0} == result.state

    async def test_overwrite_does_not_share_the_nodes_list(self) -> None:
        """After an overwrite, in-place appends do not change the list the node returned."""
        mine: list[str] = ["z"]
        g = chain(
            lambda s: {"log": gx.Overwrite(mine)}, lambda s: {"log": "y"}, log=reducers.append
        )
        await gx.GraphExecutor().execute(g, {"log": []})
        assert ["z"] == mine

    async def test_typed_state_checks_the_whole_value(self) -> None:
        """With typed state an overwrite of an append list must be a list, not one item."""

        class S(msgspec.Struct):
            log: Annotated[list[str], reducers.append] = []

        ok = await gx.GraphExecutor().execute(
            chain(lambda s: {"log": gx.Overwrite(["q"])}, state=S), S(log=["a"])
        )
        assert ["q"] == ok.state.log
        with pytest.raises(gx.StateError, match="'log'"):
            await gx.GraphExecutor().execute(
                chain(lambda s: {"log": gx.Overwrite("q")}, state=S), S()
            )

    async def test_fork_update(self) -> None:
        """fork(update=) with an overwrite resets the key in the fork (and its records)."""
        ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
        g = chain(lambda s: {"log": "b"}, lambda s: {"log": "c"}, log=reducers.append)
        await ex.execute(g, {"log": ["a"]}, trace_id="t")
        seq = next(h.seq for h in await ex.history("t") if h.next_node == "n1")
        async with ex.fork(
            g, "t", seq, update={"log": gx.Overwrite(["r"])}, new_trace_id="f"
        ) as run:
            async for _ in run:
                pass
        result = run.result
        assert ["r", "c"] == result.state["log"]
        assert ["r", "c"] == (await ex.get_state("f")).state["log"]

    async def test_edit_decision(self) -> None:
        """An Edit's overwrite survives being stored (it is encoded with its flag)."""
        edit = gx.Edit({"log": gx.Overwrite([]), "n": 1})
        decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(edit), type=gx.Decision)
        assert edit == decoded
        assert b"overwrite" not in msgspec.json.encode(gx.Edit({"n": 1}))  # unchanged when unused
        g = (
            gx.GraphBuilder("g")
            .node("a", lambda s: {"log": "x"})
            .barrier("ok")
            .node("b", lambda s: {"log": "y"})
            .edge("a", "ok")
            .edge("ok", "b")
            .reducer("log", reducers.append)
            .start("a")
            .end("b")
            .build()
        )
        result = await gx.GraphExecutor().execute(g, {"log": ["a"]}, decisions={"ok": decoded})
        assert ["y"] == result.state["log"]

    def test_recorded_delta_carries_the_flag(self) -> None:
        """StateDelta(k, Overwrite(v)) encodes v and the flag; old two-field records decode."""
        d = gx.StateDelta("k", gx.Overwrite([1]))
        assert ("k", [1], True) == (d.key, d.value, d.overwrite)
        assert d == msgspec.msgpack.decode(msgspec.msgpack.encode(d), type=gx.StateDelta)
        old = msgspec.msgpack.encode(["k", 2])
        assert gx.StateDelta("k", 2) == msgspec.msgpack.decode(old, type=gx.StateDelta)


def _one_arg(current: Any) -> Any:
    return current


class TestReducerArity:
    """build() refuses a reducer that cannot be called as reducer(current, value)."""

    @pytest.mark.parametrize(
        "fn",
        [lambda v: v, lambda a, b, c: a, lambda *, current, value: current],
        ids=["one", "three", "keyword-only"],
    )
    def test_refused(self, fn: Any) -> None:
        """The error names the key."""
        with pytest.raises(gx.InvalidGraph, match="'log'"):
            chain(lambda s: None, log=fn)

    def test_typed_annotation_refused(self) -> None:
        """A reducer declared in an Annotated field is checked too."""

        class S(msgspec.Struct):
            log: Annotated[list[str], _one_arg] = []

        with pytest.raises(gx.InvalidGraph, match="'log'"):
            chain(lambda s: None, state=S)

    def test_accepted(self) -> None:
        """Defaults and *args are fine."""
        chain(lambda s: None, a=lambda c, v, extra=1: v, b=lambda *args: args[1])


class TestRepeatedWrites:
    """A node may write a key several times in one step, in order."""

    async def test_sequence_of_deltas(self) -> None:
        """A list of StateDelta applies in order, through the reducer, with overwrites."""
        ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
        g = chain(
            lambda s: [
                gx.StateDelta("log", "b"),
                gx.StateDelta("log", gx.Overwrite(["c"])),
                gx.StateDelta("log", ["d", "e"]),
                gx.StateDelta("n", 1),
                gx.StateDelta("n", 2),
            ],
            log=reducers.append,
        )
        result = await ex.execute(g, {"log": ["a"]}, trace_id="t")
        assert {"log": ["c", "d", "e"], "n": 2} == result.state
        assert result.state == (await ex.get_state("t")).state

    async def test_directive_update_sequence(self) -> None:
        """Goto/End updates may be a sequence of deltas."""
        g = chain(
            lambda s: gx.End(update=[gx.StateDelta("n", 1), gx.StateDelta("n", 2)]), n=reducers.add
        )
        assert 3 == (await gx.GraphExecutor().execute(g, {})).state["n"]

    async def test_one_branch_writing_a_key_twice(self) -> None:
        """A parallel branch may write a key without reducer twice; two branches may not."""
        twice = [gx.StateDelta("k", 1), gx.StateDelta("k", 2)]
        g = gx.GraphBuilder("g").parallel("p", {"a": lambda s: twice}).start("p").end("p").build()
        assert 2 == (await gx.GraphExecutor().execute(g, {})).state["k"]
        g2 = (
            gx.GraphBuilder("g")
            .parallel("p", {"a": lambda s: twice, "b": lambda s: {"k": 3}})
            .start("p")
            .end("p")
            .build()
        )
        with pytest.raises(gx.StateError, match="'k'"):
            await gx.GraphExecutor().execute(g2, {})

    async def test_other_items_refused(self) -> None:
        """A list holding anything but StateDelta fails the node naming it."""
        with pytest.raises(gx.StateError, match="'n0'"):
            await gx.GraphExecutor().execute(chain(lambda s: [("n", 1)]), {})


def _concat(current: Any, value: Any) -> Any:
    return (current or "") + value


def _other(current: Any, value: Any) -> Any:
    return value


class TestNamedReducers:
    """Custom reducers found by a registered name when no graph is at hand."""

    async def test_restore_without_the_graph(self) -> None:
        """The base records the name; get_state without the graph finds the function."""
        reducers.register("test-concat-v1", _concat)
        assert reducers.registered("test-concat-v1") is _concat
        ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
        g = chain(lambda s: {"t": "b"}, lambda s: {"t": "c"}, t=_concat)
        await ex.execute(g, {"t": "a"}, trace_id="t")
        assert "abc" == (await ex.get_state("t")).state["t"]

    async def test_unregistered_custom_reducer_says_what_to_do(self) -> None:
        """Without a name and without the graph: a CheckpointError saying to register."""

        def local(current: Any, value: Any) -> Any:
            return value

        ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
        await ex.execute(chain(lambda s: {"t": 1}, lambda s: {"t": 2}, t=local), {}, trace_id="t")
        with pytest.raises(gx.CheckpointError, match="register"):
            await ex.get_state("t")
        assert 2 == (await ex.get_state("t", graph=chain(lambda s: None, t=local))).state["t"]

    def test_names_are_taken_once(self) -> None:
        """Another function under a taken name, or a built-in name, is refused."""
        reducers.named("test-other-v1")(_other)
        reducers.register("test-other-v1", _other)  # the same again is fine
        with pytest.raises(ValueError, match="already registered"):
            reducers.register("test-other-v1", _concat)
        with pytest.raises(ValueError, match="built-in"):
            reducers.register("append", _other)
        with pytest.raises(ValueError, match="built-in"):
            reducers.register("my-append", reducers.append)
        with pytest.raises(ValueError):
            reducers.register("custom:x", _other)
