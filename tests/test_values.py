"""State values and names: what a checkpoint restores as written, and what is refused at once.

A value that would come back from a restore as another type (a tuple as a list, a Decimal as
a string, ...) is refused at the node that wrote it for untyped state, and converted back for
typed state; a value nested past MAX_DEPTH is refused; trace ids, graph names and node names
are checked before anything runs. Round trips go through a real SQLite file (on trio, through a MemoryStore, which keeps the
rows encoded as on disk: SQLiteStore runs on asyncio).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

import graphexec as gx
from graphexec._values import MAX_DEPTH, MAX_NAME, check_value

UTC = datetime.UTC

OpenStore = Callable[[str], gx.CheckpointStore]


@pytest.fixture
def open_store(tmp_path: Path) -> OpenStore:
    """``open_store(name)``: a store that outlives ``async with`` like a file does: a
    SQLiteStore on a real file (on asyncio and on trio)."""

    def open_(name: str) -> gx.CheckpointStore:
        return gx.SQLiteStore(tmp_path / name)

    return open_


def writer(value: Any, key: str = "v") -> gx.Graph:
    """``put -> done``: ``put`` writes ``value`` to ``key``."""

    def put(state: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value}

    return (
        gx.GraphBuilder("values")
        .node("put", put)
        .node("done", lambda s: None)
        .edge("put", "done")
        .start("put")
        .end("done")
        .build()
    )


def nested(depth: int) -> Any:
    """A list nested ``depth`` levels deep (``[[...[]...]]``)."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


@dataclasses.dataclass
class Point:
    x: int


class PointStruct(msgspec.Struct):
    x: int


class TestUntypedStateRefusesLossyValues:
    @pytest.mark.parametrize(
        ("value", "instead"),
        [
            ((1, 2), "use a list"),
            ({1, 2}, "use a sorted list"),
            (frozenset({"a"}), "use a sorted list"),
            (decimal.Decimal("1.5"), "decimal.Decimal"),
            (uuid.UUID(int=7), "uuid.UUID"),
            (datetime.datetime(2026, 1, 1), "naive datetime"),
            (
                datetime.datetime(
                    2026, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
                ),
                "UTC offset 2:00:00",
            ),
            (datetime.date(2026, 1, 1), "date.isoformat()"),
            (datetime.timedelta(seconds=3), "total_seconds"),
            (bytearray(b"x"), "use bytes"),
            (Point(1), "typed state"),
            (PointStruct(x=1), "typed state"),
            (object(), "plain data"),
            ({"nested": [{"deep": (1,)}]}, "use a list"),
            ({(1, 2): "tuple key"}, "dict key of type tuple"),
        ],
    )
    async def test_refused_at_the_node_naming_node_and_key(self, value: Any, instead: str) -> None:
        """The node that wrote it fails with a StateError naming node and key and saying what
        to write instead; the run is recorded failed, not left running."""
        store = gx.MemoryStore()
        ex = gx.GraphExecutor(store=store)
        with pytest.raises(gx.StateError) as caught:
            await ex.execute(writer(value), {}, trace_id="t")
        assert ("put", "v") == (caught.value.node, caught.value.key)
        assert "would come back as another value or type" in str(caught.value)
        assert instead in str(caught.value)
        assert "failed" == (await ex.get_state("t")).status

    async def test_reducers_that_spread_a_tuple_or_set_take_it(self, open_store: OpenStore) -> None:
        """append spreads a tuple and union a set into items, as they do a list: the replay of
        the recorded list gives the same state, so those are accepted (their items checked)."""
        graph = (
            gx.GraphBuilder("spread")
            .node("put", lambda s: {"log": ("a", "b"), "tags": {"y", "x"}})
            .node("done", lambda s: {"log": ("c",)})
            .edge("put", "done")
            .reducer("log", gx.reducers.append)
            .reducer("tags", gx.reducers.union)
            .start("put")
            .end("done")
            .build()
        )
        async with open_store("s.db") as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            result = await ex.execute(graph, {}, trace_id="t")
            assert {"log": ["a", "b", "c"], "tags": ["x", "y"]} == result.state
            assert result.state == (await ex.get_state("t")).state
        bad = gx.GraphBuilder("spread").node("put", lambda s: {"log": ({1},)})
        with pytest.raises(gx.StateError, match="use a sorted list"):
            await gx.GraphExecutor().execute(
                bad.reducer("log", gx.reducers.append).start("put").end("put").build(), {}
            )

    async def test_append_does_not_spread_a_set_and_overwrite_is_checked(self) -> None:
        def graph(value: Any) -> gx.Graph:
            return (
                gx.GraphBuilder("g")
                .node("put", lambda s: {"log": value})
                .reducer("log", gx.reducers.append)
                .start("put")
                .end("put")
                .build()
            )

        for value in ({"a"}, gx.Overwrite((1, 2))):
            with pytest.raises(gx.StateError, match="key 'log'"):
                await gx.GraphExecutor().execute(graph(value), {})

    async def test_an_int_past_64_bits_fails_its_checkpoint_naming_node_and_key(self) -> None:
        """Not range-checked at the node (every step would pay for it); msgpack refuses it."""
        ex = gx.GraphExecutor(store=gx.MemoryStore(), policy=gx.CheckpointPolicy(every_step=True))
        with pytest.raises(gx.CheckpointError, match="node 'put' .* key 'v'") as caught:
            await ex.execute(writer(2**64), {}, trace_id="t")
        assert "put" == caught.value.node

    async def test_refused_without_a_store_too(self) -> None:
        """A graph must not change behaviour the day a store is added."""
        with pytest.raises(gx.StateError, match="key 'v'"):
            await gx.GraphExecutor().execute(writer((1, 2)), {})

    async def test_initial_state_and_edits_are_checked(self) -> None:
        with pytest.raises(gx.StateError, match="key 'v' holds") as caught:
            await gx.GraphExecutor().execute(writer(1), {"v": (1, 2)})
        assert caught.value.key == "v"
        gate = (
            gx.GraphBuilder("gate")
            .barrier("ok")
            .node("done", lambda s: None)
            .edge("ok", "done")
            .start("ok")
            .end("done")
            .build()
        )
        with pytest.raises(gx.StateError, match="use a list"):
            await gx.GraphExecutor().execute(gate, {}, decisions={"ok": gx.Edit({"v": (1,)})})

    async def test_plain_values_round_trip_exactly(self, open_store: OpenStore) -> None:
        """What is accepted restores equal and of the same types, through a real file."""
        value = {
            "none": None,
            "flag": True,
            "ints": [0, -(2**63), 2**64 - 1],
            "float": 1.5,
            "text": "é\U0001f600",
            "raw": b"\x00\xff",
            "int keys": {1: "one", 2: ["two"]},
            "when": datetime.datetime(2026, 1, 1, 12, tzinfo=UTC),
        }
        async with open_store("v.db") as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            result = await ex.execute(writer(value), {}, trace_id="t")
            restored = (await ex.get_state("t")).state

        def types(v: Any) -> Any:
            if isinstance(v, dict):
                return {k: types(x) for k, x in v.items()}
            if isinstance(v, list):
                return [types(x) for x in v]
            return type(v)

        assert result.state == restored
        assert types(result.state) == types(restored)


class TestTypedStateConvertsBack:
    class State(msgspec.Struct):
        pair: tuple[int, int] = (0, 0)
        tags: set[str] = msgspec.field(default_factory=set)
        price: decimal.Decimal = decimal.Decimal(0)
        ident: uuid.UUID = uuid.UUID(int=0)
        when: datetime.datetime = datetime.datetime(2000, 1, 1)
        day: datetime.date = datetime.date(2000, 1, 1)
        anything: Any = None

    def graph(self, update: dict[str, Any]) -> gx.Graph:
        def put(state: Any) -> dict[str, Any]:
            return update

        return (
            gx.GraphBuilder("typed", state=self.State)
            .node("put", put)
            .node("done", lambda s: None)
            .edge("put", "done")
            .start("put")
            .end("done")
            .build()
        )

    async def test_annotated_types_survive_a_restore(self, open_store: OpenStore) -> None:
        update = {
            "pair": (1, 2),
            "tags": {"a", "b"},
            "price": decimal.Decimal("9.99"),
            "ident": uuid.UUID(int=42),
            "when": datetime.datetime(2026, 5, 1, 8, 30),  # naive: the annotation says so
            "day": datetime.date(2026, 5, 1),
        }
        graph = self.graph(update)
        async with open_store("t.db") as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            result = await ex.execute(graph, self.State(), trace_id="t")
            restored = (await ex.get_state("t", graph=graph)).state
        assert result.state == restored
        for key, value in update.items():
            assert value == getattr(restored, key)
            assert type(value) is type(getattr(restored, key))

    async def test_a_field_annotated_any_follows_the_untyped_rules(self) -> None:
        with pytest.raises(gx.StateError, match="key 'anything'.*use a list"):
            await gx.GraphExecutor().execute(self.graph({"anything": (1, 2)}), self.State())

    async def test_depth_is_checked_for_typed_state_too(self) -> None:
        class Deep(msgspec.Struct):
            tree: list[Any] = msgspec.field(default_factory=list)

        graph = (
            gx.GraphBuilder("deep", state=Deep)
            .node("put", lambda s: {"tree": nested(MAX_DEPTH + 1)})
            .start("put")
            .end("put")
            .build()
        )
        with pytest.raises(gx.StateError, match=f"more than {MAX_DEPTH} levels"):
            await gx.GraphExecutor().execute(graph, Deep())


class TestDepth:
    async def test_a_value_nested_2000_deep_fails_the_node_not_the_process(
        self, open_store: OpenStore
    ) -> None:
        """It used to raise a raw RecursionError inside an ExceptionGroup and leave the run
        recorded as running."""
        async with open_store("d.db") as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            with pytest.raises(gx.StateError) as caught:
                await ex.execute(writer(nested(2000)), {}, trace_id="t")
            assert ("put", "v") == (caught.value.node, caught.value.key)
            assert "failed" == (await ex.get_state("t")).status

    async def test_the_deepest_value_allowed_saves_and_loads_from_a_deep_stack(
        self, open_store: OpenStore
    ) -> None:
        """MAX_DEPTH leaves room on the stack: a restore called 300 frames deep still works
        (one nested 960 deep used to load only from a shallow stack)."""
        async with open_store("d.db") as store:
            ex = gx.GraphExecutor(store=store, policy=gx.CheckpointPolicy(every_step=True))
            await ex.execute(writer(nested(MAX_DEPTH)), {}, trace_id="t")

        async def load_at(depth: int) -> gx.RunState:
            if depth:
                return await load_at(depth - 1)
            async with open_store("d.db") as store:
                return await gx.GraphExecutor(store=store).get_state("t")

        assert sys.getrecursionlimit() == 1000
        state = (await load_at(300)).state
        assert nested(MAX_DEPTH) == state["v"]

    def test_a_value_that_contains_itself(self) -> None:
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(gx.StateError, match="contains itself"):
            check_value(loop, node="n", key="k")

    def test_shared_structure_is_walked_once(self) -> None:
        """A DAG with 2**60 paths is checked quickly (each container once per depth)."""
        value: Any = [1]
        for _ in range(60):
            value = [value, value]
        check_value(value, node="n", key="k")


class TestNames:
    @pytest.mark.parametrize(
        ("name", "says"),
        [
            (5, "must be a str, not int"),
            ("", "must not be empty"),
            ("a\x00b", "NUL"),
            ("a\udc80", "surrogate"),
            ("x" * (MAX_NAME + 1), f"at most {MAX_NAME}"),
        ],
    )
    def test_graph_names_at_build(self, name: Any, says: str) -> None:
        builder = gx.GraphBuilder(name).node("a", lambda s: None).start("a").end("a")
        with pytest.raises(gx.InvalidGraph, match=says):
            builder.build()

    @pytest.mark.parametrize("name", ["a\x00b", "a\udc80", "x" * (MAX_NAME + 1)])
    def test_node_names_at_build(self, name: str) -> None:
        builder = gx.GraphBuilder("g").node(name, lambda s: None).start(name).end(name)
        with pytest.raises(gx.InvalidGraph, match="node name"):
            builder.build()

    def test_unicode_names_are_fine(self) -> None:
        gx.GraphBuilder("グラフ").node("nœud", lambda s: None).start("nœud").end("nœud").build()

    @pytest.mark.parametrize(
        ("trace_id", "says"),
        [
            (42, "trace id must be a str, not int"),
            ("", "must not be empty"),
            ("t\x00", "NUL"),
            ("t\udc80", "surrogate"),
            ("t" * (MAX_NAME + 1), "characters long"),
        ],
    )
    async def test_trace_ids_everywhere(
        self, open_store: OpenStore, trace_id: Any, says: str
    ) -> None:
        """An int trace id used to run to completion and then never load; a surrogate raised a
        raw UnicodeEncodeError. Every entry point refuses them before running anything."""
        graph = writer(1)
        async with open_store("n.db") as store:
            ex = gx.GraphExecutor(store=store)
            await ex.execute(graph, {}, trace_id="good")
            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda: ex.execute(graph, {}, trace_id=trace_id),
                lambda: ex.get_state(trace_id),
                lambda: ex.history(trace_id),
                lambda: store.submit_decision(trace_id, "x#1", gx.Approve()),
            ]
            for call in calls:
                with pytest.raises(gx.InvalidTraceId, match=says) as caught:
                    await call()
                assert isinstance(caught.value, ValueError)
            with pytest.raises(gx.InvalidTraceId, match=says):
                async with ex.resume_from(graph, trace_id):
                    pass
            with pytest.raises(gx.InvalidTraceId, match=says):
                async with ex.fork(graph, "good", 1, new_trace_id=trace_id):
                    pass
            assert [] == await store.runs(status="running")
